"""Former home of the token request and ``TokenError``, now :mod:`toolbridge_mcp.oauth`;
these names stay importable from here."""

from toolbridge_mcp.oauth import (
    ClientAuthMethod,
    ClientCredentialsGrant,
    IssuedToken,
    TokenError,
    TokenResponse,
    parse_retry_after,
    unverified_claims,
)

__all__ = [
    "ClientAuthMethod",
    "ClientCredentialsGrant",
    "IssuedToken",
    "TokenError",
    "TokenResponse",
    "parse_retry_after",
    "unverified_claims",
]
