"""The seams of the token split, each used as the next feature will use it: a shared token
cache (a fleet), another grant (token exchange), the client authentication classes, the
retry policy, and stamina's retries routed into our log."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import httpx
import pytest
import stamina
from pydantic import SecretStr

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET, NASTY_SECRET, LogCapture
from tests.support.clock import FakeClock
from tests.support.idp import IdP
from toolbridge_common.logs import log_retry
from toolbridge_mcp.oauth import (
    ClientCredentialsGrant,
    ClientSecretBasic,
    ClientSecretPost,
    RetryPolicy,
    TokenClient,
    TokenEndpoint,
    TokenError,
)
from toolbridge_mcp.tokens import CachedToken, MemoryTokenCache, TokenManager


def _manager(
    idp: IdP, clock: FakeClock, cache: MemoryTokenCache | None = None, **options: object
) -> TokenManager:
    return TokenManager.client_credentials(
        CLIENT_ID,
        CLIENT_SECRET,
        audience=AUDIENCE,
        token_url=idp.token_url,
        retry=RetryPolicy(wait_initial=0.01, wait_max=0.05, deadline=5.0),
        cache=cache,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


async def test_a_shared_cache_spares_the_second_manager_a_token_request(
    idp: IdP, clock: FakeClock, logs: LogCapture
) -> None:
    """Two managers (two replicas, or a server restarted in process) on one cache: the
    second starts with the first one's token instead of asking the identity provider."""
    cache = MemoryTokenCache()
    async with _manager(idp, clock, cache) as first, _manager(idp, clock, cache) as second:
        token = await first.get_token()
        clock.advance(600)
        assert await second.get_token() == token
        assert len(idp.requests) == 1
        assert second.stats.refresh_count == 0
        assert second.stats.last_refresh_success is True
        assert second.expires_at is not None
        assert first.expires_at is not None
        assert abs((second.expires_at - first.expires_at).total_seconds()) < 2
    assert any("taken from the token cache" in m for m in logs.messages("INFO"))


async def test_a_cached_token_due_for_refresh_is_not_taken(idp: IdP, clock: FakeClock) -> None:
    cache = MemoryTokenCache()
    async with _manager(idp, clock, cache) as first, _manager(idp, clock, cache) as second:
        old = await first.get_token()
        clock.advance(3600 - 299)  # inside the 300 s refresh window
        assert await second.get_token() != old
        assert len(idp.requests) == 2


async def test_a_rejected_token_is_not_taken_back_from_the_cache(
    idp: IdP, clock: FakeClock
) -> None:
    cache = MemoryTokenCache()
    async with _manager(idp, clock, cache) as manager:
        old = await manager.get_token()
        assert manager.invalidate(old)
        new = await manager.get_token()
        assert new != old
        assert len(idp.requests) == 2
        stored = await cache.get(manager._source.cache_key)
        assert stored is not None
        assert stored.value == new


class _BrokenCache:
    """A shared cache that is down (Redis unreachable)."""

    async def get(self, key: str) -> CachedToken | None:
        raise ConnectionError("cache down")

    async def put(self, key: str, token: CachedToken) -> None:
        raise ConnectionError("cache down")


async def test_a_broken_cache_only_costs_a_warning(
    idp: IdP, clock: FakeClock, logs: LogCapture
) -> None:
    async with TokenManager.client_credentials(
        CLIENT_ID,
        CLIENT_SECRET,
        audience=AUDIENCE,
        token_url=idp.token_url,
        cache=_BrokenCache(),
        clock=clock,
    ) as manager:
        assert await manager.get_token() == idp.issued[0]
    warnings = logs.messages("WARNING")
    assert any("Token cache unavailable (ConnectionError)" in w for w in warnings)


def test_cache_key_names_the_request_not_its_secrets() -> None:
    def key(audience: str, scope: str | None = None, secret: str = CLIENT_SECRET) -> str:
        return TokenEndpoint.client_credentials(
            CLIENT_ID, secret, token_url="https://idp/t", audience=audience, scope=scope
        ).cache_key

    assert key(audience="a") == key(audience="a", secret="another-secret")
    assert key(audience="a") != key(audience="b")
    assert key(audience="a") != key(audience="a", scope="read")
    assert CLIENT_SECRET not in key(audience="a")
    assert CLIENT_ID not in key(audience="a")


@dataclass(frozen=True, slots=True)
class _ExchangeGrant:
    """An RFC 8693 token exchange, as the next grant will be: a Grant is its fields."""

    grant_type: ClassVar[str] = "urn:ietf:params:oauth:grant-type:token-exchange"
    display_name: ClassVar[str] = "Token Exchange"

    subject_token: str
    audience: str | None = None

    def fields(self) -> dict[str, str]:
        return {
            "grant_type": self.grant_type,
            "subject_token": self.subject_token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "audience": self.audience or "",
        }

    def secrets(self) -> tuple[str, ...]:
        return (self.subject_token,)


