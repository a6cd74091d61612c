"""Access tokens cached and refreshed ahead of expiry.

Why it is shaped this way: callers must never wait on the identity provider once a token
exists. A cached token is returned after one clock comparison; once its remaining lifetime
falls inside the refresh window, a single background task renews it while callers keep
getting the current token; if the provider fails, the current token is served until it
actually expires and the renewal is retried with jittered backoff. Only a caller with no
usable token waits, on the one request in flight, bounded by one overall deadline.

The parts: a :class:`TokenSource` gets new tokens (:class:`~toolbridge_mcp.oauth.TokenClient`:
grant, client authentication, retries), a :class:`~toolbridge_mcp.tokens.RefreshSchedule`
says when to renew, a :class:`~toolbridge_mcp.tokens.TokenCache` shares tokens beyond this
manager, :class:`~toolbridge_mcp.tokens.TokenStats` counts for health and metrics, and
:class:`~toolbridge_common.singleflight.SingleFlight` keeps renewals to one at a time.
"""

from __future__ import annotations

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
    IssuedToken,
    RetryPolicy,
    TokenClient,
    TokenEndpoint,
    TokenError,
)
from toolbridge_mcp.tokens.cache import CachedToken, MemoryTokenCache, TokenCache
from toolbridge_mcp.tokens.schedule import RefreshSchedule, ScheduledToken
from toolbridge_mcp.tokens.stats import TokenStats

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings

Clock = Callable[[], float]
_NEVER = float("-inf")
FETCH_TASK_NAME = "toolbridge-token-fetch"


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

    async def fetch(self, clock: Clock) -> IssuedToken:
        """A new token, its lifetime counted from ``clock()`` at sending; or TokenError."""
        ...

    async def aclose(self) -> None: ...


