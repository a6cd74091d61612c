"""The OAuth2 client-credentials grant: one token request and its answer, nothing cached.

Everything that can go wrong at the token endpoint becomes a :class:`TokenError` here, in
one place, with the ``TOOLBRIDGE_*`` setting to check. Messages carry the OAuth ``error``
code and a short description, never the response body, the secret or a token.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote_plus

import httpx
import jwt
from pydantic import BaseModel, Field, SecretStr, ValidationError

ClientAuthMethod = Literal["client_secret_post", "client_secret_basic"]

_CREDENTIALS = "check TOOLBRIDGE_AUTH0_CLIENT_ID and TOOLBRIDGE_AUTH0_CLIENT_SECRET"
_GRANT = (
    "enable the Client Credentials grant for the application "
    "(TOOLBRIDGE_AUTH0_CLIENT_ID) at the identity provider"
)
_HINTS: dict[str, str] = {
    "invalid_client": f"{_CREDENTIALS} (and TOOLBRIDGE_AUTH0_CLIENT_AUTH_METHOD)",
    "unauthorized_client": _GRANT,
    "unsupported_grant_type": _GRANT,
    "invalid_grant": _GRANT,
    "access_denied": (
        "authorize the application for the API named by TOOLBRIDGE_AUTH0_AUDIENCE "
        "(Auth0: Applications > APIs > Machine to Machine Applications), or fix the audience"
    ),
    "invalid_scope": "check TOOLBRIDGE_AUTH0_SCOPE",
    "invalid_target": "check TOOLBRIDGE_AUTH0_RESOURCE and TOOLBRIDGE_AUTH0_AUDIENCE",
    "invalid_request": "check TOOLBRIDGE_AUTH0_AUDIENCE, TOOLBRIDGE_AUTH0_SCOPE and "
    "TOOLBRIDGE_AUTH0_CLIENT_AUTH_METHOD",
}
_STATUS_HINTS: dict[int, str] = {
    401: _HINTS["invalid_client"],
    403: _HINTS["access_denied"],
    404: "no token endpoint there: check TOOLBRIDGE_AUTH0_DOMAIN or TOOLBRIDGE_AUTH0_TOKEN_URL",
    405: "no token endpoint there: check TOOLBRIDGE_AUTH0_DOMAIN or TOOLBRIDGE_AUTH0_TOKEN_URL",
}
_MAX_DESCRIPTION = 200


class TokenError(Exception):
    """No token could be obtained.

    ``retryable`` says whether asking again may help (network, 5xx, 429); ``retry_after`` is
    the cool-down the server asked for, in seconds; ``error_code`` is the OAuth error code.
    """

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        status_code: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.error_code = error_code
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after

    @property
    def reason(self) -> str:
        """A few words for a log line: ``HTTP 503 temporarily_unavailable``, ``ConnectError``."""
        parts = [f"HTTP {self.status_code}" if self.status_code else None, self.error_code]
        return " ".join(p for p in parts if p) or self.cause or str(self)


class TokenResponse(BaseModel):
    """A successful token endpoint answer (RFC 6749 §5.1)."""

    access_token: SecretStr = Field(min_length=1)
    token_type: str = "Bearer"  # noqa: S105 - the token type name, not a secret
    expires_in: int | None = Field(default=None, gt=0)
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token as issued: its value and how long it lives from when it was requested."""

    value: str = field(repr=False)
    lifetime: float
    scope: str | None = None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _form_encode(value: str) -> str:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before HTTP Basic."""
    return quote_plus(value, safe="")


@dataclass(frozen=True, slots=True)
class ClientCredentialsGrant:
    """How to ask one token endpoint for a token with client credentials.

    ``json_body`` sends the JSON body Auth0 documents; otherwise the RFC 6749 form body.
    """

    token_url: str
    client_id: str
    client_secret: SecretStr
    audience: str | None = None
    scope: str | None = None
    resource: str | None = None
    auth_method: ClientAuthMethod = "client_secret_post"
    json_body: bool = False

    def _request_args(self) -> dict[str, Any]:
        secret = self.client_secret.get_secret_value()
        body: dict[str, str] = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        if self.auth_method == "client_secret_basic":
            pair = f"{_form_encode(self.client_id)}:{_form_encode(secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            body |= {"client_id": self.client_id, "client_secret": secret}
        optional = {"audience": self.audience, "scope": self.scope, "resource": self.resource}
        body |= {name: value for name, value in optional.items() if value}
        if self.json_body:
            return {"json": body, "headers": headers}
        return {"data": body, "headers": headers}

    async def request(self, client: httpx.AsyncClient, *, http_timeout: float) -> IssuedToken:
        """Send one token request; raise :class:`TokenError` for anything but a usable token."""
        try:
            response = await client.post(
                self.token_url, timeout=http_timeout, **self._request_args()
            )
        except httpx.TransportError as exc:
            cause = type(exc).__name__
            message = (
                f"Token request to {self.token_url} timed out ({cause})"
                if isinstance(exc, httpx.TimeoutException)
                else f"Cannot reach the token endpoint {self.token_url}: {cause}"
            )
            raise TokenError(message, retryable=True, cause=cause) from None
        return self.parse(response)

    def parse(self, response: httpx.Response) -> IssuedToken:
        """Turn a token endpoint response into an :class:`IssuedToken` or a :class:`TokenError`."""
        if response.status_code != httpx.codes.OK:
            raise self._error(response)
        try:
            token = TokenResponse.model_validate_json(response.content)
        except ValidationError as exc:
            fields = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
            problem = (
                f"invalid {', '.join(fields)} in its token response"
                if fields and exc.errors()[0]["type"] != "json_invalid"
                else "no JSON token response (is this the token endpoint? check "
                "TOOLBRIDGE_AUTH0_TOKEN_URL or TOOLBRIDGE_AUTH0_DOMAIN)"
            )
            raise TokenError(
                f"The token endpoint {self.token_url} answered 200 with {problem}",
                status_code=response.status_code,
            ) from None
        if token.token_type.lower() != "bearer":
            raise TokenError(
                f"The token endpoint issued a {token.token_type!r} token; only Bearer tokens "
                "are supported",
                status_code=response.status_code,
            )
        value = token.access_token.get_secret_value()
        lifetime = token.expires_in if token.expires_in is not None else _jwt_lifetime(value)
        return IssuedToken(value=value, lifetime=float(lifetime), scope=token.scope)

    def _error(self, response: httpx.Response) -> TokenError:
        status = response.status_code
        code, description = _oauth_error(response)
        if description:
            # Redact before shortening, so a secret cut at the limit cannot leak in part.
            description = description.replace(self.client_secret.get_secret_value(), "***")
            description = "".join(c for c in description if c.isprintable())[:_MAX_DESCRIPTION]
        retryable = status in {408, 429} or status >= 500
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        detail = " ".join(p for p in (code, f"({description})" if description else None) if p)
        message = f"Token request to {self.token_url} failed: HTTP {status}"
        if detail:
            message += f" {detail}"
        if status == 429:
            wait = f" for {retry_after:.0f}s" if retry_after is not None else ""
            message += f"; the identity provider is rate limiting this client{wait}"
        elif retryable:
            message += "; the identity provider is unavailable"
        else:
            hint = _HINTS.get(code or "") or _STATUS_HINTS.get(status)
            message += f": {hint}" if hint else ": check the TOOLBRIDGE_AUTH0_* settings"
        return TokenError(
            message,
            error_code=code,
            status_code=status,
            retryable=retryable,
            retry_after=retry_after,
        )


def _oauth_error(response: httpx.Response) -> tuple[str | None, str | None]:
    """The RFC 6749 §5.2 ``error`` code and ``error_description``, if the body has them."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code, description = body.get("error"), body.get("error_description")
    code = code if isinstance(code, str) and code.isprintable() and len(code) <= 64 else None
    return code, description if isinstance(description, str) else None


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT without checking its signature, or ``{}`` for an opaque token.

    Only for scheduling and display: the API is what verifies tokens.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _jwt_lifetime(token: str) -> float:
    """Without ``expires_in``, the lifetime comes from the JWT ``exp`` claim."""
    exp = unverified_claims(token).get("exp")
    if not isinstance(exp, int | float):
        raise TokenError(
            "The token endpoint gave no expires_in and the token has no exp claim, so its "
            "expiry is unknown; configure the identity provider to return expires_in"
        )
    lifetime = float(exp) - time.time()
    if lifetime <= 0:
        raise TokenError(
            "The token endpoint issued an already expired token (exp is in the past): "
            "check the identity provider's clock"
        )
    return lifetime
