"""No stall on the event loop: the first token fetch and the opening of the API client build
their HTTP clients and TLS contexts (the certificate store: ~20 ms of CPU on this machine) in a
worker thread, so a task ticking every millisecond on the same loop never waits 5 ms.

The token endpoint runs in a child process, as a real one would: a server thread in this
process would hold the GIL while it answers. A serving process has imported the HTTP stack
before its first token fetch (its API client is built first), so the imports are warmed here;
what must not run on the loop is building a client. Each check takes the best of three cold
starts: a stall of ours shows in every one, the machine's other work rarely three times.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.connection import Connection

import httpx
import pytest
from pydantic import SecretStr

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET
from tests.support.idp import IdP
from toolbridge_mcp.backend import ApiError
from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.config import Settings
from toolbridge_mcp.metrics import ServerMetrics
from toolbridge_mcp.tokens import TokenManager

MAX_LAG = 0.005
TICK = 0.001
ATTEMPTS = 3


def _serve_idp(conn: Connection) -> None:
    with IdP(clients={CLIENT_ID: CLIENT_SECRET}, audience=AUDIENCE) as idp:
        conn.send(idp.token_url)
        conn.recv()  # until told to stop


@pytest.fixture(scope="module")
def token_url() -> Iterator[str]:
    """A token endpoint in a child process."""
    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe()
    process = ctx.Process(target=_serve_idp, args=(child,), daemon=True)
    process.start()
    try:
        if not conn.poll(60):
            raise RuntimeError("the token endpoint did not start")
        url: str = conn.recv()
        yield url
    finally:
        conn.send("stop")
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


@pytest.fixture
async def warmed(token_url: str) -> str:
    """The HTTP stack imported and used once, as in a process that serves."""
    async with httpx.AsyncClient() as http:
        await http.get(token_url.replace("/oauth/token", "/.well-known/jwks.json"))
    return token_url


async def max_lag(work: Callable[[], Awaitable[object]]) -> float:
    """The longest a 1 ms ticker on this loop waited beyond its tick while ``work`` ran."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(TICK)
            lags.append(time.perf_counter() - started - TICK)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    lags.clear()
    try:
        await work()
        await asyncio.sleep(0.01)
    finally:
        done.set()
        await ticking
    return max(lags)


async def best_of(attempts: int, work: Callable[[], Awaitable[object]]) -> float:
    return min([await max_lag(work) for _ in range(attempts)])


async def test_a_cold_token_fetch_does_not_stall_the_loop(warmed: str) -> None:
    async def cold_fetch() -> None:
        manager = TokenManager.client_credentials(
            CLIENT_ID, CLIENT_SECRET, token_url=warmed, audience=AUDIENCE
        )
        try:
            assert await manager.get_token()
        finally:
            await manager.close()

    lag = await best_of(ATTEMPTS, cold_fetch)
    assert lag < MAX_LAG, f"the loop stalled {lag * 1000:.1f} ms during a cold token fetch"


async def test_opening_the_backend_and_its_first_request_do_not_stall_the_loop(
    warmed: str,
) -> None:
    """The API client's pool (and TLS context) is built when the backend opens, in a worker
    thread, not on the loop when the first tool call sends through it."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        go_api_base_url=warmed.removesuffix("/oauth/token"),  # any local HTTP server
        jwt_token=SecretStr("static-token"),
    )

    async def cold_open_and_call() -> None:
        backend = Backend(settings, transport=ServerMetrics().api_transport())
        await backend.open()
        try:
            with pytest.raises(ApiError):  # the token endpoint has no /v1/sync/info
                await backend.client.info()
        finally:
            await backend.close()

    lag = await best_of(ATTEMPTS, cold_open_and_call)
    assert lag < MAX_LAG, f"the loop stalled {lag * 1000:.1f} ms opening the backend"
