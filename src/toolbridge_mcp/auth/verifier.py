"""The per-user modes' check of callers' tokens: FastMCP's ``JWTVerifier`` plus the claims it
leaves optional.

``JWTVerifier`` checks signature, issuer, audience, ``nbf`` and an ``exp`` *if present*: a
token without ``exp`` never expires, one without ``sub`` names nobody (the exchange and the
per-user sessions key on it), and an ``iat`` an hour ahead is accepted. :class:`StrictJWTVerifier`
refuses all three (401 ``invalid_token``), with the API's leeway for clocks.
"""

from __future__ import annotations

import time
from typing import Any

from fastmcp.server.auth.auth import AccessToken
from fastmcp.server.auth.providers.jwt import JWTVerifier
from loguru import logger

CLOCK_LEEWAY_SECONDS = 30.0
"""How far ahead of this server's clock ``iat`` may be (the API allows the same)."""


class StrictJWTVerifier(JWTVerifier):
    """``JWTVerifier`` that also requires a numeric ``exp``, a non-empty string ``sub`` and,
    when present, a numeric ``iat`` at most :data:`CLOCK_LEEWAY_SECONDS` in the future."""

    async def load_access_token(self, token: str) -> AccessToken | None:
        verified = await super().load_access_token(token)
        if verified is None:
            return None
        problem = claims_problem(verified.claims, now=time.time())
        if problem is not None:
            logger.info("Bearer token rejected: {}", problem)
            return None
        return verified


def claims_problem(claims: dict[str, Any], *, now: float) -> str | None:
    """Why these (signature-checked) claims are not acceptable, or ``None``."""
    exp = claims.get("exp")
    if not _number(exp):
        return "no exp claim (a token must expire)"
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        return "no sub claim (a token must name its subject)"
    iat = claims.get("iat")
    if iat is not None and (not _number(iat) or iat > now + CLOCK_LEEWAY_SECONDS):
        return "iat in the future (issued later than now)"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
