"""Faults the real API cannot be made to produce on demand (5xx, timeouts, broken bodies,
short Retry-After), injected at the client's edge with respx; and the pieces' contracts."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
import respx
from fastmcp import Client
from pydantic import SecretStr

from toolbridge_common import contract
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
    Item,
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
NOTES = contract.entity("notes")
UID = "0b8c6d3e-5a1f-4c2b-9d7e-3f4a5b6c7d8e"
ITEM = {"uid": UID, "version": 1, "updatedAt": "2025-11-03T10:00:00Z", "payload": {"title": "t"}}


class Clock:
    """Milliseconds for the tenant signer, moved on by the test."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def api_client(clock: Clock) -> AsyncIterator[ApiClient]:
    client = ApiClient(
        BASE,
        StaticTokenAuth(SecretStr(TOKEN)),
        TenantSigner("tenant-a", SecretStr(SECRET), clock=clock),
        max_retry_after_wait=0.2,
    )
    yield client
    await client.aclose()


def signed(request: httpx.Request) -> bool:
    """Whether the request's tenant signature is valid for its own timestamp."""
    stamp = request.headers["X-TB-Timestamp"]
    expected = hmac.new(SECRET.encode(), f"tenant-a:{stamp}".encode(), hashlib.sha256)
    return request.headers["X-TB-Signature"] == expected.hexdigest()


# The server's API client sends through httpcore2's pool (toolbridge_mcp.backend.transport);
# respx patches httpcore's pools unless told of this one too.
_HTTPCORE2_POOL = "httpcore2._async.connection_pool.AsyncConnectionPool"


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    respx.mocks.HTTPCoreMocker.add_targets(_HTTPCORE2_POOL)
    try:
        with respx.mock(base_url=BASE, assert_all_called=False) as router:
            router.post("/v1/sync/sessions").respond(201, json=SESSION)
            yield router
    finally:
        respx.mocks.HTTPCoreMocker.remove_targets(_HTTPCORE2_POOL)


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
    api_client: ApiClient, mock: respx.MockRouter, clock: Clock
) -> None:
    """A signature made once would be refused after the API's 300 s window."""
    route = mock.get("/v1/notes").respond(200, json={"items": []})
    await api_client.call("GET", "/v1/notes")
    clock.now_ms += 600_000
    await api_client.call("GET", "/v1/notes")
    stamps = [call.request.headers["X-TB-Timestamp"] for call in route.calls]
    assert stamps == ["1700000000000", "1700000600000"]
    assert all(signed(call.request) for call in route.calls)


