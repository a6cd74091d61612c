"""Per-user mode end to end, as the MCP authorization spec wants it: real MCP clients sign
their users in (the MCP SDK's ``OAuthClientProvider``: RFC 9728 discovery, RFC 8414 metadata,
dynamic registration, authorization code with PKCE and ``resource``, the scope the server
asks for), the MCP server accepts only tokens issued for itself, and calls the API with a
token exchanged (RFC 8693) for each user — never the user's own, as the API itself records.

PKCE with a wrong verifier, a reused code and a wrong redirect URI are the issuer's to refuse:
``tests/dev_issuer/test_authorization_code.py`` covers them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastmcp import Client

from tests.conftest import LogCapture
from tests.support.api import ApiServer
from tests.support.jwks import leaked
from tests.support.mcp_calls import result_text
from tests.support.mcp_server import TENANT_ID
from tests.support.per_user import (
    API_AUDIENCE,
    EXCHANGE_PATH,
    OwnUrlMcpServer,
    PerUserStack,
    oauth_client,
    start_stack,
    wait_until,
)
from tests.support.redis_server import (
    SHARED_REDIS_URL,
    delete_prefixed,
    redis_problem,
    unique_prefix,
)
from toolbridge_api.security import Principal
from toolbridge_mcp.auth.modes import exchange


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PerUserStack]:
    yield from start_stack(tmp_path_factory.mktemp("per-user"))


@pytest.fixture
def fresh(stack: PerUserStack, logs: LogCapture) -> Iterator[PerUserStack]:
    """The stack with what the API saw forgotten; no token of the test in its logs."""
    stack.seen.clear()
    stack.api.reset_counters()
    stack.tokens.clear()
    yield stack
    found = leaked(logs.text(), [*stack.tokens, *stack.api_authorizations()])
    assert not found, f"{len(found)} token(s) appeared in the logs"


async def ok(client: Client[Any], tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert not result.is_error, f"{tool} failed: {result_text(result)}"
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def titles(api: ApiServer, user: str) -> list[str]:
    """The titles of a user's notes, as the API stored them."""
    page = api.run(
        lambda store: store.list_items(
            Principal(TENANT_ID, user), "notes", after=None, limit=1000, include_deleted=True
        )
    )
    return [str(item.payload.get("title")) for item in page]


async def test_the_mcp_sdk_signs_two_users_in_and_each_sees_only_their_data(
    fresh: PerUserStack,
) -> None:
    stack = fresh
    tag = uuid.uuid4().hex
    alice_auth, alice_storage, alice_sign_in = oauth_client(stack.resource, "alice")
    bob_auth, bob_storage, _ = oauth_client(stack.resource, "bob")
    async with Client(stack.resource, auth=alice_auth) as alice:
        mine = await ok(alice, "create_note", title=f"alice's {tag}")
        async with Client(stack.resource, auth=bob_auth) as bob:
            theirs = await ok(bob, "create_note", title=f"bob's {tag}")
            bob_sees = await ok(bob, "list_notes", limit=100)
            refused = await bob.call_tool("get_note", {"uid": mine["uid"]}, raise_on_error=False)
        alice_sees = await ok(alice, "list_notes", limit=100)
        health = await ok(alice, "health_check")

    assert mine["uid"] in {n["uid"] for n in alice_sees["items"]}
    assert theirs["uid"] not in {n["uid"] for n in alice_sees["items"]}
    assert mine["uid"] not in {n["uid"] for n in bob_sees["items"]}
    assert refused.is_error
    assert "not found" in result_text(refused)
    assert f"alice's {tag}" in titles(stack.api, "alice")
    assert f"bob's {tag}" in titles(stack.api, "bob")
    assert f"bob's {tag}" not in titles(stack.api, "alice")
    assert health["auth_mode"] == "token_exchange"
    assert health["status"] == "ok"

    # What the SDK did: one sign-in, for this resource, with the scope the server asked for.
    (opened,) = alice_sign_in.opened
    assert f"resource={stack.resource.replace(':', '%3A').replace('/', '%2F')}" in opened
    assert "code_challenge_method=S256" in opened
    assert alice_storage.tokens is not None
    assert bob_storage.tokens is not None
    user_tokens = [alice_storage.tokens.access_token, bob_storage.tokens.access_token]
    stack.tokens.extend(user_tokens)
    claims = jwt.decode(user_tokens[0], options={"verify_signature": False})
    assert claims["aud"] == stack.resource
    assert "toolbridge" in claims["scope"].split()

    stack.assert_only_api_tokens_reached_the_api(user_tokens)
    subjects = {
        jwt.decode(value.split()[1], options={"verify_signature": False})["sub"]
        for value in stack.api_authorizations()
    }
    assert subjects == {"alice", "bob"}
    assert stack.exchanges() == 2  # one per user, reused for all their calls
    sessions = [p for p in stack.api.counter.paths if p == ("POST", "/v1/sync/sessions")]
    assert len(sessions) == 2  # one sync session per user


