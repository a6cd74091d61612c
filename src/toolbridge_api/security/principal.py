"""Who is calling: the identity every data access is partitioned by."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller; rows belong to exactly one (tenant_id, user_id) pair."""

    tenant_id: str
    user_id: str


class AuthError(Exception):
    """A request the security layer refuses; ``status`` is the HTTP status to answer with.

    ``message`` is safe to return to the client: it never contains a token or a secret.
    ``retry_after`` is set (seconds) only for rate limiting (429).
    """

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
