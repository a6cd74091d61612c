"""Faults the real API cannot be made to produce on demand (5xx, timeouts, broken bodies,
short Retry-After), injected at the client's edge with respx; and the pieces' contracts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
import respx
from fastmcp import Client
from pydantic import SecretStr

from toolbridge_mcp.auth import tenant
from toolbridge_mcp.auth.modes import (
    MISSING_AUTHENTICATION,
    MissingAuthenticationError,
    PassthroughAuth,
    StaticTokenAuth,
    get_auth_header,
)
from toolbridge_mcp.auth.tenant import TenantSigner
from toolbridge_mcp.backend import (
    ApiClient,
    ApiError,
    ApiUnavailableError,
    ErrorContext,
    SessionPool,
    SyncSession,
    to_tool_error,
)
from toolbridge_mcp.config import Settings
from toolbridge_mcp.server import create_server

BASE = "http://api.test"
TOKEN = "static-token-value"
SECRET = "tenant-secret-0123456789"
SESSION = {"id": "s-1", "userId": "u", "createdAt": "x", "expiresAt": "y", "epoch": 3}
CTX = ErrorContext(api_url=BASE, auth_mode="static", tenant_configured=True, entity="note")


@pytest.fixture
async def api_client() -> AsyncIterator[ApiClient]:
    client = ApiClient(
        BASE,
        StaticTokenAuth(SecretStr(TOKEN)),
        TenantSigner("tenant-a", SecretStr(SECRET)),
        max_retry_after_wait=0.2,
    )
    yield client
    await client.aclose()


@pytest.fixture
def mock() -> respx.MockRouter:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.post("/v1/sync/sessions").respond(201, json=SESSION)
        yield router


async def test_every_request_carries_auth_tenant_and_session_headers(
    api_client: ApiClient, mock: respx.MockRouter
) -> None:
    route = mock.get("/v1/notes").respond(200, json={"items": [], "nextCursor": None})
    await api_client.call("GET", "/v1/notes")
    await api_client.call("GET", "/v1/notes")
    first, second = (call.request for call in route.calls)
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.headers["X-Sync-Session"] == "s-1"
    assert first.headers["X-Sync-Epoch"] == "3"
    assert first.headers["X-TB-Tenant-ID"] == "tenant-a"
    stamp = second.headers["X-TB-Timestamp"]
    expected = hmac.new(SECRET.encode(), f"tenant-a:{stamp}".encode(), hashlib.sha256)
    assert second.headers["X-TB-Signature"] == expected.hexdigest()
    assert mock.routes[0].call_count == 1  # one session for both calls


async def test_each_request_is_signed_at_its_own_time(
    api_client: ApiClient, mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signature made once would be refused after the API's 300 s window."""
    route = mock.get("/v1/notes").respond(200, json={"items": []})
    now = [1_700_000_000_000_000_000]
    monkeypatch.setattr(tenant, "time", SimpleNamespace(time_ns=lambda: now[0]))
    await api_client.call("GET", "/v1/notes")
    now[0] += 600 * 10**9
    await api_client.call("GET", "/v1/notes")
    stamps = [call.request.headers["X-TB-Timestamp"] for call in route.calls]
    assert stamps == ["1700000000000", "1700000600000"]


def test_tenant_signature_is_hex_hmac_sha256_of_tenant_and_millis() -> None:
    signer = TenantSigner("acme", SecretStr("s3cr3t-value"))
    headers = signer.headers(now_ms=1_700_000_000_123)
    assert headers["X-TB-Timestamp"] == "1700000000123"
    assert (
        headers["X-TB-Signature"]
        == hmac.new(b"s3cr3t-value", b"acme:1700000000123", hashlib.sha256).hexdigest()
    )
    assert "s3cr3t-value" not in repr(signer) + str(headers)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_read_as_api_unavailable(
    status: int, api_client: ApiClient, mock: respx.MockRouter
) -> None:
    mock.get("/v1/notes").respond(status, json={"error": "boom", "correlation_id": "c"})
    with pytest.raises(ApiError) as raised:
        await api_client.call("GET", "/v1/notes")
    message = str(to_tool_error(raised.value, CTX))
    assert message.startswith(f"ToolBridge API unavailable at {BASE} (HTTP {status})")


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (httpx.ConnectError("refused"), "ConnectError"),
        (httpx.ReadTimeout("slow"), "timed out"),
        (httpx.RemoteProtocolError("cut"), "RemoteProtocolError"),
    ],
)
async def test_transport_failures_read_as_api_unavailable(
    fault: Exception, reason: str, api_client: ApiClient, mock: respx.MockRouter
) -> None:
    mock.get("/v1/notes").mock(side_effect=fault)
    with pytest.raises(ApiUnavailableError) as raised:
        await api_client.call("GET", "/v1/notes")
    message = str(to_tool_error(raised.value, CTX))
    assert f"ToolBridge API unavailable at {BASE}" in message
    assert reason in message
    assert TOKEN not in message


async def test_short_retry_after_is_waited_out_once(
    api_client: ApiClient, mock: respx.MockRouter
) -> None:
    route = mock.get("/v1/notes").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "0.05"}, json={"error": "slow down"}),
            httpx.Response(200, json={"items": []}),
        ]
    )
    assert await api_client.call("GET", "/v1/notes") == {"items": []}
    assert route.call_count == 2


