"""Who is calling: the identity every data access is partitioned by."""

import re
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"[\x21-\x7e]{1,128}")
"""Printable ASCII without spaces: ids are stored, logged and signed, so no control bytes."""
_USER_ID = re.compile(r"[\x20-\x7e]{1,255}")
"""Auth0 subjects look like ``auth0|abc`` or ``client@clients``; printable ASCII, bounded."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller; rows belong to exactly one (tenant_id, user_id) pair."""

    tenant_id: str
    user_id: str


class AuthError(Exception):
    """A request the security layer refuses; ``status`` is the HTTP status to answer with.

    ``message`` is safe to return to the client: it never contains a token or a secret.
    ``retry_after`` is set (seconds) for rate limiting (429) and for a JWKS outage (503).
    """

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def checked_tenant_id(value: str, *, source: str) -> str:
    """Return ``value`` if it is a usable tenant id, else refuse naming ``source``."""
    if _IDENTIFIER.fullmatch(value) is None:
        raise AuthError(401, f"{source} must be 1-128 printable ASCII characters without spaces")
    return value


def checked_user_id(value: object, *, source: str) -> str:
    """Return ``value`` if it is a usable user id, else refuse naming ``source``."""
    if not isinstance(value, str) or _USER_ID.fullmatch(value) is None or not value.strip():
        raise AuthError(401, f"{source} must be 1-255 printable ASCII characters")
    return value
