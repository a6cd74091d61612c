"""``POST /auth/token-exchange`` (RFC 8693) and the API's ``/.well-known/jwks.json``.

An MCP server acting for a user exchanges the user's token — issued for the MCP server, never
usable at the API itself — for a short-lived API token for the same subject, signed with the
API's own key (:mod:`toolbridge_api.security.own_keys`). Two request shapes are accepted:

- the standard form body (RFC 8693 §2.1): ``grant_type``, ``subject_token``,
  ``subject_token_type`` (an access token or JWT), ``audience`` and/or ``resource``;
- the original ToolBridge API's: a JSON body ``{grant_type, audience}`` with the user's token
  in ``Authorization: Bearer``.

Client authentication is not required (the subject token is the credential); a
``client_id``/``client_secret`` sent anyway is ignored. Answers are RFC 8693 §2.2 bodies,
errors RFC 6749 §5.2 bodies (``error``, ``error_description``) plus the correlation id. The
exchange is in the "auth" rate-limit group, per subject. It is off unless
``TOOLBRIDGE_API_EXCHANGE_SUBJECT_AUDIENCE`` is set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import jwt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from loguru import logger
from pydantic import BaseModel, Field

from toolbridge_api.config import ApiSettings
from toolbridge_api.errors import correlation_id
from toolbridge_api.routes.context import limit_rate
from toolbridge_api.security import AuthError, Principal, TokenVerifier
from toolbridge_api.security.authenticator import DEFAULT_TENANT
from toolbridge_api.security.headers import header_value
from toolbridge_api.security.own_keys import ACCESS_TOKEN_TYPE, OwnTokens

TOKEN_EXCHANGE_PATH = "/auth/token-exchange"  # noqa: S105 - a path
JWKS_PATH = "/.well-known/jwks.json"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a type URI
SUBJECT_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)
_FIELDS = (
    "grant_type",
    "subject_token",
    "subject_token_type",
    "audience",
    "resource",
    "requested_token_type",
    "actor_token",
    "actor_token_type",
    "scope",
)
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

router = APIRouter(tags=["auth"])


@dataclass
class TokenExchange:
    """What the exchange needs: the verifier of subject tokens (issuer and JWKS as the API's,
    audience the MCP server's) and the API's own tokens."""

    subjects: TokenVerifier
    own: OwnTokens

    async def aclose(self) -> None:
        await self.subjects.aclose()


def build_token_exchange(
    settings: ApiSettings, verifier_for: Callable[[str], TokenVerifier]
) -> TokenExchange | None:
    """The exchange the settings turn on, or ``None``; reads (or creates) the signing key.
    ``verifier_for(audience)``: a verifier of the identity provider's tokens, as the API's
    own but for ``audience``."""
    if settings.exchange_subject_audience is None:
        return None
    subjects = verifier_for(settings.exchange_subject_audience)
    own = OwnTokens.from_settings(settings)
    logger.info(
        "Token exchange on at {}: tokens for {} from {} become API tokens for {} (iss {}, "
        "kid {}, at most {} s)",
        TOKEN_EXCHANGE_PATH,
        settings.exchange_subject_audience,
        settings.issuer,
        own.audience,
        own.issuer,
        own.key.kid,
        own.lifetime_seconds,
    )
    return TokenExchange(subjects=subjects, own=own)


class TokenExchangeOut(BaseModel):
    """RFC 8693 §2.2.1."""

    access_token: str = Field(description="The API token: an RS256 JWT for the same subject.")
    issued_token_type: Literal["urn:ietf:params:oauth:token-type:access_token"] = ACCESS_TOKEN_TYPE
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the type name
    expires_in: int = Field(description="Seconds until it expires.")


class OAuthErrorOut(BaseModel):
    """RFC 6749 §5.2, plus the correlation id of every error of this API."""

    error: str = Field(description="invalid_request, invalid_token, invalid_target, ...")
    error_description: str = Field(description="What is wrong and what to send instead.")
    correlation_id: str = Field(description="Also in the X-Correlation-ID response header.")


class JwksOut(BaseModel):
    keys: list[dict[str, Any]] = Field(
        description="The API's signing key (empty while token exchange is off)."
    )


class _Refused(Exception):
    """An OAuth error answer."""

    def __init__(
        self, status: int, error: str, description: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}


_FORM = "application/x-www-form-urlencoded"
_REQUEST_BODY = {
    "required": True,
    "content": {
        media: {
            "schema": {
                "type": "object",
                "properties": {name: {"type": "string"} for name in _FIELDS[:6]},
                "required": ["grant_type"],
            }
        }
        for media in (_FORM, "application/json")
    },
}


@router.post(
    TOKEN_EXCHANGE_PATH,
    operation_id="token_exchange",
    response_model=TokenExchangeOut,
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        400: {"model": OAuthErrorOut, "description": "invalid_request, invalid_target, ..."},
        401: {"model": OAuthErrorOut, "description": "The Authorization token is invalid."},
        429: {"description": "Rate limit exceeded; see Retry-After."},
        503: {"model": OAuthErrorOut, "description": "The identity provider's keys are down."},
    },
)
async def token_exchange(request: Request) -> JSONResponse:
    """Exchanges a user's token for the MCP server (RFC 8693) for a short-lived API token for
    the same user. Form body with ``subject_token`` and ``subject_token_type``, or JSON
    ``{grant_type, audience}`` with the user's token in ``Authorization: Bearer``."""
    try:
        return await _exchange(request)
    except _Refused as refused:
        body = {
            "error": refused.error,
            "error_description": refused.description,
            "correlation_id": correlation_id(request),
        }
        return JSONResponse(
            body, status_code=refused.status, headers={**_NO_STORE, **refused.headers}
        )


@router.get(JWKS_PATH, operation_id="jwks")
async def jwks(request: Request) -> JwksOut:
    """The key the API signs exchanged tokens with (RFC 7517), for anyone verifying them."""
    exchange: TokenExchange | None = request.app.state.token_exchange
    return JwksOut(keys=[] if exchange is None else exchange.own.jwks()["keys"])


async def _exchange(request: Request) -> JSONResponse:
    form = await _parameters(request)
    grant_type = form.get("grant_type")
    if grant_type != GRANT_TYPE:
        raise _Refused(400, "unsupported_grant_type", f"Invalid grant_type. Expected: {GRANT_TYPE}")
    exchange: TokenExchange | None = request.app.state.token_exchange
    if exchange is None:
        raise _Refused(
            400,
            "unsupported_grant_type",
            "token exchange is not enabled on this API (TOOLBRIDGE_API_EXCHANGE_SUBJECT_AUDIENCE)",
        )
    token, from_header = _subject_token(request, form)
    wanted = form.get("requested_token_type")
    if wanted is not None and wanted not in SUBJECT_TOKEN_TYPES:
        raise _Refused(
            400,
            "invalid_request",
            f"requested_token_type: only access tokens ({ACCESS_TOKEN_TYPE}) are issued",
        )
    if form.get("actor_token") is not None or form.get("actor_token_type") is not None:
        raise _Refused(400, "invalid_request", "actor_token (delegation) is not supported")
    _check_target(form, exchange.own.audience)

    try:
        subject = await exchange.subjects.verify(token)
    except AuthError as exc:
        raise _subject_refused(exc, from_header=from_header) from None
    await limit_rate(request, "auth", Principal(DEFAULT_TENANT, subject))
    expiry = jwt.decode(token, options={"verify_signature": False}).get("exp")
    try:
        issued = exchange.own.issue(
            subject, not_after=float(expiry) if isinstance(expiry, int | float) else None
        )
    except ValueError as exc:
        raise _Refused(400, "invalid_request", f"subject_token: {exc}") from None
    logger.info(
        "Token exchange: API token for {!r}, valid {} s (jti {})",
        subject,
        issued.expires_in,
        issued.claims["jti"],
    )
    body = TokenExchangeOut(access_token=issued.token, expires_in=issued.expires_in)
    return JSONResponse(body.model_dump(), headers=_NO_STORE)


async def _parameters(request: Request) -> dict[str, str]:
    """The body's parameters, each a string given once; anything else is invalid_request."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    raw = await request.body()
    invalid = _Refused(
        400,
        "invalid_request",
        "Invalid request body: send a form (application/x-www-form-urlencoded) or a JSON "
        "object of string parameters",
    )
    if media == "application/json":
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise invalid from None
        if not isinstance(decoded, dict):
            raise invalid
        pairs = list(decoded.items())
    elif media == _FORM:
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise invalid from None
    else:
        raise invalid
    form: dict[str, str] = {}
    for name, value in pairs:
        if name not in _FIELDS:
            continue  # client_id, client_secret and other extensions: not used here
        if not isinstance(value, str):
            raise _Refused(400, "invalid_request", f"{name} must be a string")
        if name in form:
            raise _Refused(400, "invalid_request", f"{name} is given more than once")
        if value:
            form[name] = value
    return form


def _subject_token(request: Request, form: dict[str, str]) -> tuple[str, bool]:
    """The token to exchange and whether it came in ``Authorization`` (the original's way)."""
    authorization = header_value(request.headers, "Authorization")
    bearer: str | None = None
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            bearer = credentials.strip()
    token_type = form.get("subject_token_type")
    if token_type is not None and token_type not in SUBJECT_TOKEN_TYPES:
        raise _Refused(
            400,
            "invalid_request",
            f"subject_token_type must be {ACCESS_TOKEN_TYPE} (or {JWT_TOKEN_TYPE})",
        )
    token = form.get("subject_token")
    if token is not None:
        if token_type is None:
            raise _Refused(400, "invalid_request", "subject_token_type is required")
        if bearer is not None and bearer != token:
            raise _Refused(
                400, "invalid_request", "Authorization and subject_token name different tokens"
            )
        return token, False
    if bearer is None:
        raise _Refused(
            400,
            "invalid_request",
            "missing subject_token (with subject_token_type), or Authorization: Bearer <user "
            "token>",
        )
    return bearer, True


def _check_target(form: dict[str, str], audience: str) -> None:
    """``audience`` and ``resource`` may only name this API; one of them is required."""
    named = [form[name] for name in ("audience", "resource") if name in form]
    if not named:
        raise _Refused(400, "invalid_request", f"Missing audience: send audience={audience}")
    for target in named:
        if target.rstrip("/") != audience.rstrip("/"):
            raise _Refused(
                400,
                "invalid_target",
                f"this API issues tokens only for its own audience {audience}",
            )


def _subject_refused(exc: AuthError, *, from_header: bool) -> _Refused:
    """A subject token the verifier refused: 401 ``invalid_token`` when it came as the
    request's bearer (RFC 6750), else 400 ``invalid_request`` (RFC 8693 §2.2.2); 503 when
    the identity provider's keys cannot be loaded."""
    if exc.status == 503:
        wait = math.ceil(exc.retry_after or 1)
        return _Refused(503, "temporarily_unavailable", exc.message, {"Retry-After": str(wait)})
    if from_header:
        said = exc.message.replace('"', "'").replace("\\", "/")
        challenge = f'Bearer error="invalid_token", error_description="{said}"'
        return _Refused(401, "invalid_token", exc.message, {"WWW-Authenticate": challenge})
    return _Refused(400, "invalid_request", f"subject_token: {exc.message}")
