"""Dev stack figures: how long ``toolbridge-mcp dev`` takes to be usable and to stop, and tool
calls through it while tokens expire every few seconds. Prints figures; asserts nothing.

Each run starts the real command (three child processes) on free 127.0.0.1 ports: the first
run on an empty state folder (key generated, database migrated), the later ones reuse it.

Run: ``uv run python -m bench.dev_stack`` (from the repository root).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastmcp import Client

COMMAND = str(Path(sys.executable).parent / "toolbridge-mcp")
TOKEN_LIFETIME = 3
CALL_SECONDS = 10.0
CALL_INTERVAL = 0.125
"""8 calls/s, under the API's per-user rate limit (600 / 60 s), so waits show token effects."""
REFRESHED = "Access token refreshed: valid for"


@dataclass
class Run:
    ready: dict[str, float] = field(default_factory=dict)
    up: float = 0.0
    first_call: float = 0.0
    calls: list[float] = field(default_factory=list)
    failures: int = 0
    refreshes: int = 0
    stop: float = 0.0


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


async def one_run(state: Path) -> Run:
    mcp, api, issuer = _free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
    args = [COMMAND, "dev", "--port", str(mcp), "--api-port", str(api)]
    args += ["--issuer-port", str(issuer), "--token-lifetime", str(TOKEN_LIFETIME)]
    args += ["--state-dir", str(state)]
    run = Run()
    lines: list[str] = []
    up = threading.Event()
    started = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603, ASYNC220 - our command, read by a thread
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "] " in line and " ready " in line and line.startswith("["):
                run.ready[line.split("] ", 1)[1].split(" ready")[0].strip()] = (
                    time.perf_counter() - started
                )
            if "ToolBridge dev stack is up" in line:
                run.up = time.perf_counter() - started
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not await asyncio.to_thread(up.wait, 120):
            raise RuntimeError("dev stack did not come up:\n" + "".join(lines[-30:]))
        async with Client(f"http://127.0.0.1:{mcp}/mcp") as client:
            begin = time.perf_counter()
            note = await client.call_tool("create_note", {"title": "bench"})
            run.first_call = time.perf_counter() - begin
            uid = note.structured_content["uid"] if note.structured_content else ""
            refreshes_before = sum(REFRESHED in line for line in lines)
            deadline = time.perf_counter() + CALL_SECONDS
            while time.perf_counter() < deadline:
                begin = time.perf_counter()
                result = await client.call_tool("get_note", {"uid": uid}, raise_on_error=False)
                run.calls.append(time.perf_counter() - begin)
                run.failures += bool(result.is_error)
                await asyncio.sleep(max(0.0, CALL_INTERVAL - run.calls[-1]))
            run.refreshes = sum(REFRESHED in line for line in lines) - refreshes_before
    finally:
        begin = time.perf_counter()
        process.send_signal(signal.SIGINT)
        process.wait(60)
        run.stop = time.perf_counter() - begin
        reader.join(5)
    return run


def report(runs: list[Run]) -> None:
    for index, run in enumerate(runs):
        kind = "empty state folder" if index == 0 else "state reused"
        ready = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in run.ready.items())
        ms = sorted(seconds * 1000 for seconds in run.calls)
        p99 = ms[int(len(ms) * 0.99) - 1] if ms else 0.0
        print(f"run {index + 1} ({kind}):")
        print(f"  ready after: {ready}; stack up {run.up:.1f} s")
        print(f"  first tool call (create_note) {run.first_call * 1000:.1f} ms")
        print(
            f"  get_note at {1 / CALL_INTERVAL:g}/s for {CALL_SECONDS:g} s, {TOKEN_LIFETIME} s "
            f"tokens: {len(ms)} calls, "
            f"{run.failures} failed, {run.refreshes} token refreshes, "
            f"p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms"
        )
        print(f"  Ctrl-C to exit: {run.stop:.2f} s")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        runs: list[Any] = [await one_run(state) for _ in range(3)]
    report(runs)


if __name__ == "__main__":
    asyncio.run(main())
