"""The token lifecycle on the real clock, against a real token endpoint on 127.0.0.1: the
refresh timer of an idle server, identity-provider outages, the one cool-down after a 429, a
cold caller that keeps trying, and shutdown. Deadlines here are functional (how long a caller
may wait before its call counts as failed); no test asserts speed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET, LogCapture
from tests.support.clock import settle
from tests.support.idp import IdP, Reply
from toolbridge_mcp.auth.modes import ClientCredentialsAuth
from toolbridge_mcp.config import load_settings
from toolbridge_mcp.oauth import RetryPolicy, TokenClient, TokenEndpoint, TokenError
from toolbridge_mcp.tokens import RefreshSchedule, TokenManager

Factory = Callable[..., TokenManager]


@pytest.fixture
async def real_manager(idp: IdP) -> AsyncIterator[Factory]:
    """Managers on the real monotonic clock with fast retries and a short caller deadline
    (``deadline``): a call that waits longer on the identity provider fails."""
    made: list[TokenManager] = []

    def factory(*, deadline: float = 0.5, **retry: Any) -> TokenManager:
        policy = RetryPolicy(
            wait_initial=retry.pop("wait_initial", 0.01),
            wait_max=retry.pop("wait_max", 0.05),
            deadline=deadline,
            **retry,
        )
        manager = TokenManager.client_credentials(
            CLIENT_ID,
            CLIENT_SECRET,
            audience=AUDIENCE,
            token_url=idp.token_url,
            retry=policy,
            schedule=RefreshSchedule(),
        )
        made.append(manager)
        return manager

    yield factory
    for manager in made:
        await manager.close()


async def test_an_idle_server_always_holds_a_valid_token(idp: IdP) -> None:
    """No calls at all for three token lifetimes: the timer set when each token arrives
    renews it at half-life, so the server holds a valid token throughout and a call after
    the quiet spell is served without a token request; after ``aclose`` nothing is sent."""
    idp.set_default(Reply(expires_in=2))
    settings = load_settings(
        auth0_client_id=CLIENT_ID,
        auth0_client_secret=CLIENT_SECRET,
        auth0_token_url=idp.token_url,
        auth0_audience=AUDIENCE,
        _env_file=None,
    )
    auth = ClientCredentialsAuth(settings)
    await auth.start()
    manager = auth.manager
    assert manager is not None
    try:
        loop = asyncio.get_running_loop()
        quiet_until = loop.time() + 6
        samples = 0
        while loop.time() < quiet_until:
            await asyncio.sleep(0.1)
            health = auth.health()
            assert health.status == "ok", health.detail
            assert health.token_expires_at is not None
            assert health.token_expires_at > datetime.now(UTC)
            samples += 1
        assert samples > 20
        assert manager.stats.refresh_count >= 3, "renewed with no call to ask for it"
        requests = len(idp.requests)
        assert await auth.get_auth_header() == f"Bearer {idp.issued[-1]}"
        assert len(idp.requests) == requests, "the call after the quiet spell sent nothing"
        assert "refreshed on a timer" in auth.health().detail
        assert "Auth0" not in auth.health().detail, "no Auth0 here: a token URL is set"
    finally:
        await auth.aclose()
    assert manager.next_refresh_at is None
    requests = len(idp.requests)
    await asyncio.sleep(1.5)
    assert len(idp.requests) == requests, "the timer stopped with the server"


async def test_an_outage_of_forty_percent_of_the_lifetime_fails_no_call(
    idp: IdP, real_manager: Factory
) -> None:
    """3 s tokens, refreshed at 1.5 s; the identity provider answers 503 from 1.3 s to
    2.5 s, covering the refresh time. Callers calling every 20 ms, each giving up after
    0.5 s without a token, all succeed: the current token is served while the timer retries,
    and the retries come close enough together to catch the identity provider's return
    before the token's end."""
    idp.set_default(Reply(expires_in=3))
    manager = real_manager(deadline=0.5)
    started = time.monotonic()
    await manager.start()
    down = Reply(status=503, error="temporarily_unavailable")
    failures: list[str] = []
    calls = 0

    async def outage() -> None:
        await asyncio.sleep(max(0.0, started + 1.3 - time.monotonic()))
        idp.set_default(down)
        await asyncio.sleep(max(0.0, started + 2.5 - time.monotonic()))
        idp.set_default(Reply(expires_in=3))

    async def caller() -> None:
        nonlocal calls
        while time.monotonic() < started + 5.5:
            calls += 1
            try:
                await manager.get_token()
            except TokenError as exc:
                failures.append(str(exc))
            await asyncio.sleep(0.02)

    await asyncio.gather(outage(), caller(), caller())
    assert failures == []
    assert calls > 100
    assert manager.stats.failures_total >= 1, "the outage really met a refresh"
    assert manager.stats.refresh_count >= 3


async def test_a_failed_refresh_is_retried_until_the_token_ends_then_recovers(
    idp: IdP, real_manager: Factory
) -> None:
    """An outage longer than the token's remaining life: the timer keeps retrying after
    the token has expired, so once the identity provider is back an idle server has a
    token again without any call."""
    idp.set_default(Reply(expires_in=1))
    manager = real_manager(deadline=0.3)
    await manager.start()
    idp.set_default(Reply(status=503))
    await asyncio.sleep(1.5)
    assert manager.expires_at is not None
    assert manager.expires_at < datetime.now(UTC)
    idp.set_default(Reply(expires_in=60))
    async with asyncio.timeout(10):
        await settle(lambda: manager.stats.last_refresh_success is True, limit=10)
    assert manager.expires_at is not None
    assert manager.expires_at > datetime.now(UTC)


