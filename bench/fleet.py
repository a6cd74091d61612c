"""Fleet figures: tool calls per second through the dev fleet's load balancer
(``toolbridge-mcp dev --replicas N``) with 1, 2 and 3 MCP replicas. Prints figures; asserts
nothing.

Each run starts the real command on free 127.0.0.1 ports (HAProxy round-robin, N stateless MCP
servers, ``API_PROCESSES`` API processes on one SQLite file, Redis at ``REDIS_URL`` in a
database number of its own), then ``CONCURRENCY`` fastmcp clients, each speaking the
handshake-era protocol (``initialize``, as the MCP Inspector and Claude Desktop do), call
``get_note`` back to back for ``SECONDS`` seconds. The API's per-user rate limit is raised
(``--api-rate-limit``) so that it is not what is measured. The clients run in this process,
on the same cores as the fleet: on a small machine they compete with it.

Run: ``uv run python -m bench.fleet`` (from the repository root; needs haproxy and Redis).
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
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

import httpx
from fastmcp import Client

COMMAND = str(Path(sys.executable).parent / "toolbridge-mcp")
REPLICAS = (1, 2, 3)
API_PROCESSES = 2
CONCURRENCY = 20
SECONDS = 5.0
WARMUP_SECONDS = 1.0
REDIS_URL = "redis://127.0.0.1:6379/13"


@dataclass
class Run:
    replicas: int
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    seconds: float = 0.0
    served: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


async def _client_loop(url: str, uid: str, stop_at: float, measure_from: float, run: Run) -> None:
    async with Client(url, mode="legacy", timeout=30) as client:
        while (now := time.perf_counter()) < stop_at:
            result = await client.call_tool("get_note", {"uid": uid}, raise_on_error=False)
            if now >= measure_from:
                run.latencies.append(time.perf_counter() - now)
                run.failures += bool(result.is_error)


def _served(stats_csv: str) -> dict[str, int]:
    rows = csv.DictReader(io.StringIO(stats_csv.removeprefix("# ")))
    return {
        row["svname"]: int(row["stot"])
        for row in rows
        if row["pxname"] == "mcp" and row["svname"] not in {"FRONTEND", "BACKEND"}
    }


async def one_run(replicas: int, state: Path) -> Run:
    mcp, api, issuer = _free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
    args = [COMMAND, "dev", "--port", str(mcp), "--api-port", str(api)]
    args += ["--issuer-port", str(issuer), "--state-dir", str(state)]
    args += ["--replicas", str(replicas), "--api-processes", str(API_PROCESSES)]
    args += ["--redis-url", REDIS_URL, "--api-rate-limit", "10000000"]
    lines: list[str] = []
    up = threading.Event()
    process = subprocess.Popen(  # noqa: S603, ASYNC220 - our command, read by a thread
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "ToolBridge dev stack is up" in line:
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    run = Run(replicas)
    try:
        if not await asyncio.to_thread(up.wait, 180):
            raise RuntimeError("dev fleet did not come up:\n" + "".join(lines[-30:]))
        stats = re.search(r"stats at (http://\S+/stats)", "".join(lines))
        assert stats is not None
        url = f"http://127.0.0.1:{mcp}/mcp"
        async with Client(url) as client:
            note = await client.call_tool("create_note", {"title": "bench"})
            assert isinstance(note.structured_content, dict)
            uid = note.structured_content["uid"]
        async with httpx.AsyncClient() as http:
            before = _served((await http.get(f"{stats.group(1)};csv")).text)
            start = time.perf_counter()
            measure_from = start + WARMUP_SECONDS
            stop_at = measure_from + SECONDS
            await asyncio.gather(
                *(_client_loop(url, uid, stop_at, measure_from, run) for _ in range(CONCURRENCY))
            )
            run.seconds = SECONDS
            after = _served((await http.get(f"{stats.group(1)};csv")).text)
        run.served = {name: after[name] - before.get(name, 0) for name in sorted(after)}
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
        reader.join(5)
    return run


def report(runs: list[Run]) -> None:
    print(
        f"get_note through HAProxy, {CONCURRENCY} fastmcp clients (handshake era), "
        f"{SECONDS:g} s after {WARMUP_SECONDS:g} s warm-up, {API_PROCESSES} API processes, "
        f"{os.cpu_count()} CPUs"
    )
    print("replicas  calls/s  p50 ms  p95 ms  failed  requests per replica")
    for run in runs:
        ms = sorted(seconds * 1000 for seconds in run.latencies)
        p95 = ms[int(len(ms) * 0.95) - 1] if ms else 0.0
        median = statistics.median(ms) if ms else 0.0
        spread = ", ".join(f"{name} {count}" for name, count in run.served.items())
        print(
            f"{run.replicas:>8}  {run.rate:>7.0f}  {median:>6.1f}  {p95:>6.1f}  "
            f"{run.failures:>6}  {spread}"
        )


async def main() -> None:
    runs: list[Run] = []
    for replicas in REPLICAS:
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(await one_run(replicas, Path(tmp) / "state"))
    report(runs)


if __name__ == "__main__":
    asyncio.run(main())
