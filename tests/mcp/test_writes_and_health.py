"""Issue 12, MCP side: writes carry an Idempotency-Key (one per tool call, the same on the
client's retry), a write whose answer is lost says it may have been applied and how to check,
and health says degraded once the token has expired, whatever the mode reports."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import respx
from pydantic import SecretStr

from tests.support.api import ApiServer
from tests.support.idp import IdP
from tests.support.mcp_calls import call, call_error
from tests.support.mcp_server import ServerFactory
from toolbridge_common import contract
from toolbridge_mcp.auth.modes import AuthHealth, StaticTokenAuth
from toolbridge_mcp.backend import ApiClient, ApiError, ApiUnavailableError, ErrorContext
from toolbridge_mcp.backend.client import IDEMPOTENCY_KEY
from toolbridge_mcp.backend.errors import to_tool_error
from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.tools.health import health_report

BASE = "http://api.test"
NOTES = contract.entity("notes")
UID = "0b8c6d3e-5a1f-4c2b-9d7e-3f4a5b6c7d8e"
ITEM = {"uid": UID, "version": 1, "updatedAt": "2025-11-03T10:00:00Z", "payload": {"title": "t"}}
SESSION = {"id": "s-1", "userId": "u", "createdAt": "x", "expiresAt": "y", "epoch": 1}


@pytest.fixture
async def api_client() -> AsyncIterator[ApiClient]:
    client = ApiClient(BASE, StaticTokenAuth(SecretStr("static-token-value")))
    yield client
    await client.aclose()


@respx.mock
async def test_a_write_sends_one_key_and_reuses_it_on_its_retry(api_client: ApiClient) -> None:
    respx.post(f"{BASE}/v1/sync/sessions").respond(201, json=SESSION)
    route = respx.post(f"{BASE}/v1/notes").mock(
        side_effect=[
            httpx.ReadError("connection reset"),
            httpx.Response(201, json=ITEM),
            httpx.Response(201, json=ITEM),
        ]
    )
    await api_client.create_item(NOTES, {"uid": UID, "title": "t"})
    first, second = (c.request.headers.get(IDEMPOTENCY_KEY) for c in route.calls)
    assert first is not None
    assert first == second
    uuid.UUID(first)

    await api_client.create_item(NOTES, {"uid": UID, "title": "t"})
    assert route.calls[-1].request.headers[IDEMPOTENCY_KEY] != first  # a new call, a new key

    gets = respx.get(f"{BASE}/v1/notes/{UID}").respond(200, json=ITEM)
    await api_client.get_item(NOTES, UID)
    assert IDEMPOTENCY_KEY not in gets.calls[-1].request.headers


@respx.mock
async def test_a_write_is_unsent_only_when_no_attempt_could_have_reached_the_api(
    api_client: ApiClient,
) -> None:
    respx.post(f"{BASE}/v1/sync/sessions").respond(201, json=SESSION)
    route = respx.post(f"{BASE}/v1/notes").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ApiUnavailableError) as refused:
        await api_client.create_item(NOTES, {"uid": UID})
    assert route.call_count == 2  # refused twice: the retry could not connect either
    assert refused.value.sent is False

    route.side_effect = [httpx.ReadError("connection reset"), httpx.ConnectError("refused")]
    with pytest.raises(ApiUnavailableError) as reset_then_refused:
        await api_client.create_item(NOTES, {"uid": UID})
    assert reset_then_refused.value.sent is True, "the first attempt may have been applied"


@respx.mock
async def test_a_session_that_cannot_be_opened_means_nothing_was_sent(
    api_client: ApiClient,
) -> None:
    respx.post(f"{BASE}/v1/sync/sessions").mock(side_effect=httpx.ReadError("reset"))
    writes = respx.post(f"{BASE}/v1/notes").respond(201, json=ITEM)
    with pytest.raises(ApiUnavailableError) as failed:
        await api_client.create_item(NOTES, {"uid": UID})
    assert failed.value.sent is False
    assert writes.call_count == 0


@respx.mock
async def test_a_timed_out_write_is_not_retried(api_client: ApiClient) -> None:
    respx.post(f"{BASE}/v1/sync/sessions").respond(201, json=SESSION)
    route = respx.post(f"{BASE}/v1/notes").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ApiUnavailableError):
        await api_client.create_item(NOTES, {"uid": UID})
    assert route.call_count == 1


def test_a_lost_create_answer_says_may_have_been_applied_naming_the_uid() -> None:
    ctx = ErrorContext(
        api_url=BASE,
        auth_mode="auth0",
        tenant_configured=False,
        entity="note",
        uid=UID,
        get_tool="get_note",
        list_tool="list_notes",
        write="create",
    )
    message = str(to_tool_error(ApiUnavailableError("timed out: ReadTimeout"), ctx))
    assert "may have been applied" in message
    assert f"get_note(uid='{UID}')" in message
    assert "try again" not in message
    uncertain = ApiError(503, "database error while committing: the write may have been applied")
    assert "may have been applied" in str(to_tool_error(uncertain, ctx))
    busy = ApiError(503, "database busy: nothing was written")
    assert "try again" in str(to_tool_error(busy, ctx))
    read = str(to_tool_error(ApiUnavailableError("ConnectError"), ctx.__class__(BASE, "x", False)))
    assert "try again" in read
    unsent = str(to_tool_error(ApiUnavailableError("ConnectError", sent=False), ctx))
    assert "may have been applied" not in unsent
    assert "nothing was written" in unsent
    assert "try again" in unsent


async def test_create_tools_choose_the_uid_and_a_lost_answer_names_it(
    start_mcp: ServerFactory, api: ApiServer, idp: IdP
) -> None:
    """Over the real path: the uid is chosen by the tool (a UUID the API stores); when the
    API takes the request and the answer is lost, the create's error names that uid and the
    get tool; when no connection can be made, it says that nothing was written."""
    from fastmcp import Client

    server = start_mcp()
    async with Client(server.url) as client:
        created = await call(client, idp, "create_note", title="chosen here")
        uuid.UUID(created["uid"])

    async def lose_the_writes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Opens sync sessions; a write arrives and its answer never does."""
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            if not head.startswith(b"POST /v1/sync/sessions "):
                break
            body = json.dumps(SESSION).encode()
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        writer.close()

    silent = await asyncio.start_server(lose_the_writes, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        lost = start_mcp(api_url=f"http://127.0.0.1:{port}")
        async with Client(lost.url) as client:
            message = await call_error(client, idp, "create_note", title="lost")
    finally:
        silent.close()
    assert "may have been applied" in message
    assert "get_note(uid='" in message

    down = start_mcp(api_url="http://127.0.0.1:9")
    async with Client(down.url) as client:
        refused = await call_error(client, idp, "create_note", title="never sent")
    assert "may have been applied" not in refused
    assert "nothing was sent, so nothing was written" in refused


def _backend(status: str, expires_in: float) -> Backend:
    expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
    auth = SimpleNamespace(
        name="auth0",
        health=lambda: AuthHealth(cast(Any, status), "tokens on a timer", expires_at),
    )
    return cast(
        Backend,
        SimpleNamespace(auth=auth, settings=SimpleNamespace(tenant_id=None), api_url=BASE),
    )


def test_health_is_degraded_once_the_token_has_expired() -> None:
    report = health_report(_backend("ok", -53.7))
    assert report.status == "degraded"
    assert report.token_expired_seconds_ago is not None
    assert 53 <= report.token_expired_seconds_ago < 60
    assert "expired 53" in report.detail or "expired 54" in report.detail
    fresh = health_report(_backend("ok", 300))
    assert fresh.status == "ok"
    assert fresh.token_expired_seconds_ago is None
