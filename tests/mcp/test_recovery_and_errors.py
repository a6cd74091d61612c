"""API errors as tool errors a person can act on, and the recoveries the client does alone:
expired session, moved epoch, revoked token, identity provider down at startup."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import httpx
from fastmcp import Client

from tests.conftest import AUDIENCE, LogCapture
from tests.support.api import ApiServer
from tests.support.api_stub import TenantRefusingApi
from tests.support.idp import IdP, Reply
from tests.support.mcp_calls import call, call_error
from tests.support.mcp_server import SERVICE_USER, TENANT_ID, ServerFactory, mcp_settings
from tests.support.server import ServerThread
from toolbridge_mcp.server import create_server

SESSIONS = ("POST", "/v1/sync/sessions")


async def test_not_found_names_the_entity_and_uid(client: Client[Any], idp: IdP) -> None:
    uid = str(uuid.uuid4())
    message = await call_error(client, idp, "get_task", uid=uid)
    assert f"Task {uid!r} not found" in message
    assert "list_tasks" in message


def test_building_the_server_touches_no_network(idp: IdP, api: ApiServer) -> None:
    settings = mcp_settings(api.url, idp)
    api.reset_counters()
    server = create_server(settings)
    assert server.name == "ToolBridge"
    assert idp.requests == []
    assert api.requests == 0


async def test_version_conflict_gives_the_current_version(
    client: Client[Any], idp: IdP, api: ApiServer
) -> None:
    note = await call(client, idp, "create_note", title="v1")
    await call(client, idp, "patch_note", uid=note["uid"], title="v2")
    await call(client, idp, "patch_note", uid=note["uid"], title="v3")
    api.reset_counters()
    message = await call_error(client, idp, "patch_note", uid=note["uid"], title="x", if_match=1)
    assert "Version conflict" in message
    assert "at version 3" in message
    assert "if_match=3" in message
    assert "correlation id" in message
    assert api.requests == 1  # the 412 says the version: no second GET to ask for it
    retried = await call(client, idp, "patch_note", uid=note["uid"], title="x", if_match=3)
    assert retried["version"] == 4
    message = await call_error(client, idp, "patch_note", uid=note["uid"], title="y", if_version=3)
    assert "if_match=4" in message  # today's name for it still works
    both = await call_error(
        client, idp, "update_note", uid=note["uid"], title="z", if_match=4, if_version=3
    )
    assert "disagree" in both
    assert (await call(client, idp, "get_note", uid=note["uid"]))["version"] == 4


async def test_bad_request_carries_the_api_message(client: Client[Any], idp: IdP) -> None:
    message = await call_error(client, idp, "list_notes", cursor="not-a-cursor")
    assert "rejected the request" in message
    assert "cursor is invalid" in message


async def test_wrong_tenant_secret_names_the_tenant_settings(
    start_mcp: ServerFactory, idp: IdP
) -> None:
    server = start_mcp(tenant_header_secret="not-the-tenant-secret")
    async with Client(server.url) as client:
        message = await call_error(client, idp, "list_notes")
    assert "HTTP 401" in message  # as the Go API answers every tenant-header failure
    assert "TOOLBRIDGE_TENANT_ID" in message
    assert "TOOLBRIDGE_TENANT_HEADER_SECRET" in message
    assert "TOOLBRIDGE_AUTH0_AUDIENCE" in message  # the other suspect
    assert "not-the-tenant-secret" not in message


async def test_the_go_apis_tenant_401_costs_one_token_refetch_and_names_both_suspects(
    idp: IdP, start_mcp: ServerFactory
) -> None:
    """The Go API answers a tenant-header failure with a plain-text 401 and no challenge,
    exactly as it answers a token it refuses. The client-credentials auth refetches once on
    a 401 and then cools down: calls after that must not fetch tokens in a loop."""
    refusing = TenantRefusingApi()
    with ServerThread(refusing, name="go-api-tenant-401") as go_api:
        server = start_mcp(api_url=go_api.url)
        assert len(idp.requests) == 1  # the startup token
        async with Client(server.url) as client:
            first = await call_error(client, idp, "list_notes")
            for tool in ("get_note", "create_task", "list_chats"):
                arguments = {"title": "t"} if tool == "create_task" else {}
                if tool == "get_note":
                    arguments = {"uid": str(uuid.uuid4())}
                await call_error(client, idp, tool, **arguments)
    assert len(idp.requests) == 2  # startup, then one refetch after the first 401
    # The first call: the session request, its resend with the refetched token; then one
    # request per call. Every attempt carried its own valid tenant signature.
    assert [path for _, path, _ in refusing.requests] == [SESSIONS[1]] * 5
    stamps = [headers["x-tb-timestamp"] for _, _, headers in refusing.requests]
    assert all(headers["x-tb-tenant-id"] == TENANT_ID for _, _, headers in refusing.requests)
    assert len(stamps) == 5
    assert "Unauthorized: invalid tenant headers" in first
    for setting in (
        "TOOLBRIDGE_TENANT_HEADER_SECRET",
        "TOOLBRIDGE_TENANT_ID",
        "TOOLBRIDGE_AUTH0_AUDIENCE",
    ):
        assert setting in first
    assert "issuer" in first


async def test_unreachable_api_is_reported_as_unavailable(
    start_mcp: ServerFactory, idp: IdP
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = start_mcp(api_url=url)  # nothing listens there once the socket is closed
    async with Client(server.url) as client:
        message = await call_error(client, idp, "list_tasks")
    assert f"ToolBridge API unavailable at {url}" in message
    assert "ConnectError" in message


async def test_a_base_url_that_is_not_the_api_names_the_setting(
    start_mcp: ServerFactory, idp: IdP
) -> None:
    """Pointed at another HTTP service (here an MCP server), the sessions route is what is
    missing: the error must name the URL setting, not claim the note does not exist."""
    elsewhere = start_mcp()
    server = start_mcp(api_url=elsewhere.base_url)
    async with Client(server.url) as client:
        message = await call_error(client, idp, "get_note", uid=str(uuid.uuid4()))
    assert "not found" not in message
    assert f"ToolBridge API unavailable at {elsewhere.base_url}" in message
    assert "HTTP 404" in message
    assert "TOOLBRIDGE_GO_API_BASE_URL" in message


async def test_rate_limit_says_when_to_retry(idp: IdP, start_mcp: ServerFactory) -> None:
    with ApiServer(
        f"{idp.base_url}/.well-known/jwks.json",
        f"{idp.base_url}/",
        AUDIENCE,
        tenant_secret="tenant-secret-0123456789",
        rate_limit_requests=2,
        rate_limit_window_seconds=600,
        rate_limit_burst=2,
    ) as limited:
        server = start_mcp(api_url=limited.url)
        async with Client(server.url) as client:
            # The burst of 2 (sessions have their own limit, as in the Go API)
            await call(client, idp, "list_notes")
            await call(client, idp, "list_notes")
            message = await call_error(client, idp, "list_notes")
    assert "rate limit" in message
    assert "retry in" in message
    assert limited.counter.paths[-1] == ("GET", "/v1/notes")  # a long wait is not retried


async def test_expired_session_is_replaced_and_the_call_retried_once(
    client: Client[Any], idp: IdP, api: ApiServer
) -> None:
    note = await call(client, idp, "create_note", title="before expiry")
    assert api.expire_sessions(TENANT_ID, SERVICE_USER) >= 1
    api.reset_counters()
    got = await call(client, idp, "get_note", uid=note["uid"])
    assert got["uid"] == note["uid"]
    path = ("GET", f"/v1/notes/{note['uid']}")
    assert api.counter.paths == [path, SESSIONS, path]
    api.reset_counters()
    await call(client, idp, "get_note", uid=note["uid"])
    assert api.requests == 1  # the new session is kept


async def test_concurrent_calls_on_an_expired_session_open_one_new_session(
    client: Client[Any], idp: IdP, api: ApiServer
) -> None:
    note = await call(client, idp, "create_note", title="shared")
    api.expire_sessions(TENANT_ID, SERVICE_USER)
    api.reset_counters()
    results = await asyncio.gather(
        *(call(client, idp, "get_note", uid=note["uid"]) for _ in range(8))
    )
    assert {r["uid"] for r in results} == {note["uid"]}
    assert api.counter.paths.count(SESSIONS) == 1


async def test_moved_epoch_is_adopted_and_the_call_retried_once(
    client: Client[Any], idp: IdP, api: ApiServer
) -> None:
    note = await call(client, idp, "create_note", title="before wipe elsewhere")
    api.bump_epoch(SERVICE_USER, TENANT_ID)
    api.reset_counters()
    got = await call(client, idp, "get_note", uid=note["uid"])
    assert got["uid"] == note["uid"]
    path = ("GET", f"/v1/notes/{note['uid']}")
    assert api.counter.paths == [path, path]  # no new session: the epoch is adopted
    api.reset_counters()
    await call(client, idp, "get_note", uid=note["uid"])
    assert api.requests == 1


async def test_rejected_token_is_refetched_once(
    idp: IdP, api: ApiServer, start_mcp: ServerFactory
) -> None:
    idp.script(Reply(jwt=False))  # the first token is one the API refuses (as if revoked)
    server = start_mcp()
    assert len(idp.requests) == 1
    async with Client(server.url) as client:
        note = await call(client, idp, "create_note", title="after revocation")
        await call(client, idp, "get_note", uid=note["uid"])
    assert len(idp.requests) == 2
    assert api.counter.paths[:2] == [SESSIONS, SESSIONS]  # 401, then the retry


async def test_identity_provider_down_at_startup_degrades_then_heals(
    idp: IdP, start_mcp: ServerFactory, logs: LogCapture
) -> None:
    idp.set_default(Reply(status=503, error="temporarily_unavailable"))
    server = start_mcp(token_request_deadline_seconds=0.5)  # boots anyway
    async with httpx.AsyncClient() as http:
        healthz = (await http.get(f"{server.base_url}/healthz")).json()
    assert healthz["status"] == "degraded"
    assert healthz["last_refresh_success"] is False
    assert healthz["failure_count"] >= 1
    async with Client(server.url) as client:
        health = await call(client, idp, "health_check")
        assert health["status"] == "degraded"
        message = await call_error(client, idp, "list_notes")
        assert "No access token" in message
        idp.set_default(Reply())
        await call(client, idp, "list_notes")
        health = await call(client, idp, "health_check")
    assert health["status"] == "ok"
    assert health["failure_count"] == 0


async def test_tokens_the_api_never_accepts_do_not_burn_the_idp_quota(
    idp: IdP, start_mcp: ServerFactory
) -> None:
    with ApiServer(
        f"{idp.base_url}/.well-known/jwks.json",
        f"{idp.base_url}/",
        "https://another-api.test",  # our tokens are for AUDIENCE: always 401 here
        tenant_secret="tenant-secret-0123456789",
    ) as elsewhere:
        server = start_mcp(api_url=elsewhere.url)
        async with Client(server.url) as client:
            first = await call_error(client, idp, "list_notes")
            assert len(idp.requests) == 2  # startup token, one refetch after the 401
            for _ in range(3):
                await call_error(client, idp, "list_notes")
    assert len(idp.requests) == 2
    assert "HTTP 401" in first
    assert "TOOLBRIDGE_AUTH0_AUDIENCE" in first