async def test_exchanged_tokens_are_reused_until_near_expiry(fresh: PerUserStack) -> None:
    """A 6 s sign-in caps the API token at 6 s too; it is reused for every call until its
    refresh time (half of it), then exchanged again ahead of expiry while still served."""
    stack = fresh
    token = stack.mint("carol", lifetime=6)
    started = time.monotonic()
    async with Client(stack.resource, auth=token) as carol:
        for round_no in range(6):
            await ok(carol, "create_note", title=f"round {round_no}")
        assert time.monotonic() - started < 2.5, "too slow to test the reuse"
        assert stack.exchanges() == 1
        first = {value for value in stack.api_authorizations()}
        assert len(first) == 1  # the same API token on every call

        await asyncio.sleep(max(0.0, started + 3.5 - time.monotonic()))
        await ok(carol, "list_notes")
        wait_until(lambda: stack.exchanges() == 2)
        await ok(carol, "list_notes")
    assert len(set(stack.api_authorizations())) == 2
    stack.assert_only_api_tokens_reached_the_api([token])


@pytest.mark.parametrize("calls", [8])
async def test_concurrent_first_calls_of_one_user_share_one_exchange(
    fresh: PerUserStack, calls: int
) -> None:
    stack = fresh
    token = stack.mint("dave")
    async with Client(stack.resource, auth=token) as dave:
        await asyncio.gather(*(ok(dave, "list_tasks") for _ in range(calls)))
    assert stack.exchanges() == 1


@pytest.fixture
def scoped_server(fresh: PerUserStack) -> Iterator[OwnUrlMcpServer]:
    """Another MCP server of the stack's, by the stack's resource (its own URL aside)."""
    server = OwnUrlMcpServer()
    yield server
    server.stop()


async def test_a_misconfigured_exchange_is_a_tool_error_naming_the_setting(
    fresh: PerUserStack, scoped_server: OwnUrlMcpServer
) -> None:
    stack = fresh
    scoped_server.serve(
        stack.settings(public_url=stack.mcp.base_url, oauth_exchange_audience="https://not-api")
    )
    token = stack.mint("erin")
    async with Client(scoped_server.url, auth=token) as erin:
        result = await erin.call_tool("list_notes", {}, raise_on_error=False)
    message = result_text(result)
    assert result.is_error
    assert f"Token exchange at {stack.api.url}{EXCHANGE_PATH} failed: HTTP 400" in message
    assert "invalid_target" in message
    assert "TOOLBRIDGE_OAUTH_EXCHANGE_AUDIENCE" in message
    assert token not in message
    assert stack.api_authorizations() == []  # nothing reached the data routes


async def test_exchange_at_an_endpoint_without_it_says_how_to_enable_it(
    fresh: PerUserStack, scoped_server: OwnUrlMcpServer, tmp_path: Path
) -> None:
    stack = fresh
    with ApiServer(
        stack.issuer.jwks_url, stack.issuer.issuer_url, API_AUDIENCE, tenant_secret=None
    ) as plain:
        scoped_server.serve(
            stack.settings(
                public_url=stack.mcp.base_url,
                go_api_base_url=plain.url,
                tenant_id=None,
                tenant_header_secret=None,
            )
        )
        async with Client(scoped_server.url, auth=stack.mint("frank")) as frank:
            result = await frank.call_tool("list_notes", {}, raise_on_error=False)
        scoped_server.stop()
    assert result.is_error
    assert "TOOLBRIDGE_API_EXCHANGE_SUBJECT_AUDIENCE" in result_text(result)


async def test_many_users_are_kept_within_a_bound(
    fresh: PerUserStack, scoped_server: OwnUrlMcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond the bound the least recently active user's exchanged token is dropped (and
    exchanged again on their next call); nothing else changes for them."""
    stack = fresh
    monkeypatch.setattr(exchange, "MAX_USERS", 2)
    scoped_server.serve(stack.settings(public_url=stack.mcp.base_url))
    tokens = {user: stack.mint(user) for user in ("u1", "u2", "u3")}
    for user in ["u1", "u2", "u3", "u1", "u1"]:
        async with Client(scoped_server.url, auth=tokens[user]) as client:
            await ok(client, "list_notes")
            health = await ok(client, "health_check")
    assert "(2 users cached)" in health["detail"]
    assert stack.exchanges() == 4  # u1 again after u3 pushed it out, then reused


async def test_replicas_sharing_redis_exchange_once_per_user(fresh: PerUserStack) -> None:
    """Two replicas behind one public URL, one Redis: a user's exchanged token is shared, so
    the second replica calls the API with it instead of exchanging again."""
    if (problem := redis_problem(SHARED_REDIS_URL)) is not None:
        pytest.skip(problem)
    stack, prefix = fresh, unique_prefix()
    fleet = {
        "public_url": stack.mcp.base_url,
        "redis_url": SHARED_REDIS_URL,
        "redis_key_prefix": prefix,
        "token_cache_key": "fleet-test-key-0123456789abcdef0123",
    }
    replicas = [OwnUrlMcpServer(), OwnUrlMcpServer()]
    try:
        for replica in replicas:
            replica.serve(stack.settings(**fleet))
        token = stack.mint("gina")
        for replica in replicas:
            async with Client(replica.url, auth=token) as gina:
                await ok(gina, "list_notes")
                health = await ok(gina, "health_check")
            assert health["token_cache"]["backend"] == "redis"
            assert health["token_cache"]["shared"] is True
    finally:
        for replica in replicas:
            replica.stop()
        delete_prefixed(SHARED_REDIS_URL, prefix)
    assert stack.exchanges() == 1
    assert len(set(stack.api_authorizations())) == 1
