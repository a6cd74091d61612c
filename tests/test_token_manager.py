"""TokenManager against a real token endpoint on 127.0.0.1, fault by fault."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import jwt
import pytest

from tests.conftest import (
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    NASTY_SECRET,
    LogCapture,
    ManagerFactory,
)
from tests.support.clock import FakeClock, settle
from tests.support.idp import IdP, Reply
from toolbridge_mcp.auth import token_manager as tm_module
from toolbridge_mcp.auth.token_manager import (
    get_access_token,
    init_token_manager,
    shutdown_token_manager,
)
from toolbridge_mcp.config import load_settings
from toolbridge_mcp.oauth import RetryPolicy, TokenError, parse_retry_after
from toolbridge_mcp.tokens import TokenManager, schedule
from toolbridge_mcp.tokens.manager import FETCH_TASK_NAME


async def test_first_call_fetches_then_cache_serves(make_manager: ManagerFactory, idp: IdP) -> None:
    manager = make_manager()
    first = await manager.get_token()
    second = await manager.get_token()
    assert first == second == idp.issued[0]
    assert len(idp.requests) == 1
    seen = idp.requests[0]
    assert seen.content_type.startswith("application/x-www-form-urlencoded")
    assert seen.form["grant_type"] == "client_credentials"
    assert seen.form["client_id"] == CLIENT_ID
    assert seen.form["client_secret"] == CLIENT_SECRET
    assert seen.form["audience"] == AUDIENCE
    assert seen.auth_method == "client_secret_post"
    claims = jwt.decode(first, idp.public_key, algorithms=["RS256"], audience=AUDIENCE)
    assert claims["sub"] == f"{CLIENT_ID}@clients"


async def test_auth0_domain_mode_posts_json_over_https(tls_idp: IdP, clock: FakeClock) -> None:
    async with (
        httpx.AsyncClient(verify=tls_idp.ssl_context()) as http,
        TokenManager.client_credentials(
            CLIENT_ID, CLIENT_SECRET, tls_idp.domain, AUDIENCE, http_client=http, clock=clock
        ) as manager,
    ):
        token = await manager.get_token()
        assert manager.token_url == f"https://{tls_idp.domain}/oauth/token"
    assert token == tls_idp.issued[0]
    seen = tls_idp.requests[0]
    assert seen.path == "/oauth/token"
    assert seen.content_type.startswith("application/json")
    assert seen.form == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "audience": AUDIENCE,
    }


async def test_injected_http_client_is_not_closed(tls_idp: IdP, clock: FakeClock) -> None:
    async with httpx.AsyncClient(verify=tls_idp.ssl_context()) as http:
        manager = TokenManager.client_credentials(
            CLIENT_ID, CLIENT_SECRET, tls_idp.domain, AUDIENCE, http_client=http
        )
        await manager.get_token()
        await manager.close()
        assert not http.is_closed


async def test_client_secret_basic_form_encodes_id_and_secret(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    manager = make_manager(
        client_id="nasty-client", client_secret=NASTY_SECRET, auth_method="client_secret_basic"
    )
    assert await manager.get_token() == idp.issued[0]
    seen = idp.requests[0]
    assert seen.auth_method == "client_secret_basic"
    assert seen.client_id == "nasty-client"
    assert "client_secret" not in seen.form
    scheme, _, encoded = seen.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "nasty-client:p%40ss%2Bw%2Frd%25%26%3D%3Ax"


async def test_scope_and_resource_are_sent(make_manager: ManagerFactory, idp: IdP) -> None:
    manager = make_manager(audience=None, scope="read:notes", resource=AUDIENCE)
    await manager.get_token()
    form = idp.requests[0].form
    assert form["scope"] == "read:notes"
    assert form["resource"] == AUDIENCE
    assert "audience" not in form
    assert manager.scope == "read:notes"


async def test_concurrent_cold_callers_cause_one_request(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    manager = make_manager()
    idp.script(Reply(delay=0.2))
    tokens = await asyncio.gather(*(manager.get_token() for _ in range(1000)))
    assert set(tokens) == {idp.issued[0]}
    assert len(idp.requests) == 1


async def test_refresh_runs_ahead_in_background_while_callers_get_current_token(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    manager = make_manager(refresh_buffer=300)
    old = await manager.get_token()
    clock.advance(3600 - 299)
    idp.script(Reply(hang=True))
    assert await manager.get_token() == old
    await settle(lambda: len(idp.requests) == 2)
    for _ in range(100):
        assert await manager.get_token() == old
    assert len(idp.requests) == 2, "callers in the refresh window must share one refresh"
    idp.release()
    await settle(lambda: manager.stats.refresh_count == 2)
    new = await manager.get_token()
    assert new != old
    assert new == idp.issued[1]


async def test_no_refresh_before_the_window(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    """A token shorter than the long-lived threshold is refreshed ``refresh_buffer``
    seconds before it expires, not earlier."""
    manager = make_manager(refresh_buffer=300, long_lived=7200)
    await manager.get_token()
    clock.advance(3600 - 301)
    await manager.get_token()
    await asyncio.sleep(0.05)
    assert len(idp.requests) == 1
    clock.advance(2)
    await manager.get_token()
    await settle(lambda: len(idp.requests) == 2)


async def test_long_lived_token_is_refreshed_at_its_refresh_fraction(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    """MSAL's rule, by default from twice the buffer on: a day-long token is refreshed after
    half its lifetime, so an identity-provider outage of up to 12 h costs nothing."""
    idp.set_default(Reply(expires_in=86400))
    manager = make_manager(refresh_buffer=300)
    first = await manager.get_token()
    clock.advance(43200 - 1)
    assert await manager.get_token() == first
    await asyncio.sleep(0.05)
    assert len(idp.requests) == 1
    clock.advance(2)
    assert await manager.get_token() == first
    await settle(lambda: manager.stats.refresh_count == 2)

    quarter = make_manager(refresh_buffer=300, refresh_fraction=0.25)
    await quarter.get_token()
    clock.advance(86400 * 0.25 + 1)
    await quarter.get_token()
    await settle(lambda: quarter.stats.refresh_count == 2)


async def test_refresh_in_from_the_identity_provider_wins(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    """An identity provider that says when to refresh (``refresh_in``, as Microsoft Entra
    does) is followed, within the token's usable time."""
    idp.set_default(Reply(fields={"refresh_in": 600}))
    manager = make_manager()
    await manager.get_token()
    clock.advance(599)
    await manager.get_token()
    await asyncio.sleep(0.05)
    assert len(idp.requests) == 1
    clock.advance(2)
    await manager.get_token()
    await settle(lambda: len(idp.requests) == 2)


