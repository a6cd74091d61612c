"""Reading a token endpoint's answer: the token, its lifetime, and the ``Retry-After``."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import jwt
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator

from toolbridge_mcp.oauth.errors import TokenError


class TokenResponse(BaseModel):
    """A successful token endpoint answer (RFC 6749 §5.1)."""

    access_token: SecretStr = Field(min_length=1)
    token_type: str = "Bearer"  # noqa: S105 - the token type name, not a secret
    expires_in: int | None = Field(default=None, gt=0)
    scope: str | None = None
    refresh_in: float | None = None
    """When to refresh, in seconds after issue, if the server advises it (Microsoft Entra
    does); a value that is not a positive number is ignored."""

    @field_validator("refresh_in", mode="before")
    @classmethod
    def _lenient_refresh_in(cls, value: Any) -> Any:
        """Advice only: an unusable value must not cost the token."""
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return None
        try:
            seconds = float(value)
        except ValueError:
            return None
        return seconds if math.isfinite(seconds) and seconds > 0 else None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token as issued. ``lifetime`` counts from ``requested_at``, when the request that
    got it was sent (on the clock of whoever asked), so a slow answer cannot stretch it."""

    value: str = field(repr=False)
    lifetime: float
    requested_at: float
    scope: str | None = None
    refresh_in: float | None = None
    """The server's advice: refresh this many seconds after ``requested_at``."""


def parse_token_response(
    response: httpx.Response, *, token_url: str, requested_at: float
) -> IssuedToken:
    """The token of a 200 answer, or a :class:`TokenError` saying what is wrong with it."""
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
            f"The token endpoint {token_url} answered 200 with {problem}",
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
    return IssuedToken(
        value=value,
        lifetime=float(lifetime),
        requested_at=requested_at,
        scope=token.scope,
        refresh_in=token.refresh_in,
    )


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
