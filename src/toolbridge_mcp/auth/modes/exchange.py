"""``token_exchange`` (per-user) mode: each MCP caller signs in, and the API is called with a
token exchanged for that caller — never with the caller's own token.

The MCP authorization spec (2025-06-18 and later) makes this server an OAuth resource server:
it accepts only tokens issued for itself (RFC 8707: audience = its own resource URL,
``{public URL}/mcp``), publishes RFC 9728 metadata naming that resource and the authorization
server, answers 401 (``invalid_token``) and 403 (``insufficient_scope``) with
``WWW-Authenticate``, and must not pass a caller's token through to an upstream API
(:func:`resource_server`). So for each call to the API the verified caller token is exchanged
(RFC 8693) for an API token for the same subject — at the API's ``POST /auth/token-exchange``
by default, or at the identity provider's token endpoint (``TOOLBRIDGE_OAUTH_EXCHANGE_URL``).

Exchanged tokens are kept per user (``iss|sub``) in a bounded LRU, each user's by its own
:class:`~toolbridge_mcp.tokens.TokenManager` (reused until it nears expiry, renewed ahead of
it, one exchange at a time per user) fed by an :class:`ExchangeSource` that always exchanges
the newest token the user presented. Sync sessions are per user too (:meth:`principal`).
FastMCP is imported only where it is used, so that choosing a mode stays light.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

import httpx
from loguru import logger

from toolbridge_mcp.auth.bearer import BearerAuth
from toolbridge_mcp.auth.modes.base import (
    MISSING_AUTHENTICATION,
    AuthCheck,
    AuthHealth,
    MissingAuthenticationError,
    OutboundAuth,
)
from toolbridge_mcp.config import env_name
from toolbridge_mcp.oauth import (
    ClientAuthentication,
    ClientCredentials,
    ClientSecretPost,
    IssuedToken,
    RetryPolicy,
    TokenClient,
    TokenEndpoint,
    TokenError,
)
from toolbridge_mcp.oauth.grants import TokenExchangeGrant
from toolbridge_mcp.tokens import CacheState, RefreshSchedule, TokenManager
from toolbridge_mcp.tokens.cache import MemoryTokenCache, token_cache_from_settings

if TYPE_CHECKING:
    from fastmcp.server.auth import RemoteAuthProvider

    from toolbridge_mcp.config import Settings
    from toolbridge_mcp.tokens.redis_cache import RedisTokenCache

EXCHANGE_PATH = "/auth/token-exchange"
"""The API's token exchange endpoint, the default ``TOOLBRIDGE_OAUTH_EXCHANGE_URL``."""
MAX_USERS = 1024
"""Users whose exchanged tokens are kept; the least recently active beyond it are dropped."""
MCP_PATH = "/mcp"

_SIGN_IN_SETTINGS = (
    "oauth_issuer",
    "oauth_jwks_url",
    "oauth_audience",
    "oauth_required_scopes",
)
_EXCHANGE_SETTINGS = (
    "oauth_exchange_url",
    "oauth_exchange_audience",
    "oauth_exchange_resource",
    "oauth_exchange_client_id",
    "oauth_exchange_client_secret",
)
_UNCONFIGURED = (
    f"per-user mode without sign-in: set {env_name('oauth_issuer')} and "
    f"{env_name('oauth_exchange_audience')} so MCP clients sign their users in, or configure "
    "client credentials (TOOLBRIDGE_AUTH0_CLIENT_ID) or a static token (TOOLBRIDGE_JWT_TOKEN)"
)


