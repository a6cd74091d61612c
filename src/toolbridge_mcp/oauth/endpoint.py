"""Asking a token endpoint for a token: :class:`TokenEndpoint` is one request (what to send
where), :class:`TokenClient` sends it with retries over a pooled HTTP client. Nothing here
caches or schedules; that is :mod:`toolbridge_mcp.tokens`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from loguru import logger
from pydantic import SecretStr

from toolbridge_common.discovery import DiscoveryError, discover
from toolbridge_mcp.oauth.client_auth import (
    ClientAuthentication,
    ClientAuthMethod,
    ClientKey,
    client_authentication,
)
from toolbridge_mcp.oauth.errors import TokenError, error_from_response
from toolbridge_mcp.oauth.grants import ClientCredentialsGrant, Grant
from toolbridge_mcp.oauth.response import IssuedToken, parse_retry_after, parse_token_response
from toolbridge_mcp.oauth.retry import DeadlineExceeded, RetryPolicy

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class TokenEndpoint:
    """One token request: ``grant`` and ``client_auth`` posted to ``token_url``.

    ``json_body`` sends the JSON body Auth0 documents; otherwise the RFC 6749 form body.
    """

    token_url: str
    grant: Grant
    client_auth: ClientAuthentication
    json_body: bool = False

    @classmethod
    def client_credentials(
        cls,
        client_id: str,
        client_secret: str | SecretStr | None = None,
        *,
        domain: str | None = None,
        token_url: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
        resource: str | None = None,
        auth_method: ClientAuthMethod = "client_secret_post",
        client_key: ClientKey | None = None,
    ) -> TokenEndpoint:
        """Client credentials at Auth0 (``domain``: ``POST https://{domain}/oauth/token``,
        JSON) or at any RFC 6749 server (``token_url``: form body). The client proves itself
        with ``client_secret``, or with ``client_key`` for ``private_key_jwt``."""
        if not (token_url or domain):
            raise ValueError("a client-credentials token endpoint needs a domain or a token_url")
        secret = (
            client_secret
            if client_secret is None or isinstance(client_secret, SecretStr)
            else SecretStr(client_secret)
        )
        return cls(
            token_url=token_url or f"https://{domain}/oauth/token",
            grant=ClientCredentialsGrant(audience=audience, scope=scope, resource=resource),
            client_auth=client_authentication(
                auth_method, client_id, secret, client_key=client_key
            ),
            json_body=token_url is None,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, token_url: str | None = None) -> TokenEndpoint:
        """The client-credentials endpoint of the ``TOOLBRIDGE_AUTH0_*`` settings (the
        private key included); ``token_url``: the one discovered from
        ``TOOLBRIDGE_AUTH0_ISSUER`` (explicit settings win over it)."""
        if settings.auth0_client_id is None:
            raise ValueError("OAuth client credentials are not configured")
        explicit = settings.auth0_token_url
        if not (explicit or settings.auth0_domain or token_url):
            raise ValueError("no token endpoint: it must be discovered first")
        return cls.client_credentials(
            settings.auth0_client_id,
            settings.auth0_client_secret,
            domain=settings.auth0_domain,
            token_url=explicit or (None if settings.auth0_domain else token_url),
            audience=settings.auth0_audience,
            scope=settings.auth0_scope,
            resource=settings.auth0_resource,
            auth_method=settings.auth0_client_auth_method,
            client_key=settings.client_key(),
        )

    @property
    def audience(self) -> str | None:
        return self.grant.audience

    @property
    def cache_key(self) -> str:
        """Names the tokens this endpoint issues, for a token cache: the same endpoint,
        client and request give the same key. A hash: no secret or subject token in it."""
        identity = [self.token_url, self.client_auth.client_id, sorted(self.grant.fields().items())]
        digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
        return f"oauth-token:{digest}"

    def redact(self, text: str) -> str:
        """``text`` with every secret of this request replaced by ``***``."""
        for secret in (*self.client_auth.secrets(), *self.grant.secrets()):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _request_args(self) -> dict[str, Any]:
        credentials = self.client_auth.credentials(self.token_url)
        body = self.grant.fields() | credentials.fields
        headers = {"Accept": "application/json"} | credentials.headers
        return {"json" if self.json_body else "data": body, "headers": headers}

    async def request(
        self, http: httpx.AsyncClient, *, http_timeout: float, clock: Clock = time.monotonic
    ) -> IssuedToken:
        """Send one token request; raise :class:`TokenError` for anything but a usable token."""
        requested_at = clock()
        try:
            response = await http.post(self.token_url, timeout=http_timeout, **self._request_args())
        except httpx.TransportError as exc:
            cause = type(exc).__name__
            message = (
                f"Token request to {self.token_url} timed out ({cause})"
                if isinstance(exc, httpx.TimeoutException)
                else f"Cannot reach the token endpoint {self.token_url}: {cause}"
            )
            raise TokenError(message, retryable=True, cause=cause) from None
        if response.status_code != httpx.codes.OK:
            raise error_from_response(
                response,
                token_url=self.token_url,
                grant_name=self.grant.display_name,
                redact=self.redact,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return parse_token_response(response, token_url=self.token_url, requested_at=requested_at)


class TokenClient:
    """Gets tokens from one :class:`TokenEndpoint`: each attempt bounded by ``timeout``,
    retried by ``retry``. Uses ``http_client`` if given (and leaves it open), else its own."""

    def __init__(
        self,
        endpoint: TokenEndpoint,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.retry = retry or RetryPolicy()
        self._timeout = timeout
        self._http = http_client
        self._owns_http = http_client is None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, token_url: str | None = None, **options: Any
    ) -> TokenClient | DiscoveringTokenClient:
        """The client of the ``TOOLBRIDGE_AUTH0_*`` and ``TOOLBRIDGE_TOKEN_*`` settings;
        ``options`` as for the constructor. With only ``TOOLBRIDGE_AUTH0_ISSUER`` (and
        no ``token_url`` discovered already) a :class:`DiscoveringTokenClient`."""
        options.setdefault("retry", RetryPolicy.from_settings(settings))
        options.setdefault("timeout", settings.auth0_timeout_seconds)
        issuer = settings.auth0_issuer
        if not (settings.auth0_token_url or settings.auth0_domain or token_url) and issuer:
            return DiscoveringTokenClient(
                issuer,
                lambda url: TokenEndpoint.from_settings(settings, token_url=url),
                **options,
            )
        return cls(TokenEndpoint.from_settings(settings, token_url=token_url), **options)

    @property
    def token_url(self) -> str:
        return self.endpoint.token_url

    @property
    def audience(self) -> str | None:
        return self.endpoint.audience

    @property
    def cache_key(self) -> str:
        return self.endpoint.cache_key

    @property
    def deadline(self) -> float:
        """Longest a token request may take, all retries included."""
        return self.retry.deadline

    async def fetch(self, clock: Clock = time.monotonic) -> IssuedToken:
        """A new token; :class:`TokenError` (logged per attempt) when none can be had."""
        attempts = 0

        async def token_request() -> IssuedToken:
            nonlocal attempts
            attempts += 1
            try:
                return await self.endpoint.request(
                    await self._client(), http_timeout=self._timeout, clock=clock
                )
            except TokenError as exc:
                of = f"/{self.retry.attempts}" if self.retry.attempts else ""
                logger.warning(
                    "Token request attempt {}{} to {} failed: {}",
                    attempts,
                    of,
                    self.token_url,
                    exc.reason,
                )
                raise

        try:
            return await self.retry.call(token_request)
        except TokenError:
            raise
        except DeadlineExceeded as exc:
            raise deadline_error(self.token_url, self.retry.deadline, exc.last) from None
        except Exception as exc:
            # Not the IdP's doing (a bad URL, a bug): still a TokenError, counted and logged
            # by the caller. Type and message only: a traceback could show locals.
            detail = self.endpoint.redact(str(exc))
            raise TokenError(
                f"Token request failed unexpectedly: {type(exc).__name__}: {detail}"
            ) from None

    async def aclose(self) -> None:
        """Release the HTTP client if it is this client's own."""
        http, self._http = self._http, None
        if self._owns_http and http is not None:
            await http.aclose()

    async def _client(self) -> httpx.AsyncClient:
        """The HTTP client, built on first use in a worker thread: its TLS context loads the
        certificate store (~20 ms of CPU; ~100 ms more on the first import of httpcore),
        which on the event loop would stall every task of the process."""
        if self._http is None:
            http = await asyncio.to_thread(httpx.AsyncClient, timeout=self._timeout)
            if self._http is not None:  # another fetch built one meanwhile
                await http.aclose()
                return self._http
            self._http, self._owns_http = http, True
        return self._http


