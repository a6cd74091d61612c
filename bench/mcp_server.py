"""MCP server figures: tool-call latency and throughput through MCP over streamable HTTP, next
to the same API request on one kept-alive client, and the API requests and new TCP connections
each tool call costs, counted at the API. Prints figures; asserts nothing.

Each server runs in its own process, as in production (sharing one GIL, they would slow each
other down): the fake IdP, the API (uvicorn, SQLite, tenant signatures checked) and the MCP
server (``toolbridge-mcp serve --transport http``). This process only drives the clients.

Run: ``uv run python -m bench.mcp_server`` (from the repository root).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from fastmcp import Client
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from bench.token_manager import AUDIENCE, CLIENT_ID, CLIENT_SECRET, RemoteIdP
from tests.support.api import ApiServer
from toolbridge_mcp.auth.tenant import TenantSigner

TENANT_ID = "bench-tenant"
TENANT_SECRET = "bench-tenant-secret-0123456789"
NOTES = 50
WARMUP_PER_WORKER = 10
CALLS = {1: 400, 20: 1000}
"""Measured calls per concurrency level (spread over the workers)."""

Call = Callable[[], Awaitable[object]]


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
    from toolbridge_common.logs import configure_logging

    configure_logging("ERROR")
    with ApiServer(jwks_url, issuer, AUDIENCE, tenant_secret=TENANT_SECRET) as api:
        conn.send(api.url)
        while conn.recv() != "stop":
            conn.send((api.requests, api.connections))


class McpProcess:
    """``toolbridge-mcp serve --transport http`` on a free loopback port, configured through
    its environment as a user would."""

    def __init__(self, api_url: str, token_url: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
        env |= {
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
        script = Path(sys.executable).with_name("toolbridge-mcp")
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - kept open while it runs
        self._process = subprocess.Popen(  # noqa: S603 - our own console script
            [str(script), "serve", "--transport", "http", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 60.0
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                try:
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
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


@dataclass(frozen=True)
class Figures:
    label: str
    concurrency: int
    latencies: list[float]
    seconds: float
    requests: int
    connections: int
    server_seconds: float | None = None
    """Time spent inside the MCP server's tool calls (its own /metrics histogram)."""

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
        server = (
            "" if self.server_seconds is None else f"{self.server_seconds / self.calls * 1000:.2f}"
        )
        return (
            f"{self.label:<30}{self.concurrency:>5}{self.calls:>7}{self.mean_ms:>9.2f}"
            f"{p50:>9.2f}{p99:>9.2f}{self.per_second:>9.0f}"
            f"{self.requests / self.calls:>9.3f}{self.connections / self.calls:>10.4f}{server:>10}"
        )


HEADER = (
    f"{'':<30}{'conc':>5}{'calls':>7}{'mean ms':>9}{'p50 ms':>9}{'p99 ms':>9}{'calls/s':>9}"
    f"{'API req':>9}{'new conn':>10}{'in tool':>10}\n"
    f"{'':<30}{'':>5}{'':>7}{'':>9}{'':>9}{'':>9}{'':>9}{'/call':>9}{'/call':>10}{'ms':>10}"
)


