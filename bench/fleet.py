"""Fleet figures: tool calls per second through the dev fleet's load balancer
(``toolbridge-mcp dev --replicas N``) with 1, 2 and 3 MCP replicas. Prints figures; asserts
nothing.

Each run starts the real command on free 127.0.0.1 ports (HAProxy round-robin, N stateless MCP
servers, ``API_PROCESSES`` API processes on one SQLite file, Redis at ``REDIS_URL`` in a
database number of its own), then ``CONCURRENCY`` fastmcp clients, each speaking the
handshake-era protocol (``initialize``, as the MCP Inspector and Claude Desktop do), call
``get_note`` back to back for ``SECONDS`` seconds. The API's per-user rate limit is raised
(``--api-rate-limit``) so that it is not what is measured. The clients run in this process,
on the same cores as the fleet: on a small machine they compete with it. Each fleet is
measured ``--rounds`` times and its best round (highest calls/s) is shown, as
``bench.mcp_server`` does, so that load from elsewhere on the machine weighs less.

Besides calls/s and latency, each row shows the CPU time per call of each part (from
``/proc``: the MCP replicas, the API processes, HAProxy, the dev command relaying their
output, and this process, the clients): on a machine of few cores, their sum bounds the
calls/s. "conn/call" is new client connections per call at the balancer.

Run: ``uv run python -m bench.fleet [--rounds 3]`` (from the repository root; Linux; needs
haproxy and Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PARTS = ("mcp", "api", "haproxy", "relay", "clients")
MARKS = (("haproxy", b"haproxy"), ("api", b"toolbridge_api"), ("mcp", b"toolbridge_mcp"))


@dataclass
class Run:
    replicas: int
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    seconds: float = 0.0
    served: dict[str, int] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """CPU milliseconds per call of each of :data:`PARTS`."""
    connections: int = 0
    connections_per_call: float = 0.0

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
    """Requests per replica, and new client connections under the name ``FRONTEND``."""
    rows = csv.DictReader(io.StringIO(stats_csv.removeprefix("# ")))
    return {
        row["svname"]: int(row["conn_tot" if row["svname"] == "FRONTEND" else "stot"])
        for row in rows
        if row["pxname"] == "mcp" and row["svname"] != "BACKEND"
    }


def _cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds so far of the dev command (``relay``) and of its children by part."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    totals = dict.fromkeys(PARTS, 0.0)
    pending = [root]
    while pending:
        pid = pending.pop()
        pending += children.get(pid, [])
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            part = (
                "relay"
                if pid == root
                else next((part for part, mark in MARKS if mark in command), "")
            )
            if part:
                totals[part] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return totals


async def one_run(replicas: int, state: Path, rounds: int) -> Run:
    """Start a fleet of ``replicas`` and measure it ``rounds`` times; the best round."""
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
    runs: list[Run] = []
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
            for _ in range(rounds):
                run = Run(replicas)
                before = _served((await http.get(f"{stats.group(1)};csv")).text)
                cpu_before = _cpu_seconds(process.pid)
                clients_before = time.process_time()
                start = time.perf_counter()
                measure_from = start + WARMUP_SECONDS
                stop_at = measure_from + SECONDS
                await asyncio.gather(
                    *(
                        _client_loop(url, uid, stop_at, measure_from, run)
                        for _ in range(CONCURRENCY)
                    )
                )
                run.seconds = SECONDS
                # CPU and connections cover the warm-up too: per call of the whole stretch.
                calls = run.rate * (time.perf_counter() - start)
                cpu = _cpu_seconds(process.pid)
                cpu["clients"] = time.process_time() - clients_before
                cpu_before["clients"] = 0.0
                after = _served((await http.get(f"{stats.group(1)};csv")).text)
                counts = {name: after[name] - before.get(name, 0) for name in sorted(after)}
                run.connections = counts.pop("FRONTEND")
                run.served = counts
                run.cpu_ms = {part: (cpu[part] - cpu_before[part]) * 1000 / calls for part in PARTS}
                run.connections_per_call = run.connections / calls
                runs.append(run)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
        reader.join(5)
    return max(runs, key=lambda run: run.rate)


def report(runs: list[Run], rounds: int) -> None:
    print(
        f"get_note through HAProxy, {CONCURRENCY} fastmcp clients (handshake era), "
        f"{SECONDS:g} s after {WARMUP_SECONDS:g} s warm-up, {API_PROCESSES} API processes, "
        f"{os.cpu_count()} CPUs, best of {rounds} rounds, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "replicas  calls/s  p50 ms  p95 ms  failed  conn/call  "
        + "  ".join(f"{part:>7}" for part in PARTS)
        + "  CPU ms/call  requests per replica"
    )
    for run in runs:
        ms = sorted(seconds * 1000 for seconds in run.latencies)
        p95 = ms[int(len(ms) * 0.95) - 1] if ms else 0.0
        median = statistics.median(ms) if ms else 0.0
        spread = ", ".join(f"{name} {count}" for name, count in run.served.items())
        cpu = "  ".join(f"{run.cpu_ms[part]:>7.1f}" for part in PARTS)
        print(
            f"{run.replicas:>8}  {run.rate:>7.0f}  {median:>6.1f}  {p95:>6.1f}  "
            f"{run.failures:>6}  {run.connections_per_call:>9.2f}  {cpu}  "
            f"{sum(run.cpu_ms.values()):>11.1f}  {spread}"
        )


async def main(rounds: int) -> None:
    runs: list[Run] = []
    for replicas in REPLICAS:
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(await one_run(replicas, Path(tmp) / "state", rounds))
    report(runs, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