async def test_short_lived_token_is_cached_and_refreshed_at_half_life(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    idp.set_default(Reply(expires_in=60))
    manager = make_manager(refresh_buffer=300)
    first = await manager.get_token()
    clock.advance(29)
    for _ in range(10):
        assert await manager.get_token() == first
    await asyncio.sleep(0.05)
    assert len(idp.requests) == 1, "a 300 s buffer on a 60 s token is capped at half its life"
    clock.advance(2)
    assert await manager.get_token() == first
    await settle(lambda: manager.stats.refresh_count == 2)
    assert await manager.get_token() == idp.issued[1]


async def test_very_short_lived_token_is_still_cached(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    """The 10 s expiry margin shrinks to a tenth of the lifetime, so a 5 s token is reused
    instead of being fetched again on every call."""
    idp.set_default(Reply(expires_in=5))
    manager = make_manager()
    first = await manager.get_token()
    clock.advance(2)
    assert await manager.get_token() == first
    assert len(idp.requests) == 1


async def test_token_is_not_handed_out_in_its_last_ten_seconds(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    """Even with no refresh buffer, a token is replaced 10 s before it expires: one handed
    out later could expire in transit or at an API whose clock runs ahead."""
    manager = make_manager(refresh_buffer=0)
    old = await manager.get_token()
    clock.advance(3600 - 11)
    assert await manager.get_token() == old
    assert len(idp.requests) == 1
    clock.advance(1)
    assert await manager.get_token() == idp.issued[1] != old


async def test_lifetime_counts_from_when_the_request_was_sent(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    """A slow answer must not stretch the token's life: expires_in counts from the request,
    so the token is not handed out once that much time has passed since sending it."""
    idp.script(Reply(hang=True))
    manager = make_manager()
    first = asyncio.create_task(manager.get_token())
    await settle(lambda: len(idp.requests) == 1)
    clock.advance(100)
    idp.release()
    old = await first
    clock.advance(3600 - 100)
    assert await manager.get_token() == idp.issued[1] != old


async def test_cancelled_caller_does_not_cancel_the_shared_request(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    """A caller that gives up (its own request was cancelled) must not cancel the token
    request that other callers are waiting on."""
    idp.script(Reply(hang=True))
    manager = make_manager()
    quitter = asyncio.create_task(manager.get_token())
    stayer = asyncio.create_task(manager.get_token())
    await settle(lambda: len(idp.requests) == 1)
    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    idp.release()
    assert await stayer == idp.issued[0]
    assert len(idp.requests) == 1


async def test_expired_token_makes_callers_wait_for_the_new_one(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    manager = make_manager()
    old = await manager.get_token()
    clock.advance(3600)
    tokens = await asyncio.gather(*(manager.get_token() for _ in range(20)))
    assert set(tokens) == {idp.issued[1]}
    assert old not in tokens
    assert len(idp.requests) == 2


async def test_valid_token_is_served_while_idp_returns_503(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock, logs: LogCapture
) -> None:
    manager = make_manager(retry_attempts=3)
    old = await manager.get_token()
    idp.set_default(Reply(status=503, error="temporarily_unavailable"))
    clock.advance(3600 - 60)
    results = await asyncio.gather(*(manager.get_token() for _ in range(50)))
    assert set(results) == {old}
    await settle(lambda: manager.stats.failure_count == 1)
    assert len(idp.requests) == 1 + 3
    assert manager.stats.last_refresh_success is False
    assert manager.stats.last_error == "HTTP 503 temporarily_unavailable"
    for _ in range(200):
        assert await manager.get_token() == old
    await asyncio.sleep(0.05)
    assert len(idp.requests) == 4, "a failed refresh is not retried in a hot loop"
    warnings = logs.messages("WARNING")
    assert sum("HTTP 503 temporarily_unavailable" in w for w in warnings) == 3

    clock.advance(2)
    assert await manager.get_token() == old
    await settle(lambda: manager.stats.failure_count == 2)
    assert len(idp.requests) == 7

    idp.set_default(Reply())
    clock.advance(5)
    assert await manager.get_token() == old
    await settle(lambda: manager.stats.failure_count == 0)
    assert manager.stats.failures_total == 2, "the running total survives a success"
    assert manager.stats.last_refresh_success is True
    assert await manager.get_token() == idp.issued[-1] != old


async def test_valid_token_is_served_while_idp_hangs(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    manager = make_manager(deadline=0.3, timeout=5.0)
    old = await manager.get_token()
    idp.set_default(Reply(hang=True))
    clock.advance(3600 - 100)
    for _ in range(20):
        assert await manager.get_token() == old
    await settle(lambda: manager.stats.failure_count == 1)
    assert manager.stats.last_error is not None
    assert await manager.get_token() == old


class _LowestDraw:
    """Stands in for ``random`` in the refresh schedule: records each jitter range and
    returns its lower end, so backoff delays are exact."""

    def __init__(self) -> None:
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.ranges.append((low, high))
        return low


async def test_background_retries_back_off_exponentially_with_jitter(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed background refreshes wait a random time in [ceiling/2, ceiling]; the ceiling
    doubles per failure up to background_retry_max, so replicas neither hammer a struggling
    IdP nor retry in lockstep."""
    draws = _LowestDraw()
    monkeypatch.setattr(schedule, "random", draws)
    manager = make_manager(retry_attempts=1, background_retry_max=4.0)
    old = await manager.get_token()
    idp.set_default(Reply(status=503))
    clock.advance(3600 - 200)
    for failures, wait in enumerate((0.5, 1.0, 2.0, 2.0), start=1):
        assert await manager.get_token() == old
        await settle(lambda: manager.stats.failure_count == failures)  # noqa: B023 - awaited here
        clock.advance(wait - 0.1)
        assert await manager.get_token() == old
        await asyncio.sleep(0.05)
        assert len(idp.requests) == 1 + failures, f"retried before {wait}s"
        clock.advance(0.2)
    assert draws.ranges == [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (2.0, 4.0)]


async def test_background_retry_after_zero_does_not_cause_a_hot_loop(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    """Retry-After only sets a floor: "0" must not cancel the backoff between background
    attempts."""
    manager = make_manager(retry_attempts=1)
    old = await manager.get_token()
    idp.set_default(Reply(status=503, retry_after="0"))
    clock.advance(3600 - 200)
    assert await manager.get_token() == old
    await settle(lambda: manager.stats.failure_count == 1)
    for _ in range(50):
        assert await manager.get_token() == old
    await asyncio.sleep(0.05)
    assert len(idp.requests) == 2


async def test_background_retry_after_is_capped_at_five_minutes(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    """An IdP asking for an hour of silence must not stall refreshing a day-long token for
    that hour; the background cool-down is capped at 300 s."""
    idp.set_default(Reply(expires_in=86400))
    manager = make_manager(refresh_buffer=7200, deadline=1.0)
    old = await manager.get_token()
    idp.set_default(Reply(status=429, retry_after="3600"))
    clock.advance(86400 - 7000)
    assert await manager.get_token() == old
    await settle(lambda: manager.stats.failure_count == 1)
    clock.advance(299)
    assert await manager.get_token() == old
    await asyncio.sleep(0.05)
    assert len(idp.requests) == 2
    clock.advance(2)
    assert await manager.get_token() == old
    await settle(lambda: len(idp.requests) == 3)


async def test_cool_down_never_serves_a_token_past_its_usable_time(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    """A Retry-After longer than the current token has left must not keep that token in
    service past its expiry margin; nor does a caller then ask before the Retry-After ends:
    it gets the rate-limit error at once, without a request."""
    manager = make_manager(deadline=1.0)
    old = await manager.get_token()
    clock.advance(3600 - 60)
    idp.script(Reply(status=429, retry_after="120"))
    assert await manager.get_token() == old
    await settle(lambda: manager.stats.failure_count == 1)
    clock.advance(55)
    with pytest.raises(TokenError, match="rate limiting") as info:
        await manager.get_token()
    assert "no new token request for 65" in str(info.value)
    assert len(idp.requests) == 2
    clock.advance(66)
    assert await manager.get_token() == idp.issued[1] != old


async def test_health_properties_track_failure_and_recovery(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    """Health checks read these: a failure is timestamped and explained, and the next
    success clears the error."""
    manager = make_manager(retry_attempts=1)
    assert manager.stats.last_refresh_at is None
    assert manager.stats.last_refresh_success is None
    await manager.get_token()
    succeeded_at = manager.stats.last_refresh_at
    assert succeeded_at is not None
    idp.set_default(Reply(status=503, error="temporarily_unavailable"))
    clock.advance(3600 - 200)
    await manager.get_token()
    await settle(lambda: manager.stats.failure_count == 1)
    assert manager.stats.last_refresh_at is not None
    assert manager.stats.last_refresh_at > succeeded_at
    assert manager.stats.last_refresh_success is False
    assert manager.stats.last_error == "HTTP 503 temporarily_unavailable"
    idp.set_default(Reply())
    clock.advance(2)
    await manager.get_token()
    await settle(lambda: manager.stats.failure_count == 0)
    assert manager.stats.last_refresh_success is True
    assert manager.stats.last_error is None
    assert manager.stats.refresh_count == 2


async def test_failed_background_refresh_is_not_reported_again_by_asyncio(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock, logs: LogCapture
) -> None:
    """Nobody awaits a background refresh; its failure is logged once by the manager, not
    again by asyncio as "Task exception was never retrieved" with a traceback."""
    manager = make_manager(retry_attempts=1)
    await manager.get_token()
    idp.set_default(Reply(status=503))
    clock.advance(3600 - 200)
    await manager.get_token()
    await settle(lambda: manager.stats.failure_count == 1)
    await asyncio.sleep(0)
    gc.collect()
    assert not any("never retrieved" in line for line in logs.lines)


async def test_expired_token_and_failing_idp_is_an_error(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock, logs: LogCapture
) -> None:
    manager = make_manager(retry_attempts=2)
    await manager.get_token()
    idp.set_default(Reply(status=502))
    clock.advance(3600)
    with pytest.raises(TokenError, match="HTTP 502"):
        await manager.get_token()
    assert manager.stats.failure_count == 1
    assert manager.expires_at is not None
    errors = logs.messages("ERROR")
    assert any(e.startswith("No access token: ") for e in errors)
    assert not any("still serving" in e for e in errors), "the expired token is not served"


async def test_cold_caller_against_hung_idp_fails_within_one_deadline(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    idp.set_default(Reply(hang=True))
    manager = make_manager(deadline=0.5, timeout=10.0)
    with pytest.raises(TokenError, match=r"within 0\.5s") as info:
        await manager.get_token()
    assert "TOOLBRIDGE_TOKEN_REQUEST_DEADLINE_SECONDS" in str(info.value)
    assert info.value.cause == "deadline exceeded", "the deadline, not the HTTP timeout, ended it"
    assert len(idp.requests) == 1


async def test_unreachable_idp_is_retried_then_reported(clock: FakeClock) -> None:
    manager = TokenManager.client_credentials(
        CLIENT_ID,
        CLIENT_SECRET,
        token_url="http://127.0.0.1:9/oauth/token",
        retry=RetryPolicy(attempts=3, wait_initial=0.01),
        clock=clock,
    )
    async with manager:
        with pytest.raises(TokenError, match="Cannot reach the token endpoint") as info:
            await manager.get_token()
    assert info.value.retryable
    assert manager.stats.failure_count == 1


@pytest.mark.parametrize("status", [408, 500, 503])
async def test_transient_statuses_are_retried(
    make_manager: ManagerFactory, idp: IdP, status: int
) -> None:
    """A request timeout or a server error is worth another attempt; the caller gets the
    token from the retry instead of an error."""
    idp.script(Reply(status=status))
    manager = make_manager()
    assert await manager.get_token() == idp.issued[0]
    assert len(idp.requests) == 2


async def test_stuck_request_times_out_and_is_retried(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    """One stuck request ends at the manager's HTTP timeout, even on an injected client
    with a longer one, and is retried within the deadline rather than failing the caller."""
    idp.script(Reply(hang=True))
    async with httpx.AsyncClient(timeout=30.0) as http:
        manager = make_manager(http_client=http, timeout=0.2, deadline=2.0)
        assert await manager.get_token() == idp.issued[0]
    assert len(idp.requests) == 2
    idp.release()
    await settle(lambda: len(idp.issued) == 2)  # the abandoned request, before the next test


async def test_429_retry_after_is_honoured(make_manager: ManagerFactory, idp: IdP) -> None:
    idp.script(Reply(status=429, error="too_many_requests", retry_after="1"))
    manager = make_manager(deadline=5.0)
    token = await manager.get_token()
    assert token == idp.issued[0]
    first, second = idp.requests
    assert second.at - first.at >= 0.95


async def test_429_retry_after_beyond_deadline_fails_fast(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    idp.script(Reply(status=429, retry_after="120"))
    manager = make_manager(deadline=2.0)
    with pytest.raises(TokenError, match="rate limiting this client for 120s") as info:
        await manager.get_token()
    assert info.value.retry_after == 120
    assert len(idp.requests) == 1


async def test_background_refresh_honours_retry_after_cool_down(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    manager = make_manager(deadline=1.0)
    old = await manager.get_token()
    clock.advance(3600 - 290)
    idp.set_default(Reply(status=429, retry_after="120"))
    assert await manager.get_token() == old
    await settle(lambda: manager.stats.failure_count == 1)
    clock.advance(100)
    assert await manager.get_token() == old
    await asyncio.sleep(0.05)
    assert len(idp.requests) == 2, "no request inside the Retry-After cool-down"
    clock.advance(21)
    assert await manager.get_token() == old
    await settle(lambda: len(idp.requests) == 3)


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = time.time()
    later = datetime.fromtimestamp(now, UTC) + timedelta(seconds=30)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(format_datetime(later, usegmt=True), now=now) == pytest.approx(30, 1)
    assert parse_retry_after(format_datetime(later - timedelta(days=1), usegmt=True)) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None


@pytest.mark.parametrize(
    ("options", "reply", "setting"),
    [
        ({"client_secret": "wrong-secret"}, None, "TOOLBRIDGE_AUTH0_CLIENT_SECRET"),
        ({"audience": "https://other.example"}, None, "TOOLBRIDGE_AUTH0_AUDIENCE"),
        ({}, Reply(status=400, error="unauthorized_client"), "Client Credentials grant"),
        ({}, Reply(status=400, error="invalid_scope"), "TOOLBRIDGE_AUTH0_SCOPE"),
        ({}, Reply(status=403, error="invalid_scope"), "TOOLBRIDGE_AUTH0_SCOPE"),
        ({}, Reply(status=403), "TOOLBRIDGE_AUTH0_AUDIENCE"),
        ({}, Reply(status=404, body="Not Found"), "TOOLBRIDGE_AUTH0_TOKEN_URL"),
    ],
)
async def test_client_errors_fail_fast_naming_the_setting(
    make_manager: ManagerFactory,
    idp: IdP,
    options: dict[str, str],
    reply: Reply | None,
    setting: str,
) -> None:
    if reply is not None:
        idp.script(reply)
    manager = make_manager(**options)
    with pytest.raises(TokenError) as info:
        await manager.get_token()
    assert setting in str(info.value)
    assert not info.value.retryable
    assert len(idp.requests) == 1
    assert CLIENT_SECRET not in str(info.value)
    assert "wrong-secret" not in str(info.value)


async def test_error_description_is_short_and_never_echoes_the_secret(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    idp.script(
        Reply(
            status=401,
            error="invalid_client",
            error_description=f"secret {CLIENT_SECRET} is wrong " + "x" * 500,
        )
    )
    manager = make_manager()
    with pytest.raises(TokenError) as info:
        await manager.get_token()
    message = str(info.value)
    assert CLIENT_SECRET not in message
    assert "secret *** is wrong" in message
    assert len(message) < 600


async def test_secret_cut_by_the_description_limit_is_still_redacted(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    """A secret echoed across the 200-character cut must not leak its first part."""
    idp.script(
        Reply(status=401, error="invalid_client", error_description="x" * 190 + CLIENT_SECRET)
    )
    manager = make_manager()
    with pytest.raises(TokenError) as info:
        await manager.get_token()
    assert CLIENT_SECRET[:-1] not in str(info.value)


async def test_error_description_cannot_forge_log_lines(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    """Control characters from the IdP are dropped, so its error text cannot start a fake
    log line or send terminal escapes."""
    idp.script(
        Reply(
            status=400,
            error="invalid_request",
            error_description="bad audience\nERROR | forged\r\x1b[2J",
        )
    )
    manager = make_manager()
    with pytest.raises(TokenError) as info:
        await manager.get_token()
    message = str(info.value)
    assert "bad audienceERROR | forged[2J" in message
    assert not any(c in message for c in "\n\r\x1b")


async def test_response_body_is_not_copied_into_errors(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    idp.set_default(Reply(status=500, body="<html>Traceback: internal detail</html>"))
    manager = make_manager(retry_attempts=2)
    with pytest.raises(TokenError, match="HTTP 500") as info:
        await manager.get_token()
    assert "Traceback" not in str(info.value)
    assert len(idp.requests) == 2


async def test_malformed_json_is_a_clear_error(make_manager: ManagerFactory, idp: IdP) -> None:
    idp.script(Reply(body="not json{"))
    manager = make_manager()
    with pytest.raises(TokenError, match="no JSON token response"):
        await manager.get_token()
    assert len(idp.requests) == 1


async def test_expiry_falls_back_to_jwt_exp_claim(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    idp.set_default(Reply(expires_in=None))
    manager = make_manager(refresh_buffer=300)
    token = await manager.get_token()
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert manager.expires_at is not None
    assert abs(manager.expires_at.timestamp() - exp) < 5
    clock.advance(1800 - 10)
    await manager.get_token()
    await asyncio.sleep(0.05)
    assert len(idp.requests) == 1, "scheduled from exp: not yet at half-life"


async def test_already_expired_jwt_is_a_clear_error(make_manager: ManagerFactory, idp: IdP) -> None:
    """Without expires_in the expiry comes from exp; an exp in the past (a wrong IdP clock)
    must fail loudly instead of handing out a dead token."""
    expired = jwt.encode({"exp": int(time.time()) - 60}, "k" * 32, algorithm="HS256")
    idp.script(Reply(body=json.dumps({"access_token": expired, "token_type": "Bearer"})))
    manager = make_manager()
    with pytest.raises(TokenError, match="already expired"):
        await manager.get_token()


async def test_no_expires_in_and_no_exp_is_a_clear_error(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    idp.script(Reply(expires_in=None, jwt=False))
    manager = make_manager()
    with pytest.raises(TokenError, match="expiry is unknown"):
        await manager.get_token()


async def test_non_bearer_token_type_is_refused(make_manager: ManagerFactory, idp: IdP) -> None:
    idp.script(Reply(token_type="DPoP"))
    manager = make_manager()
    with pytest.raises(TokenError, match="only Bearer tokens"):
        await manager.get_token()


async def test_token_type_is_case_insensitive(make_manager: ManagerFactory, idp: IdP) -> None:
    """RFC 6749 §5.1: token_type is case-insensitive, and some servers send "bearer"."""
    idp.script(Reply(token_type="bearer"))
    manager = make_manager()
    assert await manager.get_token() == idp.issued[0]


async def test_invalidate_drops_only_the_rejected_token(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    manager = make_manager()
    old = await manager.get_token()
    assert manager.invalidate("some-other-token") is False
    assert await manager.get_token() == old
    assert len(idp.requests) == 1
    assert manager.invalidate(old) is True
    new = await manager.get_token()
    assert new != old
    assert len(idp.requests) == 2


async def test_concurrent_rejections_cause_one_refetch(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    manager = make_manager()
    old = await manager.get_token()
    idp.script(Reply(delay=0.1))

    async def rejected_then_retry() -> str:
        manager.invalidate(old)
        return await manager.get_token()

    tokens = await asyncio.gather(*(rejected_then_retry() for _ in range(50)))
    assert len(set(tokens)) == 1
    assert old not in tokens
    assert len(idp.requests) == 2


async def test_one_info_line_per_refresh_with_expiry(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock, logs: LogCapture
) -> None:
    manager = make_manager()
    await manager.get_token()
    clock.advance(3600)
    await manager.get_token()
    refreshed = [m for m in logs.messages("INFO") if m.startswith("Access token refreshed")]
    assert len(refreshed) == 2
    assert "valid for 3600s" in refreshed[0]
    assert "expires at 20" in refreshed[0]


async def test_close_cancels_refresh_in_flight(
    make_manager: ManagerFactory, idp: IdP, clock: FakeClock
) -> None:
    manager = make_manager()
    await manager.get_token()
    clock.advance(3600 - 100)
    idp.set_default(Reply(hang=True))
    await manager.get_token()
    await settle(lambda: len(idp.requests) == 2)
    await manager.close()
    pending = [t for t in asyncio.all_tasks() if t.get_name().startswith(FETCH_TASK_NAME)]
    assert pending == []
    assert manager.stats.failure_count == 0, (
        "the refresh was cancelled, not waited out until it failed"
    )
    with pytest.raises(RuntimeError, match="closed"):
        await manager.get_token()


async def test_start_warms_the_cache_and_survives_an_idp_outage(
    make_manager: ManagerFactory, idp: IdP
) -> None:
    manager = make_manager()
    await manager.start()
    assert manager.stats.last_refresh_success is True
    assert manager.expires_at is not None
    assert len(idp.requests) == 1

    idp.set_default(Reply(status=503))
    down = make_manager(retry_attempts=1)
    await down.start()
    assert down.stats.last_refresh_success is False
    assert down.stats.failure_count == 1
    assert down.expires_at is None


async def test_seed_module_functions(idp: IdP) -> None:
    await shutdown_token_manager()
    with pytest.raises(RuntimeError, match="init_token_manager"):
        await get_access_token()
    manager = init_token_manager(
        CLIENT_ID, CLIENT_SECRET, audience=AUDIENCE, token_url=idp.token_url
    )
    try:
        assert await get_access_token() == idp.issued[0]
        assert tm_module._token_manager is manager
    finally:
        await shutdown_token_manager()
    assert tm_module._token_manager is None


async def test_from_settings_uses_every_setting(idp: IdP) -> None:
    settings = load_settings(
        auth0_client_id="nasty-client",
        auth0_client_secret=NASTY_SECRET,
        auth0_token_url=idp.token_url,
        auth0_scope="read:notes",
        auth0_resource=AUDIENCE,
        auth0_client_auth_method="client_secret_basic",
        _env_file=None,
    )
    async with TokenManager.from_settings(settings) as manager:
        await manager.get_token()
    seen = idp.requests[0]
    assert seen.auth_method == "client_secret_basic"
    assert seen.form["scope"] == "read:notes"
    assert seen.form["resource"] == AUDIENCE


async def test_from_settings_applies_audience_buffer_and_deadline(
    idp: IdP, clock: FakeClock
) -> None:
    """TOOLBRIDGE_AUTH0_AUDIENCE, TOOLBRIDGE_TOKEN_REFRESH_BUFFER_SECONDS and
    TOOLBRIDGE_TOKEN_REQUEST_DEADLINE_SECONDS must reach the manager, or setting them
    silently does nothing."""
    settings = load_settings(
        auth0_client_id=CLIENT_ID,
        auth0_client_secret=CLIENT_SECRET,
        auth0_token_url=idp.token_url,
        auth0_audience=AUDIENCE,
        token_refresh_buffer_seconds=60,
        token_refresh_long_lived_seconds=7200,
        token_request_deadline_seconds=0.3,
        _env_file=None,
    )
    async with TokenManager.from_settings(settings, clock=clock) as manager:
        old = await manager.get_token()
        assert idp.requests[0].form["audience"] == AUDIENCE
        clock.advance(3600 - 61)
        assert await manager.get_token() == old
        await asyncio.sleep(0.05)
        assert len(idp.requests) == 1, "not yet inside a 60 s refresh buffer"
        idp.set_default(Reply(hang=True))
        clock.advance(61)
        with pytest.raises(TokenError, match=r"within 0\.3s"):
            await manager.get_token()
    idp.release()
    await settle(lambda: len(idp.issued) == 2)  # the abandoned request, before the next test


async def test_from_settings_applies_the_http_timeout(idp: IdP, clock: FakeClock) -> None:
    """TOOLBRIDGE_AUTH0_TIMEOUT_SECONDS bounds each attempt, so a stuck request is retried
    well within the overall deadline."""
    settings = load_settings(
        auth0_client_id=CLIENT_ID,
        auth0_client_secret=CLIENT_SECRET,
        auth0_token_url=idp.token_url,
        auth0_timeout_seconds=0.2,
        token_request_deadline_seconds=2,
        _env_file=None,
    )
    idp.script(Reply(hang=True))
    retry = RetryPolicy.from_settings(settings)
    async with TokenManager.from_settings(
        settings, clock=clock, retry=RetryPolicy(wait_initial=0.01, deadline=retry.deadline)
    ) as manager:
        assert await manager.get_token() == idp.issued[0]
    assert len(idp.requests) == 2
    idp.release()
    await settle(lambda: len(idp.issued) == 2)  # the abandoned request, before the next test


async def test_close_releases_its_own_http_client(
    make_manager: ManagerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manager that created its HTTP client closes it, so no connection outlives it."""
    closed: list[httpx.AsyncClient] = []
    aclose = httpx.AsyncClient.aclose

    async def recording_aclose(client: httpx.AsyncClient) -> None:
        closed.append(client)
        await aclose(client)

    monkeypatch.setattr(httpx.AsyncClient, "aclose", recording_aclose)
    manager = make_manager()
    await manager.get_token()
    await manager.close()
    assert len(closed) == 1
    assert closed[0].is_closed


def test_from_settings_refuses_other_modes() -> None:
    with pytest.raises(ValueError, match="not configured"):
        TokenManager.from_settings(load_settings(_env_file=None))


def test_manager_needs_an_endpoint() -> None:
    with pytest.raises(ValueError, match="domain or a token_url"):
        TokenManager.client_credentials(CLIENT_ID, CLIENT_SECRET)


async def test_invalid_expires_in_names_the_field(make_manager: ManagerFactory, idp: IdP) -> None:
    """A 200 with a nonsensical lifetime says what is wrong, not "check the URL"."""
    idp.script(Reply(expires_in=0))
    manager = make_manager()
    with pytest.raises(TokenError, match="invalid expires_in in its token response"):
        await manager.get_token()


class _ExplodingTransport(httpx.AsyncBaseTransport):
    """A fault no IdP produces: the HTTP stack itself fails with a non-httpx error."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"boom for {CLIENT_SECRET}")


async def test_unexpected_failure_is_counted_logged_and_redacted(
    clock: FakeClock, logs: LogCapture
) -> None:
    async with (
        httpx.AsyncClient(transport=_ExplodingTransport()) as http,
        TokenManager.client_credentials(
            CLIENT_ID,
            CLIENT_SECRET,
            token_url="https://127.0.0.1:9/oauth/token",
            http_client=http,
            clock=clock,
        ) as manager,
    ):
        with pytest.raises(TokenError, match="unexpectedly: RuntimeError: boom for \\*\\*\\*"):
            await manager.get_token()
        assert manager.stats.failure_count == 1
        assert manager.stats.last_refresh_success is False
    assert any("unexpectedly: RuntimeError" in m for m in logs.messages("ERROR"))
