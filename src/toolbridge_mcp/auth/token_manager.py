"""Access tokens from OAuth2 client credentials, cached and refreshed ahead of expiry.

Why it is shaped this way: callers must never wait on the identity provider once a token
exists. A cached token is returned after one clock comparison; once its remaining lifetime
falls inside the refresh buffer, a single background task fetches the next one while callers
keep getting the current token; if the provider fails, the current token is served until it
actually expires and the refresh is retried with jittered backoff. Only a caller with no
usable token waits, on the one request in flight, bounded by one overall deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import stamina
from loguru import logger
from pydantic import SecretStr

from toolbridge_mcp.auth.oauth import (
    ClientAuthMethod,
    ClientCredentialsGrant,
    IssuedToken,
    TokenError,
    TokenResponse,
)

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings

__all__ = [
    "TokenError",
    "TokenManager",
    "TokenResponse",
    "get_access_token",
    "init_token_manager",
    "shutdown_token_manager",
]

_EXPIRY_MARGIN = 10.0
"""Seconds before expiry after which a token is no longer handed out (clock skew, transit)."""
_RETRY_AFTER_CAP = 300.0
"""Longest ``Retry-After`` cool-down honoured for background refreshes."""
_NEVER = float("-inf")


@dataclass(frozen=True, slots=True)
class _CachedToken:
    """A token and its schedule, all on the monotonic clock."""

    value: str = field(repr=False)
    lifetime: float
    expires_at: float
    refresh_at: float
    usable_until: float
    scope: str | None


class TokenManager:
    """Fetches, caches and refreshes OAuth2 client-credentials access tokens.

    ``domain`` selects Auth0 (``POST https://{domain}/oauth/token`` with a JSON body);
    ``token_url`` selects any RFC 6749 server (form body). ``clock`` is injectable so that
    expiry can be tested without waiting; it must be monotonic.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str | SecretStr,
        domain: str | None = None,
        audience: str | None = None,
        *,
        token_url: str | None = None,
        scope: str | None = None,
        resource: str | None = None,
        auth_method: ClientAuthMethod = "client_secret_post",
        refresh_buffer: float = 300.0,
        timeout: float = 10.0,
        deadline: float = 15.0,
        retry_attempts: int = 4,
        retry_wait_initial: float = 0.2,
        retry_wait_max: float = 5.0,
        background_retry_max: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (token_url or domain):
            raise ValueError("TokenManager needs an Auth0 domain or a token_url")
        secret = client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        self._grant = ClientCredentialsGrant(
            token_url=token_url or f"https://{domain}/oauth/token",
            client_id=client_id,
            client_secret=secret,
            audience=audience,
            scope=scope,
            resource=resource,
            auth_method=auth_method,
            json_body=token_url is None,
        )
        self._refresh_buffer = refresh_buffer
        self._timeout = timeout
        self._deadline = deadline
        self._retry_attempts = retry_attempts
        self._retry_wait_initial = retry_wait_initial
        self._retry_wait_max = retry_wait_max
        self._background_retry_max = background_retry_max
        self._http = http_client
        self._owns_http = http_client is None
        self._clock = clock

        self._token: _CachedToken | None = None
        self._value = ""
        self._serve_until = _NEVER
        self._inflight: asyncio.Task[_CachedToken] | None = None
        self._closed = False

        self._last_refresh_at: datetime | None = None
        self._last_refresh_success: bool | None = None
        self._failure_count = 0
        self._failures_total = 0
        self._refresh_count = 0
        self._last_error: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> TokenManager:
        """A manager for the ``auth0`` mode of ``settings``; ``options`` as for the constructor."""
        if settings.auth_mode() != "auth0":
            raise ValueError("Auth0 client credentials are not configured")
        assert settings.auth0_client_id is not None
        assert settings.auth0_client_secret is not None
        return cls(
            settings.auth0_client_id,
            settings.auth0_client_secret,
            settings.auth0_domain,
            settings.auth0_audience,
            token_url=settings.auth0_token_url,
            scope=settings.auth0_scope,
            resource=settings.auth0_resource,
            auth_method=settings.auth0_client_auth_method,
            refresh_buffer=settings.token_refresh_buffer_seconds,
            timeout=settings.auth0_timeout_seconds,
            deadline=settings.token_request_deadline_seconds,
            **options,
        )

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
            self._ensure_fetch()
            self._serve_until = token.usable_until
            return token.value
        fetched = await asyncio.shield(self._ensure_fetch())
        return fetched.value

    def invalidate(self, rejected_token: str) -> bool:
        """Forget the cached token if it is the one the API rejected (401), so the next
        call fetches a fresh one. Concurrent rejections of one token cause one refetch."""
        token = self._token
        if token is None or token.value != rejected_token:
            return False
        self._token = None
        self._value = ""
        self._serve_until = _NEVER
        logger.warning(
            "The API rejected the current access token (it was valid for {:.0f}s more); "
            "fetching a new one",
            token.expires_at - self._clock(),
        )
        return True

    async def start(self) -> None:
        """Fetch the first token now, so the first caller does not wait. A failure is
        logged and shows in the health properties; the next :meth:`get_token` tries again."""
        try:
            await self.get_token()
        except TokenError:
            return

    async def close(self) -> None:
        """Cancel a refresh in flight and release the HTTP client; nothing is left running."""
        self._closed = True
        self._serve_until = _NEVER
        self._token = None
        self._value = ""
        task = self._inflight
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._owns_http and self._http is not None:
            await self._http.aclose()
        self._http = None

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
        return self._grant.token_url

    @property
    def audience(self) -> str | None:
        """The audience requested."""
        return self._grant.audience

    @property
    def expires_at(self) -> datetime | None:
        """When the cached token expires (UTC), or ``None`` without one."""
        token = self._token
        if token is None:
            return None
        return datetime.now(UTC) + timedelta(seconds=token.expires_at - self._clock())

    @property
    def last_refresh_at(self) -> datetime | None:
        """When the last token request finished, successful or not (UTC)."""
        return self._last_refresh_at

    @property
    def last_refresh_success(self) -> bool | None:
        """Whether the last token request succeeded; ``None`` before the first."""
        return self._last_refresh_success

    @property
    def failure_count(self) -> int:
        """Consecutive failed token requests (0 once one succeeds)."""
        return self._failure_count

    @property
    def failures_total(self) -> int:
        """Failed token fetches since start; unlike :attr:`failure_count` it never resets,
        so a metrics scraper sees every failure."""
        return self._failures_total

    @property
    def refresh_count(self) -> int:
        """Tokens fetched since start."""
        return self._refresh_count

    @property
    def last_error(self) -> str | None:
        """Short reason of the last failure (``HTTP 503 temporarily_unavailable``), if any."""
        return self._last_error

    @property
    def scope(self) -> str | None:
        """The scopes the identity provider granted to the cached token, if it said."""
        return None if self._token is None else self._token.scope

    def _ensure_fetch(self) -> asyncio.Task[_CachedToken]:
        """The one token request in flight, started if there is none (single flight)."""
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch(), name="toolbridge-token-fetch")
            self._inflight.add_done_callback(_retrieve_exception)
        return self._inflight

    async def _fetch(self) -> _CachedToken:
        try:
            token = await self._request_with_retries()
        except TokenError as exc:
            self._record_failure(exc)
            raise
        except Exception as exc:
            # Not the IdP's doing (a bad URL, a bug): still counted and logged, never silent
            # in a background refresh. Type and message only: a traceback could show locals.
            detail = str(exc).replace(self._grant.client_secret.get_secret_value(), "***")
            error = TokenError(f"Token request failed unexpectedly: {type(exc).__name__}: {detail}")
            self._record_failure(error)
            raise error from None
        finally:
            self._inflight = None
        self._install(token)
        return token

    async def _request_with_retries(self) -> _CachedToken:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._deadline

        def retry_or_wait(exc: Exception) -> bool | float:
            if not isinstance(exc, TokenError) or not exc.retryable:
                return False
            if exc.retry_after is None:
                return True
            return exc.retry_after if exc.retry_after < give_up_at - loop.time() else False

        try:
            async with asyncio.timeout(self._deadline):
                async for attempt in stamina.retry_context(
                    on=retry_or_wait,
                    attempts=self._retry_attempts,
                    timeout=None,
                    wait_initial=self._retry_wait_initial,
                    wait_max=self._retry_wait_max,
                    wait_jitter=self._retry_wait_initial,
                ):
                    with attempt:
                        requested_at = self._clock()
                        try:
                            issued = await self._grant.request(
                                self._client(), http_timeout=self._timeout
                            )
                        except TokenError as exc:
                            logger.warning(
                                "Token request attempt {}/{} to {} failed: {}",
                                attempt.num,
                                self._retry_attempts,
                                self._grant.token_url,
                                exc.reason,
                            )
                            raise
                        return self._schedule(issued, requested_at)
        except TimeoutError:
            raise TokenError(
                f"No token from {self._grant.token_url} within {self._deadline:g}s "
                "(TOOLBRIDGE_TOKEN_REQUEST_DEADLINE_SECONDS): the identity provider is slow "
                "or unreachable",
                retryable=True,
                cause="deadline exceeded",
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover - stamina re-raises

    def _schedule(self, issued: IssuedToken, requested_at: float) -> _CachedToken:
        """Refresh ahead by the buffer, but never more than half the lifetime, so short
        lived tokens are cached too. The lifetime counts from when the request was sent."""
        lifetime = issued.lifetime
        expires_at = requested_at + lifetime
        usable_until = expires_at - min(_EXPIRY_MARGIN, lifetime / 10)
        refresh_at = min(expires_at - min(self._refresh_buffer, lifetime / 2), usable_until)
        return _CachedToken(
            value=issued.value,
            lifetime=lifetime,
            expires_at=expires_at,
            refresh_at=refresh_at,
            usable_until=usable_until,
            scope=issued.scope,
        )

    def _install(self, token: _CachedToken) -> None:
        self._token = token
        self._value = token.value
        self._serve_until = token.refresh_at
        self._last_refresh_at = datetime.now(UTC)
        self._last_refresh_success = True
        self._failure_count = 0
        self._last_error = None
        self._refresh_count += 1
        expires = self._last_refresh_at + timedelta(seconds=token.expires_at - self._clock())
        logger.info(
            "Access token refreshed: valid for {:.0f}s, expires at {}, next refresh in {:.0f}s "
            "(audience {}, endpoint {})",
            token.lifetime,
            expires.isoformat(timespec="seconds"),
            token.refresh_at - self._clock(),
            self._grant.audience or "-",
            self._grant.token_url,
        )

    def _record_failure(self, exc: TokenError) -> None:
        self._last_refresh_at = datetime.now(UTC)
        self._last_refresh_success = False
        self._failure_count += 1
        self._failures_total += 1
        self._last_error = exc.reason
        token, now = self._token, self._clock()
        if token is None or now >= token.usable_until:
            self._serve_until = _NEVER
            logger.error("No access token: {}", exc)
            return
        delay = self._background_delay(exc)
        self._serve_until = min(now + delay, token.usable_until)
        logger.error(
            "Token refresh failed ({}); still serving the current token, valid for {:.0f}s "
            "more; next attempt in {:.1f}s. {}",
            exc.reason,
            token.expires_at - now,
            self._serve_until - now,
            exc,
        )

    def _background_delay(self, exc: TokenError) -> float:
        """Capped exponential backoff with jitter between failed background refreshes,
        never shorter than the server's ``Retry-After``."""
        ceiling = min(self._background_retry_max, 2.0 ** min(self._failure_count - 1, 16))
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, _RETRY_AFTER_CAP))
        return delay

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        return self._http


def _retrieve_exception(task: asyncio.Task[_CachedToken]) -> None:
    """A background refresh may fail with nobody awaiting it; its failure is already
    logged and counted, so mark it retrieved instead of letting asyncio warn."""
    if not task.cancelled():
        task.exception()


_token_manager: TokenManager | None = None


def init_token_manager(
    client_id: str,
    client_secret: str | SecretStr,
    domain: str | None = None,
    audience: str | None = None,
    **options: Any,
) -> TokenManager:
    """Create the process-wide token manager (no I/O: the first token is fetched lazily)."""
    global _token_manager
    _token_manager = TokenManager(client_id, client_secret, domain, audience, **options)
    logger.info("Auth0 token manager initialized (endpoint {})", _token_manager.token_url)
    return _token_manager


async def get_access_token() -> str:
    """A valid access token from the process-wide token manager."""
    if _token_manager is None:
        raise RuntimeError("Token manager not initialized. Call init_token_manager() first.")
    return await _token_manager.get_token()


async def shutdown_token_manager() -> None:
    """Close the process-wide token manager, if any."""
    global _token_manager
    if _token_manager is not None:
        await _token_manager.close()
        _token_manager = None
