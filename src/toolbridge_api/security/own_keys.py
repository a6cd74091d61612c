"""The API's own tokens: short-lived RS256 access tokens it issues by token exchange (RFC 8693),
signed with its own key, published in its JWKS and accepted by its own verifier.

Why it is shaped this way: an MCP server that acts for a user must not send the user's token
(issued for the MCP server) to the API. It exchanges it at ``POST /auth/token-exchange`` for a
token issued for the API, for the same subject. Those tokens carry the API's own issuer id
(``iss``, default ``toolbridge-api``), so the authenticator knows which key verifies them:
a token claiming that issuer is checked with the API's key alone, every other token with the
identity provider's keys alone. A forged ``iss`` therefore gains nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import jwt
from loguru import logger

from toolbridge_api.security.principal import AuthError, checked_user_id
from toolbridge_api.security.tokens import decode_claims
from toolbridge_common.signing_keys import SigningKey, SigningKeyError, load_or_create_key_file

if TYPE_CHECKING:
    from toolbridge_api.config import ApiSettings

MAX_TOKEN_LENGTH = 16_384
"""Longer bearer values are never taken for the API's own tokens (nor any others)."""
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URI
TOKEN_TYPE_HEADER = "at+jwt"  # noqa: S105 - a media type
"""RFC 9068 ``typ`` of a JWT access token."""
LEEWAY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class IssuedApiToken:
    """A token the API issued, and how long it lives."""

    token: str = field(repr=False)
    expires_in: int
    claims: dict[str, Any]


class OwnTokens:
    """Issues and verifies the API's own access tokens.

    ``issuer`` is their ``iss``, ``audience`` their ``aud`` (the API's audience), ``lifetime``
    their longest life in seconds. ``clock`` is Unix time (injectable for tests).
    """

    def __init__(
        self,
        key: SigningKey,
        *,
        issuer: str,
        audience: str,
        lifetime_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.issuer = issuer
        self.audience = audience
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> OwnTokens:
        """The API's tokens as configured; reads (or, the first time, creates) the key."""
        if settings.audience is None:
            raise ValueError("the API's own tokens need TOOLBRIDGE_API_AUDIENCE")
        return cls(
            load_signing_key(settings),
            issuer=settings.exchange_token_issuer,
            audience=settings.audience,
            lifetime_seconds=settings.exchange_token_lifetime_seconds,
        )

    def jwks(self) -> dict[str, Any]:
        """The public key set to publish at ``/.well-known/jwks.json``."""
        return {"keys": [self.key.public_jwk()]}

    def issue(self, subject: str, *, not_after: float | None = None) -> IssuedApiToken:
        """A token for ``subject``, living the configured lifetime but never past
        ``not_after`` (the exchanged token's ``exp``): an exchange cannot extend a session."""
        now = int(self._clock())
        expires_at = now + self.lifetime_seconds
        if not_after is not None:
            expires_at = min(expires_at, int(not_after))
        if expires_at <= now:
            raise ValueError("the token to exchange has expired")
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": expires_at,
            "jti": uuid.uuid4().hex,
        }
        token = self.key.sign(claims, headers={"typ": TOKEN_TYPE_HEADER})
        return IssuedApiToken(token=token, expires_in=expires_at - now, claims=claims)

    def issued_here(self, token: str) -> bool:
        """Whether ``token`` claims to be one of ours (its ``iss``, unverified): then only
        :meth:`verify` may accept it."""
        if len(token) > MAX_TOKEN_LENGTH:
            return False
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return isinstance(claims, dict) and claims.get("iss") == self.issuer

    def verify(self, token: str) -> str:
        """The ``sub`` of one of our tokens; :class:`AuthError` 401 otherwise. Messages never
        contain the token."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(401, "access token is not a well-formed JWT") from None
        if header.get("alg") != "RS256":
            raise AuthError(401, "the API's own access tokens are RS256")
        if header.get("kid") != self.key.kid:
            raise AuthError(401, "access token kid does not match the API's signing key")
        claims = decode_claims(
            token,
            self.key.public_key,
            alg="RS256",
            audience=self.audience,
            issuer=self.issuer,
            leeway=LEEWAY_SECONDS,
            required=["exp", "iat", "sub", "iss", "aud"],
        )
        return checked_user_id(claims.get("sub"), source="the access token's sub claim")


def load_signing_key(settings: ApiSettings) -> SigningKey:
    """The key of ``TOOLBRIDGE_API_EXCHANGE_SIGNING_KEY`` if set, else the key file (created,
    mode 0600, if missing). :class:`SigningKeyError` names what to fix."""
    if settings.exchange_signing_key is not None:
        return SigningKey.from_pem(
            settings.exchange_signing_key.get_secret_value().encode(),
            source="TOOLBRIDGE_API_EXCHANGE_SIGNING_KEY",
        )
    path = settings.exchange_signing_key_file.expanduser()
    existed = path.exists()
    key = load_or_create_key_file(path)
    if existed:
        logger.info("Token exchange signs with {} (kid {})", path, key.kid)
    return key


__all__ = [
    "ACCESS_TOKEN_TYPE",
    "IssuedApiToken",
    "OwnTokens",
    "SigningKeyError",
    "load_signing_key",
]