ISSUER_SETTING = "TOOLBRIDGE_AUTH0_ISSUER"


def deadline_error(token_url: str, deadline: float, last: TokenError | None) -> TokenError:
    """No token within ``deadline`` seconds; says what the last attempt got, if one ended."""
    why = (
        f": the last attempt failed: {last}"
        if last is not None
        else ": the identity provider is slow or unreachable"
    )
    return TokenError(
        f"No token from {token_url} within {deadline:g}s "
        f"(TOOLBRIDGE_TOKEN_REQUEST_DEADLINE_SECONDS){why}",
        error_code=None if last is None else last.error_code,
        status_code=None if last is None else last.status_code,
        retryable=True,
        cause="deadline exceeded",
    )


class DiscoveringTokenClient:
    """A :class:`TokenClient` whose token endpoint is discovered from ``issuer``'s metadata
    (:mod:`toolbridge_common.discovery`) by its first :meth:`fetch` — when the server
    starts — and kept for good. A failed discovery is a :class:`TokenError` naming the
    setting, so the token manager retries it like a failed token request."""

    def __init__(
        self,
        issuer: str,
        endpoint_at: Callable[[str], TokenEndpoint],
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.issuer = issuer
        self._endpoint_at = endpoint_at
        self.retry = retry or RetryPolicy()
        self._timeout = timeout
        self._http = http_client
        self._client: TokenClient | None = None
        # Before discovery the tokens are named by the issuer, the client and the request.
        self._placeholder = endpoint_at(issuer)

    @property
    def token_url(self) -> str:
        """The discovered endpoint, or the issuer while it is not known yet."""
        return self._client.token_url if self._client is not None else self.issuer

    @property
    def audience(self) -> str | None:
        return self._placeholder.audience

    @property
    def cache_key(self) -> str:
        return self._placeholder.cache_key

    @property
    def deadline(self) -> float:
        return self.retry.deadline

    @property
    def endpoint(self) -> TokenEndpoint | None:
        """The token endpoint, once discovered."""
        return None if self._client is None else self._client.endpoint

    async def fetch(self, clock: Clock = time.monotonic) -> IssuedToken:
        """Discover the endpoint if not done yet, then get a token from it."""
        if self._client is None:
            token_url = await self._discover()
            self._client = TokenClient(
                self._endpoint_at(token_url),
                retry=self.retry,
                timeout=self._timeout,
                http_client=self._http,
            )
            logger.info(
                "Token endpoint {} discovered from {}={}", token_url, ISSUER_SETTING, self.issuer
            )
        return await self._client.fetch(clock)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _discover(self) -> str:
        async def attempt() -> str:
            try:
                metadata = await discover(self.issuer, setting=ISSUER_SETTING, http=self._http)
            except DiscoveryError as exc:
                raise TokenError(str(exc), retryable=exc.retryable, cause="discovery") from None
            if metadata.token_endpoint is None:
                raise TokenError(
                    f"The metadata of {ISSUER_SETTING}={self.issuer} ({metadata.metadata_url}) "
                    "names no token_endpoint: set TOOLBRIDGE_AUTH0_TOKEN_URL"
                )
            return metadata.token_endpoint

        try:
            return await self.retry.call(attempt)
        except DeadlineExceeded as exc:
            why = f": {exc.last}" if exc.last is not None else ": it is slow or unreachable"
            raise TokenError(
                f"No authorization server metadata for {ISSUER_SETTING}={self.issuer} within "
                f"{self.retry.deadline:g}s{why}",
                retryable=True,
                cause="deadline exceeded",
            ) from None
