"""Access tokens shaped like Auth0's: RS256, ``iss``/``sub``/``aud``/``iat``/``exp``/``jti``."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from toolbridge_dev.issuer.keys import SigningKey


@dataclass(frozen=True)
class MintedToken:
    """A signed token and the claims it carries."""

    token: str = field(repr=False)
    claims: dict[str, Any]

    @property
    def expires_at(self) -> int:
        """``exp``, in seconds since the epoch."""
        expires_at: int = self.claims["exp"]
        return expires_at


def mint_client_token(
    key: SigningKey,
    *,
    issuer: str,
    client_id: str,
    audience: str,
    lifetime_seconds: int,
    scope: str | None = None,
) -> MintedToken:
    """A machine-to-machine token as Auth0 issues for client credentials: ``sub`` is
    ``<client_id>@clients``, with ``gty`` and ``azp``."""
    return _mint(
        key,
        issuer=issuer,
        subject=f"{client_id}@clients",
        audience=audience,
        lifetime_seconds=lifetime_seconds,
        extra={"gty": "client-credentials", "azp": client_id},
        scope=scope,
    )


def mint_user_token(
    key: SigningKey,
    *,
    issuer: str,
    subject: str,
    audience: str,
    lifetime_seconds: int,
    scope: str | None = None,
    client_id: str | None = None,
) -> MintedToken:
    """A token for a user (``sub`` as given), as a user's login would yield; with
    ``client_id`` (the client the user signed in to) also ``azp`` and RFC 9068 ``client_id``."""
    return _mint(
        key,
        issuer=issuer,
        subject=subject,
        audience=audience,
        lifetime_seconds=lifetime_seconds,
        extra={"azp": client_id, "client_id": client_id} if client_id else {},
        scope=scope,
    )


def _mint(
    key: SigningKey,
    *,
    issuer: str,
    subject: str,
    audience: str,
    lifetime_seconds: int,
    extra: dict[str, str],
    scope: str | None,
) -> MintedToken:
    """``jti`` makes every token distinct, even two minted in the same second."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime_seconds,
        **extra,
    }
    if scope:
        claims["scope"] = scope
    claims["jti"] = uuid.uuid4().hex
    return MintedToken(key.sign(claims), claims)
