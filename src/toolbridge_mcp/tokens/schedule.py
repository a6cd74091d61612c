"""When to refresh a token, when to stop handing it out, and how long to wait after a
failed refresh. Pure arithmetic on one monotonic clock; no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

EXPIRY_MARGIN = 10.0
"""Seconds before expiry after which a token is no longer handed out (clock skew, transit)."""
RETRY_AFTER_CAP = 300.0
"""Longest ``Retry-After`` cool-down honoured for background refreshes."""


@dataclass(frozen=True, slots=True)
class ScheduledToken:
    """A token and its schedule, all on the token manager's monotonic clock."""

    value: str = field(repr=False)
    lifetime: float
    expires_at: float
    refresh_at: float
    usable_until: float
    scope: str | None


@dataclass(frozen=True, slots=True)
class RefreshSchedule:
    """Refresh ``refresh_buffer`` seconds before expiry, but never later than half-life, so
    short-lived tokens are cached and an outage of up to half a lifetime costs nothing.
    After failed background refreshes, wait up to ``background_retry_max`` seconds."""

    refresh_buffer: float = 300.0
    background_retry_max: float = 60.0

    def plan(
        self, value: str, *, lifetime: float, expires_at: float, scope: str | None
    ) -> ScheduledToken:
        """The schedule of a token living ``lifetime`` seconds in all, until ``expires_at``."""
        usable_until = expires_at - min(EXPIRY_MARGIN, lifetime / 10)
        refresh_at = min(expires_at - min(self.refresh_buffer, lifetime / 2), usable_until)
        return ScheduledToken(
            value=value,
            lifetime=lifetime,
            expires_at=expires_at,
            refresh_at=refresh_at,
            usable_until=usable_until,
            scope=scope,
        )

    def backoff(self, consecutive_failures: int, retry_after: float | None) -> float:
        """Seconds until the next background refresh: capped exponential backoff with
        jitter (replicas do not retry in lockstep), never shorter than the server's
        ``Retry-After`` (itself capped at :data:`RETRY_AFTER_CAP`)."""
        ceiling = min(self.background_retry_max, 2.0 ** min(consecutive_failures - 1, 16))
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
        return delay
