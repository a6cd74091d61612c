"""Access tokens cached, refreshed ahead of expiry on a timer, served through outages.

Why it is shaped this way: callers must never wait on the identity provider once a token
exists. A cached token is returned after one clock comparison. When a token arrives, a timer
is set for its refresh time (:class:`~toolbridge_mcp.tokens.RefreshSchedule`: half-life for
long-lived tokens), so it is renewed whether or not calls come in, and an idle server always
holds a valid token. Renewal runs as one background task while callers keep getting the
current token; if the identity provider fails, the current token is served until it actually
expires and the timer retries with jittered backoff. After a failure (a 429's ``Retry-After``
included) there is one cool-down for everyone: no caller and no timer sends a token request
before it ends. Only a caller with no usable token waits — for the cool-down if it ends within
its deadline, then on the one request in flight — bounded by one overall deadline.

The parts: a :class:`TokenSource` gets new tokens (:class:`~toolbridge_mcp.oauth.TokenClient`:
grant, client authentication, retries), a :class:`~toolbridge_mcp.tokens.RefreshSchedule`
says when to renew, a :class:`~toolbridge_mcp.tokens.TokenCache` shares tokens beyond this
manager, :class:`~toolbridge_mcp.tokens.TokenStats` counts for health and metrics, and
:class:`~toolbridge_common.singleflight.SingleFlight` keeps renewals to one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import httpx
from loguru import logger
from pydantic import SecretStr

from toolbridge_common.singleflight import SingleFlight
from toolbridge_mcp.oauth import (
    ClientAuthMethod,
    ClientKey,
    IssuedToken,
    RetryPolicy,
    TokenClient,
    TokenEndpoint,
    TokenError,
)
from toolbridge_mcp.oauth.endpoint import deadline_error
from toolbridge_mcp.tokens.cache import (
    CachedToken,
    Fetch,
    MemoryTokenCache,
    RenewingTokenCache,
    TokenCache,
    Wanted,
    renew_locally,
)
from toolbridge_mcp.tokens.schedule import MIN_RETRY_WAIT, RefreshSchedule, ScheduledToken
from toolbridge_mcp.tokens.stats import TokenStats

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings

Clock = Callable[[], float]
_NEVER = float("-inf")
FETCH_TASK_NAME = "toolbridge-token-fetch"
_DEADLINE_GRACE = 0.25


class TokenSource(Protocol):
    """Where new tokens come from (:class:`~toolbridge_mcp.oauth.TokenClient`)."""

    @property
    def token_url(self) -> str: ...

    @property
    def audience(self) -> str | None: ...

    @property
    def cache_key(self) -> str:
        """Names the tokens this source issues in a :class:`TokenCache`."""
        ...

    @property
    def deadline(self) -> float:
        """Longest one :meth:`fetch` takes, retries included; also a waiting caller's bound."""
        ...

    async def fetch(self, clock: Clock) -> IssuedToken:
        """A new token, its lifetime counted from ``clock()`` at sending; or TokenError."""
        ...

    async def aclose(self) -> None: ...


