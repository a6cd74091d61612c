"""ToolBridge API figures: requests/s and latency of get, list (100 items) and create, on
SQLite and PostgreSQL. Prints figures; asserts nothing.

The API runs as ``toolbridge-api serve`` (uvicorn, one process) in a child process on
127.0.0.1; the driver is one httpx keep-alive client with ``CONCURRENCY`` requests in flight.
Every request is fully authenticated (RS256 token, session and epoch checked in the database).

Run: ``uv run python -m bench.api`` (from the repository root).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.api import (
    ApiProcess,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
    run_blocking,
)
from tests.support.jwks import AUDIENCE, JWKSServer

CONCURRENCY = 10
SECONDS_PER_OPERATION = 5.0
LIST_SIZE = 100


@dataclass(frozen=True)
class Figures:
    operation: str
    requests: int
    seconds: float
    latencies: list[float]

    def row(self, backend: str) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        rate = self.requests / self.seconds
        return (
            f"| {backend:<10} | {self.operation:<16} | {rate:>8.0f} | {p50:>8.1f} | {p99:>8.1f} |"
        )


async def drive(
    operation: str, call: Callable[[], Awaitable[httpx.Response]], expect: int
) -> Figures:
    """``CONCURRENCY`` workers call ``call`` back to back for ``SECONDS_PER_OPERATION``."""
    latencies: list[float] = []
    deadline = time.perf_counter() + SECONDS_PER_OPERATION

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await call()
            latencies.append(time.perf_counter() - started)
            if response.status_code != expect:
                raise RuntimeError(f"{operation}: {response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return Figures(operation, len(latencies), time.perf_counter() - started, latencies)


async def measure(base_url: str, token: str) -> list[Figures]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=auth, limits=limits) as client:
        session = (await client.post("/v1/sync/sessions")).json()
        client.headers.update(
            {"X-Sync-Session": session["id"], "X-Sync-Epoch": str(session["epoch"])}
        )
        uids = [
            (await client.post("/v1/notes", json={"title": f"note {n}", "n": n})).json()["uid"]
            for n in range(LIST_SIZE)
        ]
        payload = {"title": "benchmark", "body": "x" * 200, "tags": ["a", "b"]}
        return [
            await drive("get", lambda: client.get(f"/v1/notes/{random.choice(uids)}"), 200),
            await drive(
                f"list ({LIST_SIZE} items)",
                lambda: client.get("/v1/notes", params={"limit": LIST_SIZE}),
                200,
            ),
            await drive("create", lambda: client.post("/v1/tasks", json=payload), 201),
        ]


@contextlib.contextmanager
def api_process(jwks: JWKSServer, database_url: str, cwd: Path) -> Iterator[ApiProcess]:
    env = {
        "TOOLBRIDGE_API_JWKS_URL": jwks.jwks_url,
        "TOOLBRIDGE_API_ISSUER": jwks.issuer,
        "TOOLBRIDGE_API_AUDIENCE": AUDIENCE,
        "TOOLBRIDGE_API_DATABASE_URL": database_url,
        "TOOLBRIDGE_API_RATE_LIMIT_REQUESTS": "100000000",
        "TOOLBRIDGE_API_RATE_LIMIT_BURST": "100000000",
        "TOOLBRIDGE_API_LOG_LEVEL": "WARNING",
    }
    with ApiProcess(env, cwd=cwd) as process:
        yield process


def main() -> None:
    rows: list[str] = []
    with JWKSServer() as jwks, tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        token = jwks.mint(sub="auth0|bench", lifetime=3600)
        backends: list[tuple[str, str | None]] = [
            ("sqlite", f"sqlite+aiosqlite:///{Path(tmp, 'api.db')}")
        ]
        problem = run_blocking(postgres_available())
        backends.append(("postgresql", None if problem else "create"))
        for backend, url in backends:
            if url is None:
                print(f"skipping PostgreSQL: {problem}", file=sys.stderr)
                continue
            database = url if backend == "sqlite" else run_blocking(create_postgres_database())
            try:
                with api_process(jwks, database, Path(tmp)) as api:
                    figures = asyncio.run(measure(api.url, token))
                rows += [f.row(backend) for f in figures]
            finally:
                if backend != "sqlite":
                    run_blocking(drop_postgres_database(database))
    print(
        f"Python {sys.version.split()[0]}, API: toolbridge-api serve (1 uvicorn process), "
        f"client: httpx keep-alive, {CONCURRENCY} in flight, {SECONDS_PER_OPERATION:g} s each\n"
    )
    print("| database   | operation        |    req/s |  p50 ms  |  p99 ms  |")
    print("| ---------- | ---------------- | -------- | -------- | -------- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