class TokenExchangeAuth(OutboundAuth):
    """For each API request: the verified MCP caller's token, exchanged for an API token for
    the same user (cached per user); a 401 from the API drops that token and exchanges
    again once (:class:`BearerAuth`)."""

    name = "token_exchange"
    selected_by = None  # the fallback: neither client credentials, a static token nor passthrough
    per_user = True
    error_hint = (
        "the API refused the token exchanged for you: the API must accept its own exchanged "
        "tokens (the exchange at TOOLBRIDGE_OAUTH_EXCHANGE_URL must issue them for the API's "
        "audience, TOOLBRIDGE_OAUTH_EXCHANGE_AUDIENCE, and the issuer the API trusts)"
    )
    caches_tokens = True

    def __init__(
        self,
        settings: Settings,
        *,
        max_users: int | None = None,
        refetch_cooldown: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._settings = settings
        self._max_users = max_users or MAX_USERS
        self._refetch_cooldown = refetch_cooldown
        self._endpoint = ExchangeEndpoint.from_settings(settings)
        self._given_http = http_client
        self._http: httpx.AsyncClient | None = http_client
        self._users: OrderedDict[str, _User] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()
        self._cache: MemoryTokenCache | RedisTokenCache | None = None
        self.exchanges = 0
        """Exchange requests sent since start (every attempt, failed ones included)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings)

    @property
    def endpoint(self) -> ExchangeEndpoint:
        return self._endpoint

    @property
    def users(self) -> int:
        """Users whose exchanged token is kept now."""
        return len(self._users)

    @classmethod
    def cache_secret(cls, settings: Settings) -> str | None:
        secret = settings.oauth_exchange_client_secret
        if secret is None or settings.oauth_exchange_client_id is None:
            return None
        return secret.get_secret_value()

    async def start(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._settings.auth0_timeout_seconds)
        if self._cache is None:
            self._cache = token_cache_from_settings(
                self._settings, secret=self.cache_secret(self._settings)
            )
            await self._cache.start()

    async def aclose(self) -> None:
        users = list(self._users.values())
        self._users.clear()
        for user in users:
            await user.manager.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        cache, self._cache = self._cache, None
        if cache is not None:
            await cache.aclose()
        http, self._http = self._http, self._given_http
        if http is not None and http is not self._given_http:
            await http.aclose()

    async def get_auth_header(self) -> str:
        return f"Bearer {await self._user().manager.get_token()}"

    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return self._user().bearer.async_auth_flow(request)

    @property
    def token_cache(self) -> CacheState | None:
        return None if self._cache is None else self._cache.state

    def principal(self) -> str:
        """The verified caller, ``user:{iss}|{sub}``: sessions and exchanged tokens are kept
        per user, never per token."""
        return _caller().key

    def health(self) -> AuthHealth:
        if self._settings.oauth_issuer is None:
            return AuthHealth("degraded", _UNCONFIGURED)
        managers = [user.manager for user in self._users.values()]
        failures = sum(manager.stats.failure_count for manager in managers)
        failing = [m.stats.last_error for m in managers if m.stats.last_refresh_success is False]
        detail = (
            f"per-user mode: callers sign in at {self._settings.oauth_issuer} for "
            f"{resource_url(self._settings)}; their tokens are exchanged at "
            f"{self._endpoint.url} for API tokens ({len(managers)} users cached)"
        )
        return AuthHealth(
            "ok",
            detail,
            failure_count=failures,
            last_error=failing[-1] if failing else None,
            token_cache=self.token_cache,
        )

    async def check(self) -> AuthCheck:
        if self._settings.oauth_issuer is None:
            return AuthCheck("fail", _UNCONFIGURED)
        return AuthCheck(
            "skip",
            f"per-user mode: each signed-in caller's token is exchanged at {self._endpoint.url} "
            "for an API token, so there is none to check with here; sign in with an MCP client "
            "(or set TOOLBRIDGE_AUTH0_CLIENT_ID or TOOLBRIDGE_JWT_TOKEN to check the API end "
            "to end)",
        )

    def log_startup(self) -> None:
        settings = self._settings
        if settings.oauth_issuer is None:
            logger.warning("No authentication configured: " + _UNCONFIGURED)
            return
        scopes = required_scopes(settings)
        logger.info(
            "Per-user mode: MCP callers sign in at {} and present tokens for {}{}; RFC 9728 "
            "metadata at {}/.well-known/oauth-protected-resource/mcp (/sse for the SSE "
            "transport)",
            settings.oauth_issuer,
            settings.oauth_audience or resource_url(settings),
            f" with scope {' '.join(scopes)}" if scopes else "",
            settings.public_base_url(),
        )
        logger.info(
            "Each caller's token is exchanged (RFC 8693) at {} for an API token (audience {}); "
            "callers' own tokens are never sent to the API",
            self._endpoint.url,
            self._endpoint.audience or self._endpoint.resource or "-",
        )

    def mcp_auth(self) -> RemoteAuthProvider | None:
        return resource_server(self._settings)

    def _user(self) -> _User:
        """The caller's entry, created on first use, moved to the recent end; its source
        takes the caller's current token (the later-expiring one, if two race)."""
        caller = _caller()
        user = self._users.get(caller.key)
        if user is None:
            user = self._new_user(caller)
            self._users[caller.key] = user
            while len(self._users) > self._max_users:
                _, evicted = self._users.popitem(last=False)
                self._close_later(evicted)
        else:
            self._users.move_to_end(caller.key)
            user.source.present(caller.subject)
        return user

    def _new_user(self, caller: _Caller) -> _User:
        source = ExchangeSource(
            self._endpoint,
            caller.key,
            caller.subject,
            http=self._http_client,
            retry=RetryPolicy.from_settings(self._settings),
            timeout=self._settings.auth0_timeout_seconds,
            on_request=self._count,
            on_expired=lambda: self._forget(caller.key, source),
        )
        # No refresh timer: a user who has gone needs no new token; a call past the refresh
        # time renews in the background while the current token is still served. Redis (fleet
        # mode) shares each user's exchanged token with the other servers; in memory each
        # user's manager keeps its own, dropped with it, so that MAX_USERS bounds memory.
        manager = TokenManager(
            source,
            schedule=RefreshSchedule.from_settings(self._settings),
            cache=None if self._settings.redis_url is None else self._cache,
            timer=False,
        )
        return _User(source, manager, BearerAuth(manager, refetch_cooldown=self._refetch_cooldown))

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("the token-exchange auth is not started")
        return self._http

    def _count(self) -> None:
        self.exchanges += 1

    def _forget(self, key: str, source: ExchangeSource) -> None:
        """Drop a user whose sign-in expired (their manager would only keep failing)."""
        user = self._users.get(key)
        if user is not None and user.source is source:
            del self._users[key]
            self._close_later(user)

    def _close_later(self, user: _User) -> None:
        task = asyncio.get_running_loop().create_task(user.manager.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


@dataclass(frozen=True, slots=True)
class _Subject:
    """A caller's verified token and its expiry (Unix seconds, if it says)."""

    token: str
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class _Caller:
    key: str
    subject: _Subject


@dataclass(slots=True)
class _User:
    source: ExchangeSource
    manager: TokenManager
    bearer: BearerAuth


def _caller() -> _Caller:
    """The verified MCP caller of the current request; never an unverified header."""
    from fastmcp.server.dependencies import get_access_token, get_http_request

    verified = get_access_token()
    if verified is None:
        try:
            get_http_request()
        except RuntimeError:
            raise MissingAuthenticationError(
                MISSING_AUTHENTICATION + " Per-user mode needs each MCP client's sign-in, which "
                "only the HTTP transport carries; under stdio configure client credentials or a "
                "static token."
            ) from None
        raise MissingAuthenticationError(
            MISSING_AUTHENTICATION + f" Or set {env_name('oauth_issuer')} and "
            f"{env_name('oauth_exchange_audience')} so MCP clients sign their users in "
            "(per-user mode)."
        )
    claims = verified.claims or {}
    issuer, subject = claims.get("iss"), claims.get("sub") or verified.subject
    if not isinstance(subject, str) or not subject:
        subject = "client:" + verified.client_id
    expires_at = float(verified.expires_at) if verified.expires_at is not None else None
    return _Caller(f"user:{issuer}|{subject}", _Subject(verified.token, expires_at))


@dataclass(frozen=True, slots=True)
class ExchangeEndpoint:
    """Where and how tokens are exchanged: the URL, the target (``audience``, ``resource``),
    the subject token type, and the client authentication (none by default)."""

    url: str
    audience: str | None
    resource: str | None
    subject_token_type: str
    client_auth: ClientAuthentication

    @classmethod
    def from_settings(cls, settings: Settings) -> ExchangeEndpoint:
        client_id = settings.oauth_exchange_client_id
        secret = settings.oauth_exchange_client_secret
        client_auth: ClientAuthentication = (
            PublicClient(client_id or "")
            if client_id is None or secret is None
            else ClientSecretPost(client_id, secret)
        )
        return cls(
            url=settings.oauth_exchange_url or f"{settings.go_api_base_url}{EXCHANGE_PATH}",
            audience=settings.oauth_exchange_audience,
            resource=settings.oauth_exchange_resource,
            subject_token_type=settings.oauth_exchange_subject_token_type,
            client_auth=client_auth,
        )

    def request_for(self, subject_token: str) -> TokenEndpoint:
        grant = TokenExchangeGrant(
            subject_token=subject_token,
            subject_token_type=self.subject_token_type,
            audience=self.audience,
            resource=self.resource,
        )
        return TokenEndpoint(self.url, grant, self.client_auth)

    def cache_key(self, principal: str) -> str:
        """Names one user's exchanged tokens: endpoint, client, target and user (a hash)."""
        identity = [self.url, self.client_auth.client_id, self.audience, self.resource, principal]
        digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
        return f"oauth-exchange:{digest}"


@dataclass(frozen=True, slots=True)
class PublicClient:
    """No client authentication (our API needs none), or just ``client_id`` in the body for
    a public client of an identity provider."""

    method: ClassVar[str] = "none"

    client_id: str

    def credentials(self, token_url: str) -> ClientCredentials:
        del token_url
        return ClientCredentials({"client_id": self.client_id} if self.client_id else {}, {})

    def secrets(self) -> tuple[str, ...]:
        return ()


class ExchangeSource:
    """A :class:`~toolbridge_mcp.tokens.manager.TokenSource` for one user: each fetch
    exchanges the newest token the user presented (:meth:`present`), through a
    :class:`~toolbridge_mcp.oauth.TokenClient` (retries, errors) on the shared client."""

    def __init__(
        self,
        endpoint: ExchangeEndpoint,
        principal: str,
        subject: _Subject,
        *,
        http: Callable[[], httpx.AsyncClient],
        retry: RetryPolicy,
        timeout: float,
        on_request: Callable[[], None] = lambda: None,
        on_expired: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._endpoint = endpoint
        self._principal = principal
        self._subject = subject
        self._http = http
        self._retry = retry
        self._timeout = timeout
        self._on_request = on_request
        self._on_expired = on_expired
        self._clock = clock

    def present(self, subject: _Subject) -> None:
        """The user called again with ``subject``: exchange it from now on, unless the one
        held lives longer (a slower request with an older token must not win)."""
        held = self._subject
        if held.token == subject.token:
            return
        unknown = held.expires_at is None or subject.expires_at is None
        if unknown or (subject.expires_at or 0) >= (held.expires_at or 0):
            self._subject = subject

    @property
    def token_url(self) -> str:
        return self._endpoint.url

    @property
    def audience(self) -> str | None:
        return self._endpoint.audience or self._endpoint.resource

    @property
    def cache_key(self) -> str:
        return self._endpoint.cache_key(self._principal)

    @property
    def deadline(self) -> float:
        """Longest an exchange may take, all retries included."""
        return self._retry.deadline

    async def fetch(self, clock: Callable[[], float]) -> IssuedToken:
        subject = self._subject
        if subject.expires_at is not None and subject.expires_at <= self._clock():
            self._on_expired()
            raise TokenError(
                "Your sign-in has expired: the MCP client must refresh its token (or sign in "
                "again) before the API can be called for you",
                cause="sign-in expired",
            )
        request = self._endpoint.request_for(subject.token)
        # The mode's pooled client, which TokenClient leaves open.
        client = TokenClient(
            request, retry=self._retry, timeout=self._timeout, http_client=self._http()
        )
        self._on_request()
        try:
            return await client.fetch(clock)
        except TokenError as exc:
            raise explained(exc, self._endpoint) from None

    async def aclose(self) -> None:
        """Nothing of its own: the HTTP client is the mode's."""


_HINTS: dict[str, str] = {
    "invalid_request": (
        "the exchange refused the caller's token: the API's "
        "TOOLBRIDGE_API_EXCHANGE_SUBJECT_AUDIENCE must be this server's resource URL and "
        "TOOLBRIDGE_API_ISSUER the issuer of TOOLBRIDGE_OAUTH_ISSUER"
    ),
    "invalid_token": (
        "the exchange refused the caller's token: the API's "
        "TOOLBRIDGE_API_EXCHANGE_SUBJECT_AUDIENCE must be this server's resource URL"
    ),
    "invalid_grant": "the identity provider refused the caller's token for exchange",
    "invalid_target": (
        "check TOOLBRIDGE_OAUTH_EXCHANGE_AUDIENCE / _RESOURCE (the API's audience, "
        "TOOLBRIDGE_API_AUDIENCE)"
    ),
    "unsupported_grant_type": (
        "token exchange is not enabled there: set TOOLBRIDGE_API_EXCHANGE_SUBJECT_AUDIENCE on "
        "the API, or point TOOLBRIDGE_OAUTH_EXCHANGE_URL at a token endpoint that exchanges"
    ),
    "invalid_client": "check TOOLBRIDGE_OAUTH_EXCHANGE_CLIENT_ID and _CLIENT_SECRET",
    "unauthorized_client": (
        "allow token exchange for TOOLBRIDGE_OAUTH_EXCHANGE_CLIENT_ID at the identity provider"
    ),
}


def explained(exc: TokenError, endpoint: ExchangeEndpoint) -> TokenError:
    """``exc`` (from the generic token request) told in terms of the exchange settings; what
    the exchange said is kept (redacted: never the caller's token)."""
    if exc.retryable:
        return exc
    text = str(exc)
    head, closed, _generic_hint = text.rpartition("): ")
    said = f"{head})" if closed else text
    said = said.removeprefix(f"Token request to {endpoint.url} failed: ")
    hint = _HINTS.get(exc.error_code or "") or (
        f"no token exchange there: check {env_name('oauth_exchange_url')}"
        if exc.status_code in (404, 405)
        else f"check the {env_name('oauth_exchange_')}* settings"
    )
    return TokenError(
        f"Token exchange at {endpoint.url} failed: {said}; {hint}",
        error_code=exc.error_code,
        status_code=exc.status_code,
        retryable=False,
        retry_after=exc.retry_after,
        cause=exc.cause,
    )


def resource_url(settings: Settings) -> str:
    """This server's resource URL on the streamable HTTP transport (RFC 8707, RFC 9728)."""
    return f"{settings.public_base_url()}{MCP_PATH}"


def required_scopes(settings: Settings) -> list[str]:
    """``TOOLBRIDGE_OAUTH_REQUIRED_SCOPES``, space separated."""
    return (settings.oauth_required_scopes or "").split()


def resource_server(settings: Settings) -> RemoteAuthProvider | None:
    """The MCP endpoint's protection when ``TOOLBRIDGE_OAUTH_ISSUER`` is set: RFC 9728
    metadata (this resource, its authorization server, the required scopes), and only
    tokens of that issuer for this resource (``TOOLBRIDGE_OAUTH_AUDIENCE``, default the
    resource URL of the transport in use) get through; others 401 ``invalid_token``, a
    token without a required scope 403 ``insufficient_scope``."""
    if settings.oauth_issuer is None:
        return None
    from fastmcp.server.auth import RemoteAuthProvider
    from fastmcp.server.auth.providers.jwt import JWTVerifier
    from pydantic import AnyHttpUrl

    from toolbridge_mcp.auth.verifier import StrictJWTVerifier

    class ResourceServer(RemoteAuthProvider):
        """Binds the verifier's audience to the resource URL once the MCP path is known
        (``/mcp``, or ``/sse`` for SSE), as clients are told in the metadata."""

        def set_mcp_path(self, mcp_path: str | None) -> None:
            super().set_mcp_path(mcp_path)
            if settings.oauth_audience is None and self._resource_url is not None:
                assert isinstance(self.token_verifier, JWTVerifier)
                self.token_verifier.audience = str(self._resource_url)

    scopes = required_scopes(settings)
    # No required scopes here: a token lacking one is a 403, not a 401.
    verifier = StrictJWTVerifier(
        jwks_uri=settings.jwks_url(discover=True),
        issuer=settings.oauth_issuer,
        audience=settings.oauth_audience or resource_url(settings),
    )
    return ResourceServer(
        token_verifier=verifier,
        authorization_servers=[AnyHttpUrl(settings.oauth_issuer)],
        base_url=settings.public_base_url(),
        resource_name="ToolBridge",
        required_scopes=scopes,
        scopes_supported=scopes,
        challenge_scopes=scopes,  # else the verifier's own (none) would be asked for
    )


def check_per_user_settings(settings: Settings) -> None:
    """The ``TOOLBRIDGE_OAUTH_*`` settings belong to the per-user modes, and each of those
    needs its own complete set: refused otherwise, naming what to set (``ValueError``)."""
    given = [name for name in (*_SIGN_IN_SETTINGS, *_EXCHANGE_SETTINGS) if getattr(settings, name)]
    if settings.oauth_passthrough:
        given.append("oauth_passthrough")
    if not given:
        return
    names = ", ".join(env_name(name) for name in given)
    mode = settings.outbound_mode()
    if not mode.per_user:
        chosen_by = env_name(mode.selected_by) if mode.selected_by else "the configuration"
        raise ValueError(
            f"{names} verify callers' own tokens, which only per-user mode uses, but "
            f"{chosen_by} selects {mode.name} mode (every caller would act as the same "
            "service identity). Unset one or the other"
        )
    if mode.name == "passthrough":
        _check_passthrough(settings, given)
    else:
        _check_exchange(settings)
    if settings.oauth_issuer and settings.public_url is None:
        from toolbridge_common.settings import is_loopback_host

        if not is_loopback_host(settings.host):
            raise ValueError(
                f"{env_name('public_url')} not set: MCP clients are told the URL to get tokens "
                f"for, and {env_name('host')} {settings.host} is not one they can reach; set it "
                "to the server's public URL, e.g. https://mcp.example.com"
            )


def _check_passthrough(settings: Settings, given: list[str]) -> None:
    exchange = [name for name in given if name in _EXCHANGE_SETTINGS]
    if exchange:
        raise ValueError(
            f"{', '.join(env_name(name) for name in exchange)} configure token exchange, which "
            f"{env_name('oauth_passthrough')}=true turns off; unset one or the other"
        )
    if not any(name in _SIGN_IN_SETTINGS for name in given):
        return  # the legacy unverified passthrough: the API alone checks callers' tokens
    missing = [env_name(n) for n in ("oauth_issuer", "oauth_audience") if not getattr(settings, n)]
    if missing:
        raise ValueError(
            f"incomplete per-user OAuth configuration: {' and '.join(missing)} not set. With "
            f"{env_name('oauth_passthrough')}=true set {env_name('oauth_issuer')} and "
            f"{env_name('oauth_audience')} (the API's audience: tokens are forwarded to it), or "
            f"neither (and no {env_name('oauth_jwks_url')})"
        )


def _check_exchange(settings: Settings) -> None:
    missing = [
        env_name(name)
        for name in ("oauth_issuer", "oauth_exchange_audience")
        if getattr(settings, name) is None
    ]
    if missing:
        raise ValueError(
            f"incomplete per-user OAuth configuration: {' and '.join(missing)} not set. Set "
            f"{env_name('oauth_issuer')} (where MCP clients sign their users in) and "
            f"{env_name('oauth_exchange_audience')} (the API's audience: each caller's token is "
            f"exchanged for a token for it), or none of the {env_name('oauth_')}* variables "
            f"({env_name('oauth_passthrough')}=true keeps the former, non-conformant forwarding "
            "of callers' tokens)"
        )
    audience = settings.oauth_audience
    targets = {settings.oauth_exchange_audience, settings.oauth_exchange_resource}
    if audience is not None and audience.rstrip("/") in {
        target.rstrip("/") for target in targets if target
    }:
        raise ValueError(
            f"{env_name('oauth_audience')} must identify this MCP server, not the API it calls "
            f"({env_name('oauth_exchange_audience')}): a token for the API must not be accepted "
            "here. Leave it unset to use this server's resource URL"
        )
    if settings.oauth_exchange_client_secret and not settings.oauth_exchange_client_id:
        raise ValueError(
            f"{env_name('oauth_exchange_client_secret')} is set without "
            f"{env_name('oauth_exchange_client_id')}"
        )


__all__ = [
    "EXCHANGE_PATH",
    "ExchangeEndpoint",
    "ExchangeSource",
    "PublicClient",
    "TokenExchangeAuth",
    "check_per_user_settings",
    "explained",
    "required_scopes",
    "resource_server",
    "resource_url",
]