async def test_no_request_from_any_caller_before_the_retry_after(
    idp: IdP, real_manager: Factory
) -> None:
    """A 429 saying ``Retry-After: 2`` to a caller with a 0.5 s deadline: it fails, and so
    does every caller during the next two seconds, at once and without a request; neither
    they nor the refresh timer ask again before the two seconds are over."""
    idp.script(Reply(status=429, error="too_many_requests", retry_after="2"))
    manager = real_manager(deadline=0.5)
    first = await asyncio.gather(*(manager.get_token() for _ in range(20)), return_exceptions=True)
    assert all(isinstance(result, TokenError) for result in first)
    assert len(idp.requests) == 1
    loop = asyncio.get_running_loop()
    refused_at = loop.time()
    while loop.time() < refused_at + 1.5:
        with pytest.raises(TokenError, match="rate limiting") as info:
            await manager.get_token()
        assert "no new token request for" in str(info.value)
        await asyncio.sleep(0.1)
    assert len(idp.requests) == 1
    async with asyncio.timeout(5):
        while True:
            try:
                token = await manager.get_token()
                break
            except TokenError:
                await asyncio.sleep(0.05)
    assert token == idp.issued[0]
    first_seen, second_seen = idp.requests[0].at, idp.requests[1].at
    assert second_seen - first_seen >= 2.0


async def test_a_retry_after_within_the_deadline_is_waited_out_once_for_all(
    idp: IdP, real_manager: Factory
) -> None:
    """``Retry-After: 1`` with a 3 s deadline: the callers wait together on the one request
    in flight, which asks again only after the second is over."""
    idp.script(Reply(status=429, error="too_many_requests", retry_after="1"))
    manager = real_manager(deadline=3.0)
    tokens = await asyncio.gather(*(manager.get_token() for _ in range(50)))
    assert set(tokens) == {idp.issued[0]}
    assert len(idp.requests) == 2
    assert idp.requests[1].at - idp.requests[0].at >= 1.0


async def test_a_429_on_a_background_refresh_holds_every_caller_back(
    idp: IdP, real_manager: Factory
) -> None:
    """The refresh at half-life meets ``Retry-After: 1``: callers keep the current token
    and no request goes out before the second is over."""
    idp.set_default(Reply(expires_in=3))
    manager = real_manager(deadline=0.5)
    old = await manager.get_token()
    idp.script(Reply(status=429, error="too_many_requests", retry_after="1"))
    async with asyncio.timeout(5):
        await settle(lambda: len(idp.requests) == 2)
        while len(idp.requests) < 3:
            assert await manager.get_token() == old
            await asyncio.sleep(0.01)
    assert idp.requests[2].at - idp.requests[1].at >= 1.0
    await settle(lambda: manager.stats.refresh_count == 2)
    assert await manager.get_token() == idp.issued[1] != old


async def test_a_cold_caller_keeps_trying_within_its_deadline(
    idp: IdP, real_manager: Factory
) -> None:
    """The identity provider fails twelve times in a row: a caller with no token and a 5 s
    deadline gets a token from the thirteenth attempt instead of failing after a first
    burst of four."""
    idp.script(*(Reply(status=503) for _ in range(12)))
    manager = real_manager(deadline=5.0, wait_initial=0.02, wait_max=0.1)
    assert await manager.get_token() == idp.issued[0]
    assert len(idp.requests) == 13


async def test_a_caller_arriving_after_a_failure_waits_for_the_cool_down(
    idp: IdP, real_manager: Factory
) -> None:
    """A first caller's attempts end in a failure; a second caller just after it does not
    fail on the spot: it waits the short cool-down and tries again, within its deadline."""
    idp.script(Reply(status=503), Reply(status=503))
    manager = real_manager(deadline=2.0, attempts=2)
    with pytest.raises(TokenError, match="HTTP 503"):
        await manager.get_token()
    assert await manager.get_token() == idp.issued[0]
    assert idp.requests[2].at - idp.requests[1].at > 0


async def test_close_cancels_the_refresh_timer(idp: IdP, real_manager: Factory) -> None:
    idp.set_default(Reply(expires_in=1))
    manager = real_manager()
    await manager.get_token()
    assert manager.next_refresh_at is not None
    await manager.close()
    assert manager.next_refresh_at is None
    await asyncio.sleep(1.2)
    assert len(idp.requests) == 1


async def test_the_refresh_log_says_when_and_why(idp: IdP, logs: LogCapture) -> None:
    """An identity provider's ``refresh_in`` is used and said so."""
    idp.set_default(Reply(fields={"refresh_in": 1200}))
    async with TokenManager.client_credentials(
        CLIENT_ID, CLIENT_SECRET, audience=AUDIENCE, token_url=idp.token_url
    ) as manager:
        await manager.get_token()
    line = next(m for m in logs.messages("INFO") if m.startswith("Access token refreshed"))
    assert "next refresh in 1200s (the identity provider's refresh_in)" in line


async def test_without_the_timer_renewal_waits_for_a_call(idp: IdP) -> None:
    """``timer=False`` (tokens exchanged for a user who may not come back): nothing is sent
    while no call comes; the next call renews as before."""
    idp.set_default(Reply(expires_in=1))
    endpoint = TokenEndpoint.client_credentials(
        CLIENT_ID, CLIENT_SECRET, token_url=idp.token_url, audience=AUDIENCE
    )
    async with TokenManager(TokenClient(endpoint), timer=False) as manager:
        first = await manager.get_token()
        assert manager.next_refresh_at is None
        await asyncio.sleep(1.2)
        assert len(idp.requests) == 1
        assert await manager.get_token() != first