class RetryOn401(StaticTokenAuth):
    """An auth that resends after a 401, as the client-credentials auth does with a fresh
    token; the resend must carry a fresh tenant signature too."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(SecretStr(TOKEN))
        self._clock = clock

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = await self.get_auth_header()
        response = yield request
        if response.status_code == 401:
            self._clock.now_ms += 1500  # the token fetch took a while
            yield request


async def test_an_attempt_resent_by_the_auth_is_signed_afresh(
    mock: respx.MockRouter, clock: Clock
) -> None:
    client = ApiClient(
        BASE, RetryOn401(clock), TenantSigner("tenant-a", SecretStr(SECRET), clock=clock)
    )
    route = mock.get("/v1/notes").mock(
        side_effect=[
            httpx.Response(401, text="unauthorized\n"),
            httpx.Response(200, json={"items": []}),
        ]
    )
    try:
        page = await client.list_items(NOTES)
    finally:
        await client.aclose()
    assert page.items == []
    first, second = (call.request for call in route.calls)
    assert first.headers["X-TB-Timestamp"] == "1700000000000"
    assert second.headers["X-TB-Timestamp"] == "1700000001500"
    assert signed(first)
    assert signed(second)
    assert first.headers["X-TB-Signature"] != second.headers["X-TB-Signature"]


def test_tenant_signature_is_hex_hmac_sha256_of_tenant_and_millis() -> None:
    signer = TenantSigner("acme", SecretStr("s3cr3t-value"))
    headers = signer.headers(now_ms=1_700_000_000_123)
    assert headers["X-TB-Timestamp"] == "1700000000123"
    assert (
        headers["X-TB-Signature"]
        == hmac.new(b"s3cr3t-value", b"acme:1700000000123", hashlib.sha256).hexdigest()
    )
    assert headers == contract.tenant_headers("s3cr3t-value", "acme", 1_700_000_000_123)
    assert "s3cr3t-value" not in repr(signer) + str(headers)


async def test_typed_calls_build_paths_queries_and_if_match_from_the_contract(
    api_client: ApiClient, mock: respx.MockRouter
) -> None:
    listed = mock.get("/v1/tasks").respond(200, json={"items": [ITEM], "nextCursor": "c2"})
    put = mock.put(f"/v1/notes/{UID}").respond(200, json=ITEM | {"version": 2})
    patch = mock.patch(f"/v1/notes/{UID}").respond(200, json=ITEM | {"version": 3})
    process = mock.post(f"/v1/notes/{UID}/process").respond(200, json=ITEM)
    archive = mock.post(f"/v1/notes/{UID}/archive").respond(200, json=ITEM)
    deleted = mock.delete(f"/v1/notes/{UID}").respond(
        200, json=ITEM | {"deletedAt": "2025-11-03T10:01:00Z"}
    )
    page = await api_client.list_items(
        contract.entity("tasks"), limit=100, cursor="c1", include_deleted=True
    )
    assert page.next_cursor == "c2"
    assert page.items == [Item.model_validate(ITEM)]
    assert dict(listed.calls[0].request.url.params) == {
        "limit": "100",
        "cursor": "c1",
        "includeDeleted": "true",
    }
    assert (await api_client.update_item(NOTES, UID, {"title": "x"}, if_match=1)).version == 2
    assert put.calls[0].request.headers["If-Match"] == "1"
    assert (await api_client.patch_item(NOTES, UID, {"title": "y"})).version == 3
    assert "If-Match" not in patch.calls[0].request.headers
    await api_client.process_item(NOTES, UID, "pin", metadata={"by": "me"})
    assert json.loads(process.calls[0].request.content) == {
        "action": "pin",
        "metadata": {"by": "me"},
    }
    await api_client.archive_item(NOTES, UID)
    assert archive.call_count == 1
    gone = await api_client.delete_item(NOTES, UID)
    assert gone.deleted_at == "2025-11-03T10:01:00Z"
    assert deleted.call_count == 1
    assert gone.model_dump().keys() == {"uid", "version", "updatedAt", "deletedAt", "payload"}


async def test_a_412_keeps_the_current_version_and_correlation_id_without_a_second_get(
    api_client: ApiClient, mock: respx.MockRouter
) -> None:
    put = mock.put(f"/v1/notes/{UID}").respond(
        412, json={"error": "version mismatch", "version": 7, "correlation_id": "cid-412"}
    )
    get = mock.get(f"/v1/notes/{UID}").respond(200, json=ITEM)
    with pytest.raises(ApiError) as raised:
        await api_client.update_item(NOTES, UID, {"title": "x"}, if_match=3)
    assert raised.value.current_version == 7
    assert raised.value.correlation_id == "cid-412"
    assert put.call_count == 1
    assert get.call_count == 0
    message = str(to_tool_error(raised.value, dataclasses.replace(CTX, uid=UID)))
    assert "Version conflict" in message
    assert "version 7" in message
    assert "if_match=7" in message
    assert "cid-412" in message


async def test_the_go_apis_412_text_gives_the_current_version(
    api_client: ApiClient, mock: respx.MockRouter
) -> None:
    """The Go API's 412 has no ``version`` field, only its doubled message."""
    mock.put(f"/v1/notes/{UID}").respond(
        412,
        json={
            "error": "version mismatch: version mismatch: expected 3, actual 5",
            "correlation_id": "",
        },
    )
    with pytest.raises(ApiError) as raised:
        await api_client.update_item(NOTES, UID, {"title": "x"}, if_match=3)
    assert raised.value.current_version == 5
    assert raised.value.correlation_id is None
    assert "if_match=5" in str(to_tool_error(raised.value, CTX))


async def test_sessions_and_info(api_client: ApiClient, mock: respx.MockRouter) -> None:
    mock.get("/v1/sync/sessions/s-1").respond(200, json=SESSION)
    ended = mock.delete("/v1/sync/sessions/s-1").respond(204)
    mock.get("/v1/sync/info").respond(200, json=contract.info(datetime.now(UTC)))
    assert (await api_client.session()).id == "s-1"
    info = await api_client.get_session("s-1")
    assert info.epoch == 3
    assert info.user_id == "u"
    await api_client.end_session("s-1")
    assert ended.call_count == 1
    assert set((await api_client.info())["entities"]) == set(contract.ENTITY_NAMES)
    await api_client.session()  # the ended session is not reused
    assert mock.routes[0].call_count == 2


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
        _env_file=None, go_api_base_url=BASE, jwt_token=SecretStr(TOKEN)
    )
    async with Client(create_server(settings)) as client:
        got = await client.call_tool("get_note", {"uid": "n-1"}, raise_on_error=False)
        listed = await client.call_tool("list_notes", {}, raise_on_error=False)
    for result in (got, listed):
        assert result.is_error
        text = result.content[0].text
        assert "cannot read" in text, text
    assert "(uid, version)" in got.content[0].text


async def test_list_tools_default_to_the_original_page_size(mock: respx.MockRouter) -> None:
    """The original list tools asked for 100 items unless told otherwise (the API's own
    default is 500)."""
    route = mock.get("/v1/notes").respond(200, json={"items": []})
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, go_api_base_url=BASE, jwt_token=SecretStr(TOKEN)
    )
    async with Client(create_server(settings)) as client:
        await client.call_tool("list_notes", {})
        await client.call_tool("list_notes", {"limit": None, "include_deleted": None})
        await client.call_tool("list_notes", {"limit": 7, "cursor": "abc"})
    params = [dict(call.request.url.params) for call in route.calls]
    assert params == [
        {"limit": str(contract.MCP_LIST_LIMIT)},
        {"limit": "100"},
        {"limit": "7", "cursor": "abc"},
    ]
