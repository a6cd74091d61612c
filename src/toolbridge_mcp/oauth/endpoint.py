"""Asking a token endpoint for a token: :class:`TokenEndpoint` is one request (what to send
where), :class:`TokenClient` sends it with retries over a pooled HTTP client. Nothing here
caches or schedules; that is :mod:`toolbridge_mcp.tokens`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from loguru import logger
from pydantic import SecretStr

from toolbridge_mcp.oauth.client_auth import (
    ClientAuthentication,
    ClientAuthMethod,
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
        client_secret: str | SecretStr,
        *,
        domain: str | None = None,
        token_url: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
        resource: str | None = None,
        auth_method: ClientAuthMethod = "client_secret_post",
    ) -> TokenEndpoint:
        """Client credentials at Auth0 (``domain``: ``POST https://{domain}/oauth/token``,
        JSON) or at any RFC 6749 server (``token_url``: form body)."""
        if not (token_url or domain):
            raise ValueError("a client-credentials token endpoint needs a domain or a token_url")
        secret = client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        return cls(
            token_url=token_url or f"https://{domain}/oauth/token",
            grant=ClientCredentialsGrant(audience=audience, scope=scope, resource=resource),
            client_auth=client_authentication(auth_method, client_id, secret),
            json_body=token_url is None,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenEndpoint:
        """The client-credentials endpoint of the ``TOOLBRIDGE_AUTH0_*`` settings."""
        if settings.auth0_client_id is None or settings.auth0_client_secret is None:
            raise ValueError("Auth0 client credentials are not configured")
        return cls.client_credentials(
            settings.auth0_client_id,
            settings.auth0_client_secret,
            domain=settings.auth0_domain,
            token_url=settings.auth0_token_url,
            audience=settings.auth0_audience,
            scope=settings.auth0_scope,
            resource=settings.auth0_resource,
            auth_method=settings.auth0_client_auth_method,
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
    def from_settings(cls, settings: Settings, **options: Any) -> TokenClient:
        """The client of the ``TOOLBRIDGE_AUTH0_*`` and ``TOOLBRIDGE_TOKEN_*`` settings;
        ``options`` as for the constructor."""
        options.setdefault("retry", RetryPolicy.from_settings(settings))
        options.setdefault("timeout", settings.auth0_timeout_seconds)
        return cls(TokenEndpoint.from_settings(settings), **options)

    @property
    def token_url(self) -> str:
        return self.endpoint.token_url

    @property
    def audience(self) -> str | None:
        return self.endpoint.audience

    @property
    def cache_key(self) -> str:
        return self.endpoint.cache_key

    async def fetch(self, clock: Clock = time.monotonic) -> IssuedToken:
        """A new token; :class:`TokenError` (logged per attempt) when none can be had."""
        attempts = 0

        async def token_request() -> IssuedToken:
            nonlocal attempts
            attempts += 1
            try:
                return await self.endpoint.request(
                    self._client(), http_timeout=self._timeout, clock=clock
                )
            except TokenError as exc:
                logger.warning(
                    "Token request attempt {}/{} to {} failed: {}",
                    attempts,
                    self.retry.attempts,
                    self.token_url,
                    exc.reason,
                )
                raise

        try:
            return await self.retry.call(token_request)
        except TokenError:
            raise
        except DeadlineExceeded:
            raise TokenError(
                f"No token from {self.token_url} within {self.retry.deadline:g}s "
                "(TOOLBRIDGE_TOKEN_REQUEST_DEADLINE_SECONDS): the identity provider is slow "
                "or unreachable",
                retryable=True,
                cause="deadline exceeded",
            ) from None
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

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
            self._owns_http = True
        return self._http