async def tool_seconds(mcp: McpProcess, tool: str) -> float:
    """Total seconds the MCP server spent in successful calls of ``tool`` (its histogram)."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{mcp.url}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_duration_seconds_sum") and sample.labels == {
                "tool": tool,
                "outcome": "ok",
            }:
                return sample.value
    return 0.0


async def measure(
    api: RemoteApi,
    label: str,
    workers: list[Call],
    calls: int,
    server_time: Callable[[], Awaitable[float]] | None = None,
) -> Figures:
    """``calls`` calls spread over the workers (one coroutine each), after a warm-up that
    also grows the connection pools to the concurrency; API counts, and the server's own
    time when given, are differences over the measured calls only (steady state)."""

    async def run(call: Call, count: int, latencies: list[float]) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(run(w, WARMUP_PER_WORKER, []) for w in workers))
    requests_before, connections_before = api.counts()
    server_before = None if server_time is None else await server_time()
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(run(w, calls // len(workers), latencies) for w in workers))
    seconds = time.perf_counter() - started
    requests_after, connections_after = api.counts()
    server = None
    if server_time is not None and server_before is not None:
        server = await server_time() - server_before
    return Figures(
        label,
        len(workers),
        latencies,
        seconds,
        requests_after - requests_before,
        connections_after - connections_before,
        server,
    )


async def direct_client(api_url: str, token_url: str) -> tuple[httpx.AsyncClient, TenantSigner]:
    """One kept-alive client with a token and a sync session, as a hand-written caller
    would have: the baseline a tool call is compared with."""
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
        token = response.json()["access_token"]
    signer = TenantSigner(TENANT_ID, SecretStr(TENANT_SECRET))
    http = httpx.AsyncClient(
        base_url=api_url,
        headers={"Authorization": f"Bearer {token}"},
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
    )
    session = (await http.post("/v1/sync/sessions", headers=signer.headers())).json()
    http.headers.update({"X-Sync-Session": session["id"], "X-Sync-Epoch": str(session["epoch"])})
    return http, signer


def direct_call(http: httpx.AsyncClient, signer: TenantSigner, path: str, **params: str) -> Call:
    async def call() -> Any:
        response = await http.get(path, params=params or None, headers=signer.headers())
        response.raise_for_status()
        return response.json()

    return call


def tool_call(client: Client[Any], tool: str, **arguments: Any) -> Call:
    async def call() -> Any:
        return await client.call_tool(tool, arguments)

    return call


async def scenarios(
    api: RemoteApi,
    mcp: McpProcess,
    clients: list[Client[Any]],
    http: httpx.AsyncClient,
    signer: TenantSigner,
) -> list[Figures]:
    """Each MCP tool next to the API request it makes, at each concurrency."""
    uids = []
    for i in range(NOTES):
        created = await clients[0].call_tool("create_note", {"title": f"note {i}"})
        assert created.structured_content is not None
        uids.append(created.structured_content["uid"])
    direct = direct_call(http, signer, f"/v1/notes/{uids[0]}")
    listing = direct_call(http, signer, "/v1/notes", limit=str(NOTES))
    results: list[Figures] = []
    for concurrency, calls in CALLS.items():
        workers = clients[:concurrency]
        for tool, arguments, label, baseline, baseline_label in (
            ("get_note", {"uid": uids[0]}, "MCP get_note", direct, "direct GET /v1/notes/{uid}"),
            ("list_notes", {}, f"MCP list_notes ({NOTES} items)", listing, "direct GET /v1/notes"),
        ):
            results.append(
                await measure(
                    api,
                    label,
                    [tool_call(c, tool, **arguments) for c in workers],
                    calls,
                    functools.partial(tool_seconds, mcp, tool),
                )
            )
            results.append(await measure(api, baseline_label, [baseline] * concurrency, calls))
    return results


def report(results: list[Figures]) -> None:
    print(HEADER)
    for figures in results:
        print(figures.row())
    print()
    for through_mcp, direct in zip(results[::2], results[1::2], strict=True):
        print(
            f"{through_mcp.label} at concurrency {through_mcp.concurrency}: "
            f"{through_mcp.mean_ms / direct.mean_ms:.1f}x the direct request's mean latency, "
            f"{through_mcp.per_second / direct.per_second:.2f}x its calls/s"
        )
    print(
        "\n'in tool' is the MCP server's own time inside the tool call (its /metrics histogram);"
        "\nthe rest of the MCP latency is the MCP client and protocol (JSON-RPC over HTTP)."
        "\nThe issue's original server: 25 ms mean and 43 calls/s at concurrency 20, against"
        "\n0.9 ms for one kept-alive request (a new TLS context, TCP connection and session"
        "\nrequest per tool call)."
    )


async def main() -> None:
    idp = RemoteIdP()
    base = idp.token_url.removesuffix("/oauth/token")
    api = RemoteApi(f"{base}/.well-known/jwks.json", f"{base}/")
    mcp = McpProcess(api.url, idp.token_url)
    try:
        await mcp.wait_ready()
        print(
            f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}; IdP, API (SQLite, tenant signatures) and MCP server "
            "(streamable HTTP) each in their own process\n"
        )
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(Client(f"{mcp.url}/mcp")) for _ in range(max(CALLS))
            ]
            http, signer = await direct_client(api.url, idp.token_url)
            stack.push_async_callback(http.aclose)
            results = await scenarios(api, mcp, clients, http, signer)
        report(results)
    finally:
        mcp.close()
        api.close()
        idp.close()


if __name__ == "__main__":
    asyncio.run(main())