class TokenManager:
    """Hands out access tokens from ``source``, renewing them on ``schedule``.

    ``cache`` (default: one of its own in memory) is consulted before asking ``source`` and
    given every new token. ``clock`` is injectable so that expiry can be tested without
    waiting; it must be monotonic.
    """

    def __init__(
        self,
        source: TokenSource,
        *,
        schedule: RefreshSchedule | None = None,
        cache: TokenCache | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._source = source
        self._schedule = schedule or RefreshSchedule()
        self._cache: TokenCache = cache if cache is not None else MemoryTokenCache()
        self._clock = clock
        self._unix_offset = time.time() - clock()
        self._key = source.cache_key
        self._flight: SingleFlight[str, ScheduledToken] = SingleFlight(FETCH_TASK_NAME)
        self.stats = TokenStats()

        self._token: ScheduledToken | None = None
        self._value = ""
        self._serve_until = _NEVER
        self._rejected: str | None = None
        self._closed = False

    @classmethod
    def client_credentials(
        cls,
        client_id: str,
        client_secret: str | SecretStr,
        domain: str | None = None,
        audience: str | None = None,
        *,
        token_url: str | None = None,
        scope: str | None = None,
        resource: str | None = None,
        auth_method: ClientAuthMethod = "client_secret_post",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        schedule: RefreshSchedule | None = None,
        cache: TokenCache | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> TokenManager:
        """The seed's manager: OAuth2 client credentials at Auth0 (``domain``: JSON body to
        ``https://{domain}/oauth/token``) or any RFC 6749 server (``token_url``: form body)."""
        endpoint = TokenEndpoint.client_credentials(
            client_id,
            client_secret,
            domain=domain,
            token_url=token_url,
            audience=audience,
            scope=scope,
            resource=resource,
            auth_method=auth_method,
        )
        client = TokenClient(endpoint, retry=retry, timeout=timeout, http_client=http_client)
        return cls(client, schedule=schedule, cache=cache, clock=clock)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        retry: RetryPolicy | None = None,
        cache: TokenCache | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> TokenManager:
        """The manager of the ``TOOLBRIDGE_AUTH0_*`` and ``TOOLBRIDGE_TOKEN_*`` settings
        (``retry``: instead of the settings' deadline and default waits)."""
        client = TokenClient.from_settings(
            settings, retry=retry or RetryPolicy.from_settings(settings), http_client=http_client
        )
        schedule = RefreshSchedule(refresh_buffer=settings.token_refresh_buffer_seconds)
        return cls(client, schedule=schedule, cache=cache, clock=clock)

    async def get_token(self) -> str:
        """A valid access token; waits on the identity provider only when none is usable."""
        if self._clock() < self._serve_until:
            return self._value
        return await self._get_token_slow()

    async def _get_token_slow(self) -> str:
        if self._closed:
            raise RuntimeError("TokenManager is closed")
        token = self._token
        if token is not None and self._clock() < token.usable_until:
            renewal = self._flight.start(self._key, self._renew)
            if not renewal.done():  # a finished one is about to leave; the next call retries
                self._serve_until = token.usable_until
            return token.value
        renewed = await self._flight.run(self._key, self._renew)
        return renewed.value

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
        logged and shows in :attr:`stats`; the next :meth:`get_token` tries again."""
        try:
            await self.get_token()
        except TokenError:
            return

    async def close(self) -> None:
        """Cancel a renewal in flight and release the source; nothing is left running."""
        self._closed = True
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
    def scope(self) -> str | None:
        """The scopes the identity provider granted to the cached token, if it said."""
        return None if self._token is None else self._token.scope

    async def _renew(self) -> ScheduledToken:
        """The one renewal in flight: a newer token from the cache, else from the source."""
        try:
            return await self._from_cache() or await self._fetch()
        except TokenError as exc:
            self._record_failure(exc)
            raise

    async def _fetch(self) -> ScheduledToken:
        issued = await self._source.fetch(self._clock)
        token = self._schedule.plan(
            issued.value,
            lifetime=issued.lifetime,
            expires_at=issued.requested_at + issued.lifetime,
            scope=issued.scope,
        )
        self._install(token, fetched=True)
        stored = CachedToken(
            token.value, token.lifetime, token.expires_at + self._unix_offset, token.scope
        )
        try:
            await self._cache.put(self._key, stored)
        except Exception as exc:
            logger.warning("Token cache unavailable ({}): token not shared", type(exc).__name__)
        return token

    async def _from_cache(self) -> ScheduledToken | None:
        """The cache's token if it is another one than ours (rejected or due) and is not
        due for renewal itself: another process, or an earlier manager, renewed it."""
        try:
            cached = await self._cache.get(self._key)
        except Exception as exc:
            logger.warning(
                "Token cache unavailable ({}): asking the identity provider", type(exc).__name__
            )
            return None
        current = None if self._token is None else self._token.value
        if cached is None or cached.value in (self._rejected, current):
            return None
        token = self._schedule.plan(
            cached.value,
            lifetime=cached.lifetime,
            expires_at=cached.expires_at - self._unix_offset,
            scope=cached.scope,
        )
        if self._clock() >= token.refresh_at:
            return None
        self._install(token, fetched=False)
        return token

    def _install(self, token: ScheduledToken, *, fetched: bool) -> None:
        self._token = token
        self._value = token.value
        self._serve_until = token.refresh_at
        self._rejected = None
        now = self._clock()
        expires = self.stats.record_success(fetched=fetched) + timedelta(
            seconds=token.expires_at - now
        )
        logger.info(
            "Access token {}: valid for {:.0f}s{}, expires at {}, next refresh in {:.0f}s "
            "(audience {}, endpoint {})",
            "refreshed" if fetched else "taken from the token cache",
            token.lifetime if fetched else token.expires_at - now,
            "" if fetched else " more",
            expires.isoformat(timespec="seconds"),
            token.refresh_at - now,
            self._source.audience or "-",
            self._source.token_url,
        )

    def _record_failure(self, exc: TokenError) -> None:
        self.stats.record_failure(exc.reason)
        token, now = self._token, self._clock()
        if token is None or now >= token.usable_until:
            self._serve_until = _NEVER
            logger.error("No access token: {}", exc)
            return
        delay = self._schedule.backoff(self.stats.failure_count, exc.retry_after)
        self._serve_until = min(now + delay, token.usable_until)
        logger.error(
            "Token refresh failed ({}); still serving the current token, valid for {:.0f}s "
            "more; next attempt in {:.1f}s. {}",
            exc.reason,
            token.expires_at - now,
            self._serve_until - now,
            exc,
        )