async def test_repeated_429_is_not_retried_forever(
    api_client: ApiClient, mock: respx.MockRouter
) -> None:
    route = mock.get("/v1/notes").respond(
        429, headers={"Retry-After": "0.01"}, json={"error": "slow down"}
    )
    with pytest.raises(ApiError) as raised:
        await api_client.call("GET", "/v1/notes")
    assert route.call_count == 2
    assert "retry in 1 s" in str(to_tool_error(raised.value, CTX))


async def test_epoch_mismatch_without_an_epoch_opens_a_new_session(
    api_client: ApiClient, mock: respx.MockRouter
) -> None:
    mock.routes[0].mock(
        side_effect=[
            httpx.Response(201, json=SESSION),
            httpx.Response(201, json=SESSION | {"id": "s-2", "epoch": 4}),
        ]
    )
    route = mock.get("/v1/notes").mock(
        side_effect=[
            httpx.Response(409, json={"error": "epoch_mismatch"}),
            httpx.Response(200, json={"items": []}),
        ]
    )
    await api_client.call("GET", "/v1/notes")
    assert route.calls[1].request.headers["X-Sync-Session"] == "s-2"
    assert route.calls[1].request.headers["X-Sync-Epoch"] == "4"


async def test_other_conflicts_are_not_mistaken_for_epoch_changes(
    api_client: ApiClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/notes").respond(409, json={"error": "uid already exists"})
    with pytest.raises(ApiError):
        await api_client.call("POST", "/v1/notes", json={})
    assert route.call_count == 1


async def test_non_json_success_body_is_an_error_not_a_crash(
    api_client: ApiClient, mock: respx.MockRouter
) -> None:
    mock.get("/v1/notes").respond(200, text="<html>proxy</html>")
    with pytest.raises(ApiError, match="not JSON"):
        await api_client.call("GET", "/v1/notes")


async def test_session_pool_collapses_concurrent_opens() -> None:
    opened: list[str] = []
    gate = asyncio.Event()

    async def open_session(principal: str) -> SyncSession:
        opened.append(principal)
        await gate.wait()
        return SyncSession(f"s-{len(opened)}", 1)

    pool = SessionPool(open_session)
    waiters = [asyncio.create_task(pool.get("alice")) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    sessions = await asyncio.gather(*waiters)
    assert opened == ["alice"]
    assert set(sessions) == {SyncSession("s-1", 1)}
    stale = sessions[0]
    renewed = await asyncio.gather(*(pool.renew("alice", stale) for _ in range(5)))
    assert opened == ["alice", "alice"]
    assert set(renewed) == {SyncSession("s-2", 1)}
    assert await pool.renew("alice", stale) == SyncSession("s-2", 1)  # already replaced
    assert opened == ["alice", "alice"]


async def test_get_auth_header_per_mode() -> None:
    assert await get_auth_header(StaticTokenAuth(SecretStr("abc"))) == "Bearer abc"
    assert await get_auth_header(StaticTokenAuth(SecretStr("Bearer abc"))) == "Bearer abc"
    with pytest.raises(MissingAuthenticationError) as raised:
        await get_auth_header(PassthroughAuth())
    assert str(raised.value).startswith(MISSING_AUTHENTICATION)
    assert "stdio" in str(raised.value)


async def test_a_cancelled_caller_does_not_cancel_the_shared_session_open() -> None:
    gate = asyncio.Event()
    opened: list[str] = []

    async def open_session(principal: str) -> SyncSession:
        opened.append(principal)
        await gate.wait()
        return SyncSession("s-1", 1)

    pool = SessionPool(open_session)
    first = asyncio.create_task(pool.get("alice"))  # starts the open
    others = [asyncio.create_task(pool.get("alice")) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()  # e.g. the MCP client gave up on its call
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*others) == [SyncSession("s-1", 1)] * 3
    assert first.cancelled()
    assert await pool.get("alice") == SyncSession("s-1", 1)
    assert opened == ["alice"]


@pytest.mark.parametrize(
    "refusal",
    [
        httpx.Response(428, json={"error": "sync session required"}),
        httpx.Response(409, json={"error": "epoch_mismatch", "epoch": 7}),
    ],
)
async def test_a_refusal_that_persists_is_recovered_once_not_forever(
    refusal: httpx.Response, api_client: ApiClient, mock: respx.MockRouter
) -> None:
    route = mock.get("/v1/notes").mock(return_value=refusal)
    with pytest.raises(ApiError) as raised:
        await api_client.call("GET", "/v1/notes")
    assert raised.value.status == refusal.status_code
    assert route.call_count == 2
    assert mock.routes[0].call_count <= 2  # at most one new session


async def test_an_item_the_server_cannot_read_is_a_tool_error_not_a_masked_crash(
    mock: respx.MockRouter,
) -> None:
    """An answer that is not an item (say, another service at the API URL) must read as an
    API problem, like every other, instead of FastMCP's masked internal error."""
    mock.get(url__regex=r"/v1/notes/.+").respond(200, json={"payload": {"title": "no uid"}})
    mock.get("/v1/notes").respond(200, json={"items": [{"version": "x"}], "nextCursor": None})
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, go_api_base_url=BASE, jwt_token=TOKEN
    )
    async with Client(create_server(settings)) as client:
        got = await client.call_tool("get_note", {"uid": "n-1"}, raise_on_error=False)
        listed = await client.call_tool("list_notes", {}, raise_on_error=False)
    for result in (got, listed):
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert "cannot read" in text, text
    assert "(uid, version)" in got.content[0].text  # type: ignore[union-attr]
