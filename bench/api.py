"""ToolBridge API figures next to the framework floor: requests/s, p50 and p99 of get, create
and list (100 items) on SQLite and PostgreSQL. Prints figures; asserts nothing.

Contenders, each in its own process, taking turns ``--rounds`` times per operation (load from
elsewhere on the machine falls on all alike; each row is the contender's best round):

- ``toolbridge-api``: ``toolbridge-api serve`` of this tree (one uvicorn process), every
  request fully authenticated (RS256 token against the JWKS keys, session and epoch checked in
  the database, per-user rate limit);
- ``baseline``: with ``--baseline DIR``, the same command from another source tree (say an
  older commit's ``git archive``; ``DIR/src`` goes first on its ``PYTHONPATH``), on a database
  of its own: before/after in one run;
- ``floor``: ``bench.floor_api``, a minimal Starlette app with the same queries on the same
  database and the same uvicorn set-up, and nothing else (the framework floor).

The driver is one httpx2 keep-alive client per contender with ``CONCURRENCY`` requests in
flight (httpx2: httpx's pool would cost the driver more CPU than some servers spend).

Run: ``uv run python -m bench.api [--rounds 2] [--seconds 4] [--baseline DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2

from tests.support.api import (
    ApiProcess,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
    run_blocking,
)
from tests.support.jwks import AUDIENCE, JWKSServer
from tests.support.process import ServiceProcess, free_port

CONCURRENCY = 10
LIST_SIZE = 100
OPERATIONS = ("get", "create", f"list ({LIST_SIZE} items)")


@dataclass(frozen=True)
class Figures:
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def cells(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        return f"{self.rate:>8.0f} | {p50:>7.1f} | {p99:>7.1f} | {p99 / p50:>7.1f}"


@dataclass
class Contender:
    name: str
    url: str
    token: str
    calls: dict[str, Callable[[], Awaitable[httpx2.Response]]] | None = None


async def prepare(contender: Contender, client: httpx2.AsyncClient, uids: list[str]) -> None:
    """The calls of each operation, on a session; ``uids`` are seeded when empty."""
    client.headers["Authorization"] = f"Bearer {contender.token}"
    if contender.name != "floor":
        session = (await client.post("/v1/sync/sessions")).json()
        client.headers.update(
            {"X-Sync-Session": session["id"], "X-Sync-Epoch": str(session["epoch"])}
        )
    if not uids:
        for n in range(LIST_SIZE):
            created = await client.post("/v1/notes", json={"title": f"note {n}", "n": n})
            created.raise_for_status()
            uids.append(created.json()["uid"])
    payload = {"title": "benchmark", "body": "x" * 200, "tags": ["a", "b"]}
    contender.calls = {
        "get": lambda: client.get(f"/v1/notes/{random.choice(uids)}"),
        "create": lambda: client.post("/v1/tasks", json=payload),
        OPERATIONS[2]: lambda: client.get("/v1/notes", params={"limit": LIST_SIZE}),
    }


async def drive(call: Callable[[], Awaitable[httpx2.Response]], seconds: float) -> Figures:
    """``CONCURRENCY`` workers call back to back for ``seconds``."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await call()
            latencies.append(time.perf_counter() - started)
            if response.status_code >= 300:
                raise RuntimeError(f"{response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return Figures(len(latencies), time.perf_counter() - started, latencies)


async def compare(
    contenders: list[Contender], rounds: int, seconds: float
) -> dict[str, dict[str, Figures]]:
    """Best round of each contender for each operation."""
    limits = httpx2.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    clients = [httpx2.AsyncClient(base_url=c.url, limits=limits, timeout=30) for c in contenders]
    try:
        shared: list[str] = []  # the API's notes: the floor reads the API's database
        for contender, client in zip(contenders, clients, strict=True):
            own: list[str] = [] if contender.name == "baseline" else shared
            await prepare(contender, client, own)
        best: dict[str, dict[str, Figures]] = {c.name: {} for c in contenders}
        for operation in OPERATIONS:
            for contender in contenders:  # warm-up
                assert contender.calls is not None
                await drive(contender.calls[operation], 0.5)
            for _ in range(rounds):
                for contender in contenders:
                    assert contender.calls is not None
                    figures = await drive(contender.calls[operation], seconds)
                    kept = best[contender.name].get(operation)
                    if kept is None or figures.rate > kept.rate:
                        best[contender.name][operation] = figures
        return best
    finally:
        for client in clients:
            await client.aclose()


def api_env(jwks: JWKSServer, database_url: str, source: Path | None) -> dict[str, str]:
    env = {
        "TOOLBRIDGE_API_JWKS_URL": jwks.jwks_url,
        "TOOLBRIDGE_API_ISSUER": jwks.issuer,
        "TOOLBRIDGE_API_AUDIENCE": AUDIENCE,
        "TOOLBRIDGE_API_DATABASE_URL": database_url,
        "TOOLBRIDGE_API_RATE_LIMIT_REQUESTS": "100000000",
        "TOOLBRIDGE_API_RATE_LIMIT_BURST": "100000000",
        "TOOLBRIDGE_API_LOG_LEVEL": "WARNING",
    }
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source / "src"), str(source)])
    return env