class TokenManager:
    """Hands out access tokens from ``source``, renewing them on ``schedule``.

    ``cache`` (default: one of its own in memory) is consulted before asking ``source`` and
    given every new token. ``clock`` is injectable so that expiry can be tested without
    waiting; it must be monotonic. The refresh timer sleeps for what ``clock`` says is left
    (real seconds) and checks ``clock`` again when it wakes, so a clock moved by hand never
    makes it refresh early. ``deadline``: the longest a caller without a usable token waits
    (default: the source's). ``timer=False`` renews only when a call finds the token due (for
    tokens nobody may need again, such as one exchanged for a user who has gone).
    """

    def __init__(
        self,
        source: TokenSource,
        *,
        schedule: RefreshSchedule | None = None,
        cache: TokenCache | None = None,
        clock: Clock = time.monotonic,
        deadline: float | None = None,
        timer: bool = True,
    ) -> None:
        self._source = source
        self._use_timer = timer
        self._schedule = schedule or RefreshSchedule()
        self._cache: RenewingTokenCache = (
            cache if isinstance(cache, RenewingTokenCache) else _Renewing(cache)
        )
        self._clock = clock
        self._deadline = deadline if deadline is not None else source.deadline
        self._unix_offset = time.time() - clock()
        self._key = source.cache_key
        self._flight: SingleFlight[str, ScheduledToken] = SingleFlight(FETCH_TASK_NAME)
        self.stats = TokenStats()

        self._token: ScheduledToken | None = None
        self._value = ""
        self._serve_until = _NEVER
        self._rejected: str | None = None
        self._closed = False
        self._cooldown_until = _NEVER
        """No token request before this (manager clock), for any caller or the timer."""
        self._last_error: TokenError | None = None
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def client_credentials(
        cls,
        client_id: str,
        client_secret: str | SecretStr | None = None,
        domain: str | None = None,
        audience: str | None = None,
        *,
        token_url: str | None = None,
        scope: str | None = None,
        resource: str | None = None,
        auth_method: ClientAuthMethod = "client_secret_post",
        client_key: ClientKey | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        schedule: RefreshSchedule | None = None,
        cache: TokenCache | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> TokenManager:
        """The seed's manager: OAuth2 client credentials at Auth0 (``domain``: JSON body to
        ``https://{domain}/oauth/token``) or any RFC 6749 server (``token_url``: form body).
        ``client_key`` with ``auth_method="private_key_jwt"`` instead of a secret."""
        endpoint = TokenEndpoint.client_credentials(
            client_id,
            client_secret,
            domain=domain,
            token_url=token_url,
            audience=audience,
            scope=scope,
            resource=resource,
            auth_method=auth_method,
            client_key=client_key,
        )
        client = TokenClient(endpoint, retry=retry, timeout=timeout, http_client=http_client)
        return cls(client, schedule=schedule, cache=cache, clock=clock)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        token_url: str | None = None,
        retry: RetryPolicy | None = None,
        cache: TokenCache | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> TokenManager:
        """The manager of the ``TOOLBRIDGE_AUTH0_*`` and ``TOOLBRIDGE_TOKEN_*`` settings
        (``retry``: instead of the settings' deadline and default waits; ``token_url``: a
        token endpoint already discovered from ``TOOLBRIDGE_AUTH0_ISSUER``; without one the
        source discovers it by its first request, see
        :class:`~toolbridge_mcp.oauth.endpoint.DiscoveringTokenClient`)."""
        client = TokenClient.from_settings(
            settings,
            token_url=token_url,
            retry=retry or RetryPolicy.from_settings(settings),
            http_client=http_client,
        )
        return cls(
            client, schedule=RefreshSchedule.from_settings(settings), cache=cache, clock=clock
        )

    async def get_token(self) -> str:
        """A valid access token; waits on the identity provider only when none is usable."""
        if self._clock() < self._serve_until:
            return self._value
        return await self._get_token_slow()

    async def _get_token_slow(self) -> str:
        if self._closed:
            raise RuntimeError("TokenManager is closed")
        token = self._usable()
        if token is not None:
            if self._clock() >= self._cooldown_until:
                renewal = self._flight.start(self._key, self._renew)
                if not renewal.done():  # a finished one is about to leave; the next call retries
                    self._serve_until = token.usable_until
            return token.value
        return await self._wait_for_token()

    async def _wait_for_token(self) -> str:
        """No usable token: wait for the shared cool-down if it ends within the deadline,
        then for the one request in flight, all within ``deadline`` seconds (and a moment
        more, so that a request this caller started ends by its own deadline first and the
        caller learns why it failed)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._deadline
        deadline = asyncio.timeout_at(give_up_at + _DEADLINE_GRACE)
        try:
            async with deadline:
                wait = self._cooldown_until - self._clock()
                if wait > 0 and self._flight.running(self._key) is None:
                    error = self._last_error
                    if error is not None and (
                        not error.retryable or wait > give_up_at - loop.time()
                    ):
                        raise _cooling_down(error, wait)
                    await asyncio.sleep(wait)
                    token = self._usable()
                    if token is not None:  # the timer's refresh got one meanwhile
                        return token.value
                renewed = await self._flight.run(self._key, self._renew)
                return renewed.value
        except TimeoutError:
            if not deadline.expired():
                raise
            raise deadline_error(self.token_url, self._deadline, self._last_error) from None

    def invalidate(self, rejected_token: str) -> bool:
        """Forget the cached token if it is the one the API rejected (401), so the next
        call fetches a fresh one. Concurrent rejections of one token cause one refetch."""
        token = self._token
        if token is None or token.value != rejected_token:
            return False
        self._token = None
        self._value = ""
        self._serve_until = _NEVER
        self._rejected = rejected_token
        logger.warning(
            "The API rejected the current access token (it was valid for {:.0f}s more); "
            "fetching a new one",
            token.expires_at - self._clock(),
        )
        return True

    async def start(self) -> None:
        """Fetch the first token now, so the first caller does not wait. A failure is
        logged and shows in :attr:`stats`; the refresh timer keeps trying."""
        try:
            await self.get_token()
        except TokenError:
            return

    async def close(self) -> None:
        """Stop the refresh timer, cancel a renewal in flight and release the source;
        nothing is left running."""
        self._closed = True
        self._disarm()
        self._serve_until = _NEVER
        self._token = None
        self._value = ""
        await self._flight.cancel_all()
        await self._source.aclose()

    async def __aenter__(self) -> TokenManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def token_url(self) -> str:
        """The token endpoint in use."""
        return self._source.token_url

    @property
    def audience(self) -> str | None:
        """The audience requested."""
        return self._source.audience

    @property
    def expires_at(self) -> datetime | None:
        """When the cached token expires (UTC), or ``None`` without one."""
        token = self._token
        if token is None:
            return None
        return datetime.now(UTC) + timedelta(seconds=token.expires_at - self._clock())

    @property
    def next_refresh_at(self) -> datetime | None:
        """When the timer asks for the next token (UTC): the refresh time, or the end of
        a cool-down after a failure; ``None`` when nothing is scheduled."""
        if self._timer is None or self._closed:
            return None
        return datetime.now(UTC) + timedelta(seconds=max(0.0, self._due_at() - self._clock()))

    @property
    def scope(self) -> str | None:
        """The scopes the identity provider granted to the cached token, if it said."""
        return None if self._token is None else self._token.scope

    def _usable(self) -> ScheduledToken | None:
        token = self._token
        return token if token is not None and self._clock() < token.usable_until else None

    def _due_at(self) -> float:
        """When the next token request is due (manager clock)."""
        token = self._usable()
        if token is None:
            return self._cooldown_until
        return max(token.refresh_at, self._cooldown_until)

    def _arm(self) -> None:
        """(Re)set the refresh timer for :meth:`_due_at`."""
        self._disarm()
        if self._closed or not self._use_timer:
            return
        delay = max(0.0, self._due_at() - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _on_timer(self) -> None:
        """The timer: renew now if due (the outcome re-arms it), else sleep on."""
        self._timer = None
        if self._closed:
            return
        if self._clock() < self._due_at():
            self._arm()
            return
        self._flight.start(self._key, self._renew)

    async def _renew(self) -> ScheduledToken:
        """The one renewal in flight (in the fleet, with a shared cache): a newer token from
        the cache, else one fetched from the source, here or by another process."""
        try:
            stored = await self._cache.renew(self._key, self._fetch, wanted=self._wanted)
        except TokenError as exc:
            self._record_failure(exc)
            raise
        token = self._token
        if token is not None and token.value == stored.value:
            return token  # fetched here: installed as it arrived
        return self._adopt(stored)

    async def _fetch(self) -> CachedToken:
        """A new token from the source, installed at once; what the cache stores."""
        issued = await self._source.fetch(self._clock)
        token = self._schedule.plan(
            issued.value,
            lifetime=issued.lifetime,
            expires_at=issued.requested_at + issued.lifetime,
            scope=issued.scope,
            refresh_in=issued.refresh_in,
        )
        self._install(token, fetched=True, refresh_in=issued.refresh_in)
        return CachedToken(
            token.value,
            token.lifetime,
            token.expires_at + self._unix_offset,
            token.scope,
            issued.refresh_in,
        )

    def _plan_cached(self, cached: CachedToken) -> ScheduledToken:
        return self._schedule.plan(
            cached.value,
            lifetime=cached.lifetime,
            expires_at=cached.expires_at - self._unix_offset,
            scope=cached.scope,
            refresh_in=cached.refresh_in,
        )

    def _wanted(self, cached: CachedToken) -> bool:
        """A stored token replaces ours if it is another one (ours is rejected or due) and
        not due for renewal itself: another process, or an earlier manager, renewed it."""
        current = None if self._token is None else self._token.value
        if cached.value in (self._rejected, current):
            return False
        return self._clock() < self._plan_cached(cached).refresh_at

    def _adopt(self, cached: CachedToken) -> ScheduledToken:
        token = self._plan_cached(cached)
        self._install(token, fetched=False, refresh_in=cached.refresh_in)
        return token

    def _install(self, token: ScheduledToken, *, fetched: bool, refresh_in: float | None) -> None:
        self._token = token
        self._value = token.value
        self._serve_until = token.refresh_at
        self._rejected = None
        self._cooldown_until = _NEVER
        self._last_error = None
        self._arm()
        now = self._clock()
        expires = self.stats.record_success(fetched=fetched) + timedelta(
            seconds=token.expires_at - now
        )
        logger.info(
            "Access token {}: valid for {:.0f}s{}, expires at {}, next refresh in {:.0f}s{} "
            "(audience {}, endpoint {})",
            "refreshed" if fetched else "taken from the token cache",
            token.lifetime if fetched else token.expires_at - now,
            "" if fetched else " more",
            expires.isoformat(timespec="seconds"),
            token.refresh_at - now,
            " (the identity provider's refresh_in)" if refresh_in else "",
            self._source.audience or "-",
            self._source.token_url,
        )

    def _record_failure(self, exc: TokenError) -> None:
        self.stats.record_failure(exc.reason)
        now, token = self._clock(), self._usable()
        remaining = None if token is None else token.usable_until - now
        delay = self._schedule.backoff(
            self.stats.failure_count, exc.retry_after, remaining=remaining, retryable=exc.retryable
        )
        if token is None and exc.retryable and exc.retry_after is None:
            # Callers are waiting: a cool-down of our own choosing always fits their deadline.
            delay = min(delay, max(self._deadline / 2, MIN_RETRY_WAIT))
        self._cooldown_until = now + delay
        self._last_error = exc
        if not self._closed:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule
                self._arm()
        if token is None:
            self._serve_until = _NEVER
            logger.error("No access token: {}; next attempt in {:.1f}s", exc, delay)
            return
        self._serve_until = min(self._cooldown_until, token.usable_until)
        logger.error(
            "Token refresh failed ({}); still serving the current token, valid for {:.0f}s "
            "more; next attempt in {:.1f}s. {}",
            exc.reason,
            token.expires_at - now,
            delay,
            exc,
        )


def _cooling_down(error: TokenError, wait: float) -> TokenError:
    """The last failure, raised again without a request: the shared cool-down after it
    lasts ``wait`` more seconds (longer than the caller may wait, or it cannot heal)."""
    return TokenError(
        f"{error} (no new token request for {wait:.1f}s)",
        error_code=error.error_code,
        status_code=error.status_code,
        retryable=error.retryable,
        retry_after=wait,
        cause=error.cause,
    )


class _Renewing:
    """A cache with only ``get`` and ``put``, renewing as one process does."""

    def __init__(self, cache: TokenCache | None) -> None:
        self._cache: TokenCache = cache if cache is not None else MemoryTokenCache()

    async def get(self, key: str) -> CachedToken | None:
        return await self._cache.get(key)

    async def put(self, key: str, token: CachedToken) -> None:
        await self._cache.put(key, token)

    async def renew(self, key: str, fetch: Fetch, *, wanted: Wanted) -> CachedToken:
        return await renew_locally(self._cache, key, fetch, wanted=wanted)
