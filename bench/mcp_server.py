"""MCP server figures: our server next to the zero-code alternative, ``FastMCP.from_openapi``
over the same API (its own OpenAPI document), and the bare kept-alive authenticated GET under
both, over the in-memory transport and over streamable HTTP: sequential latency and
throughput at concurrency 20, and the ratios. Prints figures; asserts nothing.

One process tree, one run. The fake IdP and the API (uvicorn, SQLite, tenant signatures
required) run in child processes; for streamable HTTP so do both MCP servers
(``toolbridge-mcp serve --transport http`` and ``python -m bench.openapi_mcp``); in memory,
both servers run in this process with their clients. The contenders take turns, ``--rounds``
times, so that load from elsewhere on the machine falls on all of them alike; each row shows
the contender's best round (highest calls/s).

"API req" and "new conn" are counted at the API per call (1 and 0 in steady state); "CPU"
is this process's CPU time per call (in memory: MCP client and server together; over HTTP:
the client only).

Run: ``uv run python -m bench.mcp_server [--rounds 3] [--quick]`` (from the repository root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

import httpx
import httpx2
from fastmcp import Client
from pydantic import SecretStr

from bench.openapi_mcp import TENANT_ID, TENANT_SECRET, openapi_server
from bench.token_manager import AUDIENCE, CLIENT_ID, CLIENT_SECRET, RemoteIdP
from tests.support.api import ApiServer
from toolbridge_common.logs import configure_logging
from toolbridge_mcp.auth.tenant import TenantSigner
from toolbridge_mcp.config import Settings
from toolbridge_mcp.server import create_server

NOTES = 10
"""Items in the list (the issue's ``list_notes`` of 10 items)."""
CONCURRENCY = (1, 20)
WARMUP_PER_WORKER = 10

Call = Callable[[], Awaitable[object]]


# --- the processes ------------------------------------------------------------------------


class RemoteApi:
    """The real API (``ApiServer``: uvicorn + SQLite + the request/connection counter) in a
    child process; ``counts()`` asks it how many requests and TCP connections it served."""

    def __init__(self, jwks_url: str, issuer: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve_api, args=(child, jwks_url, issuer), daemon=True)
        self._process.start()
        self.url: str = self._conn.recv()

    def counts(self) -> tuple[int, int]:
        """(HTTP requests, distinct TCP connections) served since start."""
        self._conn.send("counts")
        counts: tuple[int, int] = self._conn.recv()
        return counts

    def close(self) -> None:
        self._conn.send("stop")
        self._process.join(timeout=15)


def _serve_api(conn: Connection, jwks_url: str, issuer: str) -> None:
    configure_logging("ERROR")
    with ApiServer(jwks_url, issuer, AUDIENCE, tenant_secret=TENANT_SECRET) as api:
        conn.send(api.url)
        while conn.recv() != "stop":
            conn.send((api.requests, api.connections))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """An MCP server over streamable HTTP on a free loopback port (``argv`` with ``{port}``)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.port = _free_port()
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - kept open while it runs
        self._process = subprocess.Popen(  # noqa: S603 - our own commands
            [arg.format(port=self.port) for arg in argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 90.0
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline and self._process.poll() is None:
                try:
                    await http.get(self.url)
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
                else:
                    return
        self._log.seek(0)
        raise RuntimeError("MCP server did not start:\n" + self._log.read()[-2000:])

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        self._log.close()


def _settings_env(api_url: str, token_url: str) -> dict[str, str]:
    return {
        "TOOLBRIDGE_GO_API_BASE_URL": api_url,
        "TOOLBRIDGE_AUTH0_CLIENT_ID": CLIENT_ID,
        "TOOLBRIDGE_AUTH0_CLIENT_SECRET": CLIENT_SECRET,
        "TOOLBRIDGE_AUTH0_TOKEN_URL": token_url,
        "TOOLBRIDGE_AUTH0_AUDIENCE": AUDIENCE,
        "TOOLBRIDGE_TENANT_ID": TENANT_ID,
        "TOOLBRIDGE_TENANT_HEADER_SECRET": TENANT_SECRET,
        "TOOLBRIDGE_LOG_LEVEL": "WARNING",
        "FASTMCP_LOG_LEVEL": "WARNING",
        "FASTMCP_CHECK_FOR_UPDATES": "off",
    }


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")} | extra


# --- the contenders -----------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One operation as each contender does it."""

    label: str
    ours: tuple[str, dict[str, Any]]
    openapi: tuple[str, dict[str, Any]]
    path: str
    params: dict[str, str]


@dataclass(frozen=True)
class Contender:
    name: str
    workers: Callable[[Workload], list[Call]]


def tool_calls(clients: list[Client[Any]], tool: str, arguments: dict[str, Any]) -> list[Call]:
    def one(client: Client[Any]) -> Call:
        async def call() -> Any:
            return await client.call_tool(tool, arguments)

        return call

    return [one(client) for client in clients]


def get_calls(http: httpx.AsyncClient | httpx2.AsyncClient, workload: Workload) -> list[Call]:
    async def call() -> Any:
        response = await http.get(workload.path, params=workload.params or None)
        response.raise_for_status()
        return response.json()

    return [call] * max(CONCURRENCY)


async def token(token_url: str) -> str:
    async with httpx.AsyncClient() as once:
        response = await once.post(
            token_url,
            json={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "audience": AUDIENCE,
            },
        )
        response.raise_for_status()
        value: str = response.json()["access_token"]
        return value


@contextlib.asynccontextmanager
async def bare_clients(
    api_url: str, token_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx2.AsyncClient]]:
    """The floor: one kept-alive client each of httpx and httpx2 with a token, a sync session
    and the tenant headers signed per request, as a hand-written caller would have."""
    signer = TenantSigner(TENANT_ID, SecretStr(TENANT_SECRET))
    headers = {"Authorization": f"Bearer {await token(token_url)}"}
    one = httpx.AsyncClient(
        base_url=api_url,
        headers=headers,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
        event_hooks={"request": [signer.sign]},
    )
    two = httpx2.AsyncClient(
        base_url=api_url,
        headers=headers,
        limits=httpx2.Limits(max_connections=100, max_keepalive_connections=50),
        event_hooks={"request": [signer.sign]},
    )
    session = (await one.post("/v1/sync/sessions")).json()
    sync = {"X-Sync-Session": session["id"], "X-Sync-Epoch": str(session["epoch"])}
    one.headers.update(sync)
    two.headers.update(sync)
    try:
        yield one, two
    finally:
        await one.aclose()
        await two.aclose()