@contextmanager
def database(backend: str, tmp: Path, name: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp / f'{name}.db'}"
        return
    url = run_blocking(create_postgres_database())
    try:
        yield url
    finally:
        run_blocking(drop_postgres_database(url))


def run_backend(
    backend: str, jwks: JWKSServer, token: str, baseline: Path | None, rounds: int, seconds: float
) -> dict[str, dict[str, Figures]]:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as folder, ExitStack() as stack:
        tmp = Path(folder)
        url = stack.enter_context(database(backend, tmp, "api"))
        api = stack.enter_context(ApiProcess(api_env(jwks, url, None), cwd=tmp))
        contenders = [Contender("toolbridge-api", api.url, token)]
        if baseline is not None:
            old_url = stack.enter_context(database(backend, tmp, "baseline"))
            old = stack.enter_context(ApiProcess(api_env(jwks, old_url, baseline), cwd=tmp))
            contenders.append(Contender("baseline", old.url, token))
        port = free_port()
        floor = ServiceProcess(
            [sys.executable, "-m", "bench.floor_api", url, str(port)],
            dict(os.environ) | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            port=port,
            ready_path="/healthz",
        )
        stack.enter_context(floor)
        contenders.append(Contender("floor", floor.url, token))
        return asyncio.run(compare(contenders, rounds, seconds))


def report(backend: str, best: dict[str, dict[str, Figures]]) -> list[str]:
    lines = []
    for operation in OPERATIONS:
        for name, figures in best.items():
            lines.append(
                f"| {backend:<10} | {operation:<16} | {name:<14} | {figures[operation].cells()} |"
            )
    for operation in OPERATIONS:
        ours = best["toolbridge-api"][operation].rate
        notes = [f"{ours / best['floor'][operation].rate:.2f}x the floor"]
        if "baseline" in best:
            notes.append(f"{ours / best['baseline'][operation].rate:.2f}x the baseline")
        lines.append(f"  {backend} {operation}: toolbridge-api at {', '.join(notes)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="per round and operation")
    parser.add_argument("--baseline", type=Path, help="another source tree to compare with")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    options = parser.parse_args()
    backends = options.backend or ["sqlite", "postgresql"]
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; one uvicorn process per contender; httpx2 keep-alive, "
        f"{CONCURRENCY} in flight; best of {options.rounds} rounds of {options.seconds:g} s\n",
        flush=True,
    )
    columns = ("database", "operation", "server", "req/s", "p50 ms", "p99 ms", "p99/p50")
    widths = (10, 16, 14, 8, 7, 7, 7)
    lines = [
        "| " + " | ".join(f"{c:<{w}}" for c, w in zip(columns, widths, strict=True)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    notes: list[str] = []
    with JWKSServer() as jwks:
        token = jwks.mint(sub="auth0|bench", lifetime=3600)
        for backend in backends:
            if backend == "postgresql" and (problem := run_blocking(postgres_available())):
                print(f"skipping PostgreSQL: {problem}", file=sys.stderr)
                continue
            best = run_backend(
                backend, jwks, token, options.baseline, options.rounds, options.seconds
            )
            table = report(backend, best)
            lines += [line for line in table if line.startswith("|")]
            notes += [line for line in table if not line.startswith("|")]
    print("\n".join(lines))
    print()
    print("\n".join(notes))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