async def test_another_grant_goes_through_the_same_endpoint_and_redaction() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return httpx.Response(200, json={"access_token": "exchanged", "expires_in": 60})
        description = "subject token user-token-123 is expired"
        return httpx.Response(
            400, json={"error": "invalid_grant", "error_description": description}
        )

    endpoint = TokenEndpoint(
        token_url="https://idp.test/oauth/token",
        grant=_ExchangeGrant("user-token-123", audience=AUDIENCE),
        client_auth=ClientSecretBasic(CLIENT_ID, SecretStr(CLIENT_SECRET)),
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = TokenClient(endpoint, http_client=http)
        issued = await client.fetch()
        with pytest.raises(TokenError) as info:
            await client.fetch()
    assert issued.value == "exchanged"
    assert issued.lifetime == 60
    body = dict(httpx.QueryParams(seen[0].content.decode()))
    assert body["grant_type"] == _ExchangeGrant.grant_type
    assert body["subject_token"] == "user-token-123"
    assert "client_secret" not in body
    assert seen[0].headers["authorization"].startswith("Basic ")
    assert "user-token-123" not in str(info.value)
    assert "enable the Token Exchange grant" in str(info.value)


def test_client_authentication_strategies() -> None:
    url = "https://idp.test/oauth/token"
    post = ClientSecretPost(CLIENT_ID, SecretStr(NASTY_SECRET)).credentials(url)
    assert post.fields == {"client_id": CLIENT_ID, "client_secret": NASTY_SECRET}
    assert post.headers == {}
    basic = ClientSecretBasic(CLIENT_ID, SecretStr(NASTY_SECRET)).credentials(url)
    assert basic.fields == {}
    encoded = basic.headers["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(encoded).decode() == f"{CLIENT_ID}:p%40ss%2Bw%2Frd%25%26%3D%3Ax"
    assert NASTY_SECRET not in repr(ClientSecretBasic(CLIENT_ID, SecretStr(NASTY_SECRET)))


def test_client_credentials_grant_sends_only_what_is_set() -> None:
    assert ClientCredentialsGrant().fields() == {"grant_type": "client_credentials"}
    assert ClientCredentialsGrant(audience="a", resource="r").fields() == {
        "grant_type": "client_credentials",
        "audience": "a",
        "resource": "r",
    }


async def test_retry_policy_retries_what_may_heal_and_stops_at_what_cannot() -> None:
    policy = RetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02, deadline=5.0)
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TokenError("503", retryable=True)
        return "ok"

    assert await policy.call(flaky) == "ok"
    assert len(calls) == 3

    async def wrong_secret() -> str:
        calls.append(1)
        raise TokenError("invalid_client")

    calls.clear()
    with pytest.raises(TokenError, match="invalid_client"):
        await policy.call(wrong_secret)
    assert len(calls) == 1


async def test_retry_policy_deadline_bounds_everything() -> None:
    policy = RetryPolicy(attempts=10, deadline=0.2)

    async def hangs() -> str:
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(TimeoutError):
        await policy.call(hangs)


def test_configure_logging_routes_stamina_retries_to_our_hook() -> None:
    """It used to switch stamina's instrumentation off process-wide; now it installs ours
    (in a fresh interpreter: configure_logging replaces every sink of this one)."""
    probe = (
        "import stamina.instrumentation as i; "
        "from toolbridge_common.logs import configure_logging, log_retry; "
        "configure_logging(); print(i.get_on_retry_hooks() == (log_retry,))"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "True"


async def test_stamina_retries_are_logged_through_loguru_without_arguments(
    logs: LogCapture,
) -> None:
    """One debug line per scheduled retry, naming what and after which error type; never
    the arguments or the error's message, where a secret may be."""
    previous = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([log_retry])
    try:
        calls: list[int] = []

        @stamina.retry(on=TokenError, attempts=2, wait_initial=0.01, wait_jitter=0)
        async def flaky(secret: str) -> str:
            calls.append(1)
            if len(calls) == 1:
                raise TokenError(f"failed with {secret}", retryable=True)
            return "ok"

        assert await flaky(NASTY_SECRET) == "ok"
    finally:
        stamina.instrumentation.set_on_retry_hooks(previous)
    retries = [m for m in logs.messages("DEBUG") if m.startswith("Retry 1 of ")]
    assert len(retries) == 1
    assert "flaky" in retries[0]
    assert "after TokenError" in retries[0]
    assert not any("failed with" in line for line in logs.lines)