# --- measuring ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    label: str
    concurrency: int
    latencies: list[float]
    seconds: float
    cpu_seconds: float
    requests: int
    connections: int

    @property
    def calls(self) -> int:
        return len(self.latencies)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.latencies) * 1000

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds

    def row(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[max(0, round(len(ordered) * 0.99) - 1)] * 1000
        return (
            f"  {self.label:<22}{self.concurrency:>5}{self.calls:>7}{self.mean_ms:>9.2f}"
            f"{p50:>9.2f}{p99:>9.2f}{self.per_second:>9.0f}"
            f"{self.cpu_seconds / self.calls * 1000:>9.2f}"
            f"{self.requests / self.calls:>9.3f}{self.connections / self.calls:>10.4f}"
        )


HEADER = (
    f"  {'':<22}{'conc':>5}{'calls':>7}{'mean ms':>9}{'p50 ms':>9}{'p99 ms':>9}{'calls/s':>9}"
    f"{'CPU ms':>9}{'API req':>9}{'new conn':>10}\n"
    f"  {'':<22}{'':>5}{'':>7}{'':>9}{'':>9}{'':>9}{'':>9}{'/call':>9}{'/call':>9}{'/call':>10}"
)


async def measure(api: RemoteApi, label: str, workers: list[Call], calls: int) -> Figures:
    """``calls`` calls spread over the workers (one coroutine each), after a warm-up that
    also grows the connection pools; API counts are differences over the measured calls."""

    async def run(call: Call, count: int, latencies: list[float]) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(run(w, WARMUP_PER_WORKER, []) for w in workers))
    requests_before, connections_before = api.counts()
    latencies: list[float] = []
    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(run(w, calls // len(workers), latencies) for w in workers))
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu
    requests_after, connections_after = api.counts()
    return Figures(
        label,
        len(workers),
        latencies,
        seconds,
        cpu_seconds,
        requests_after - requests_before,
        connections_after - connections_before,
    )


async def compare(
    api: RemoteApi,
    transport: str,
    contenders: list[Contender],
    workloads: list[Workload],
    rounds: int,
    calls: dict[int, int],
) -> list[str]:
    """Every workload at every concurrency, the contenders taking turns; printed as it goes."""
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    for workload in workloads:
        say(f"{transport}, {workload.label}")
        say(HEADER)
        for concurrency in CONCURRENCY:
            best: dict[str, Figures] = {}
            for _ in range(rounds):
                for contender in contenders:
                    workers = contender.workers(workload)[:concurrency]
                    figures = await measure(api, contender.name, workers, calls[concurrency])
                    kept = best.get(contender.name)
                    if kept is None or figures.per_second > kept.per_second:
                        best[contender.name] = figures
            for figures in best.values():
                say(figures.row())
            ours, theirs = best["toolbridge-mcp"], best["from_openapi"]
            floor = best["bare GET (httpx)"]
            say(
                f"  -> c={concurrency}: toolbridge-mcp / from_openapi: mean latency "
                f"{ours.mean_ms / theirs.mean_ms:.2f}x (target <= 1), calls/s "
                f"{ours.per_second / theirs.per_second:.2f}x (target >= 1); "
                f"toolbridge-mcp / bare httpx GET: latency {ours.mean_ms / floor.mean_ms:.2f}x"
            )
        say()
    return lines


# --- the run ------------------------------------------------------------------------------


async def seed(api_url: str, token_url: str) -> str:
    """``NOTES`` notes for the service user; the uid of the first."""
    async with bare_clients(api_url, token_url) as (http, _):
        uids: list[str] = []
        for n in range(NOTES):
            created = await http.post("/v1/notes", json={"title": f"note {n}", "n": n})
            created.raise_for_status()
            uids.append(created.json()["uid"])
    return uids[0]


def workloads(uid: str) -> list[Workload]:
    return [
        Workload(
            f"list_notes ({NOTES} items)",
            ("list_notes", {"limit": NOTES}),
            ("list_notes", {"limit": NOTES}),
            "/v1/notes",
            {"limit": str(NOTES)},
        ),
        Workload(
            "get_note",
            ("get_note", {"uid": uid}),
            ("get_notes", {"uid": uid}),
            f"/v1/notes/{uid}",
            {},
        ),
    ]


async def in_memory(
    api: RemoteApi, token_url: str, uid: str, rounds: int, calls: dict[int, int]
) -> list[str]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        go_api_base_url=api.url,
        auth0_client_id=CLIENT_ID,
        auth0_client_secret=SecretStr(CLIENT_SECRET),
        auth0_token_url=token_url,
        auth0_audience=AUDIENCE,
        tenant_id=TENANT_ID,
        tenant_header_secret=SecretStr(TENANT_SECRET),
    )
    ours = create_server(settings)
    theirs, theirs_http = await openapi_server(api.url, token_url)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(theirs_http.aclose)
        n = max(CONCURRENCY)
        our_clients = [await stack.enter_async_context(Client(ours)) for _ in range(n)]
        their_clients = [await stack.enter_async_context(Client(theirs)) for _ in range(n)]
        one, two = await stack.enter_async_context(bare_clients(api.url, token_url))
        contenders = [
            Contender("toolbridge-mcp", lambda w: tool_calls(our_clients, *w.ours)),
            Contender("from_openapi", lambda w: tool_calls(their_clients, *w.openapi)),
            Contender("bare GET (httpx)", lambda w: get_calls(one, w)),
            Contender("bare GET (httpx2)", lambda w: get_calls(two, w)),
        ]
        return await compare(api, "in-memory", contenders, workloads(uid), rounds, calls)


async def over_http(
    api: RemoteApi, token_url: str, uid: str, rounds: int, calls: dict[int, int]
) -> list[str]:
    script = str(Path(sys.executable).with_name("toolbridge-mcp"))
    ours = ServerProcess(
        [script, "serve", "--transport", "http", "--port", "{port}"],
        _child_env(_settings_env(api.url, token_url)),
    )
    theirs = ServerProcess(
        [sys.executable, "-m", "bench.openapi_mcp", api.url, token_url, "{port}"],
        _child_env({"FASTMCP_LOG_LEVEL": "WARNING"}),
    )
    try:
        await ours.wait_ready()
        await theirs.wait_ready()
        async with contextlib.AsyncExitStack() as stack:
            n = max(CONCURRENCY)
            our_clients = [await stack.enter_async_context(Client(ours.url)) for _ in range(n)]
            their_clients = [await stack.enter_async_context(Client(theirs.url)) for _ in range(n)]
            one, two = await stack.enter_async_context(bare_clients(api.url, token_url))
            contenders = [
                Contender("toolbridge-mcp", lambda w: tool_calls(our_clients, *w.ours)),
                Contender("from_openapi", lambda w: tool_calls(their_clients, *w.openapi)),
                Contender("bare GET (httpx)", lambda w: get_calls(one, w)),
                Contender("bare GET (httpx2)", lambda w: get_calls(two, w)),
            ]
            return await compare(api, "streamable HTTP", contenders, workloads(uid), rounds, calls)
    finally:
        ours.close()
        theirs.close()


async def main(rounds: int, quick: bool) -> None:
    configure_logging("ERROR")
    calls = {1: 100, 20: 400} if quick else {1: 300, 20: 1000}
    idp = RemoteIdP()
    base = idp.token_url.removesuffix("/oauth/token")
    api = RemoteApi(f"{base}/.well-known/jwks.json", f"{base}/")
    try:
        print(
            f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}; IdP and API (SQLite, tenant signatures) in child "
            f"processes; best of {rounds} rounds, {calls[1]} sequential / {calls[20]} "
            "concurrent calls each\n",
            flush=True,
        )
        uid = await seed(api.url, idp.token_url)
        await in_memory(api, idp.token_url, uid, rounds, calls)
        await over_http(api, idp.token_url, uid, rounds, calls)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        api.close()
        idp.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer calls per round")
    options = parser.parse_args()
    asyncio.run(main(options.rounds, options.quick))
