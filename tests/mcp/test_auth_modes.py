"""The three auth modes over streamable HTTP: auth0 (elsewhere), static and per-user."""

from __future__ import annotations

import time

import jwt
from fastmcp import Client

from tests.conftest import LogCapture
from tests.support.api import ApiServer
from tests.support.idp import IdP
from tests.support.mcp_calls import call, call_error, mint_token
from tests.support.mcp_server import ServerFactory

SESSIONS = ("POST", "/v1/sync/sessions")


async def test_static_token_works_and_is_reported_deprecated_once(
    idp: IdP, api: ApiServer, start_mcp: ServerFactory, logs: LogCapture
) -> None:
    server = start_mcp("static", jwt_token=mint_token(idp))
    async with Client(server.url) as client:
        note = await call(client, idp, "create_note", title="static")
        await call(client, idp, "get_note", uid=note["uid"])
        health = await call(client, idp, "health_check")
    assert health["auth_mode"] == "static"
    assert health["status"] == "ok"
    assert "deprecated" in health["detail"]
    assert health["token_expires_in_seconds"] > 3000  # read from the JWT's exp
    warnings = [m for m in logs.messages("WARNING") if "deprecated" in m]
    assert len(warnings) == 1
    assert len(idp.requests) == 1  # only the test's own mint: the server never asks


async def test_expired_static_token_makes_health_degraded(
    idp: IdP, start_mcp: ServerFactory
) -> None:
    expired = jwt.encode({"sub": "someone", "exp": int(time.time()) - 60}, "k" * 32)
    server = start_mcp("static", jwt_token=expired)
    async with Client(server.url) as client:
        health = await call(client, idp, "health_check")
    assert health["status"] == "degraded"
    assert health["token_expires_in_seconds"] <= 0
    assert "TOOLBRIDGE_JWT_TOKEN has expired" in health["detail"]
    assert expired not in str(health)


async def test_rejected_static_token_names_the_setting(idp: IdP, start_mcp: ServerFactory) -> None:
    server = start_mcp("static", jwt_token="not-a-jwt")
    async with Client(server.url) as client:
        message = await call_error(client, idp, "list_notes")
    assert "HTTP 401" in message
    assert "TOOLBRIDGE_JWT_TOKEN" in message
    assert "not-a-jwt" not in message


async def test_per_user_mode_forwards_each_callers_token(
    idp: IdP, api: ApiServer, start_mcp: ServerFactory, logs: LogCapture
) -> None:
    server = start_mcp("passthrough")
    alice = mint_token(idp)
    bob = mint_token(idp, "nasty-client", "p@ss+w/rd%&=:x")
    api.reset_counters()
    async with Client(server.url, auth=alice) as as_alice, Client(server.url, auth=bob) as as_bob:
        mine = await call(as_alice, idp, "create_note", title="alice's")
        theirs = await call(as_bob, idp, "create_note", title="bob's")
        alice_sees = await call(as_alice, idp, "list_notes", limit=1000)
        bob_sees = await call(as_bob, idp, "list_notes", limit=1000)
        message = await call_error(as_bob, idp, "get_note", uid=mine["uid"])
        health = await call(as_alice, idp, "health_check")
    assert mine["uid"] in [n["uid"] for n in alice_sees["items"]]
    assert theirs["uid"] not in [n["uid"] for n in alice_sees["items"]]
    assert mine["uid"] not in [n["uid"] for n in bob_sees["items"]]
    assert "not found" in message
    assert api.counter.paths.count(SESSIONS) == 2  # one session per user, reused
    assert health["auth_mode"] == "passthrough"
    assert "per-user" in health["detail"]
    assert any("per-user mode" in m for m in logs.messages("INFO"))


async def test_per_user_mode_without_a_token_says_what_to_configure(
    idp: IdP, start_mcp: ServerFactory
) -> None:
    server = start_mcp("passthrough")
    async with Client(server.url) as anonymous:
        message = await call_error(anonymous, idp, "list_notes")
    assert (
        "Missing authentication. Configure TOOLBRIDGE_AUTH0_CLIENT_ID or TOOLBRIDGE_JWT_TOKEN."
        in message
    )
    assert "Authorization: Bearer" in message
