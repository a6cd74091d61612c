"""When to refresh a token, when to stop handing it out, and how long to wait after a
failed refresh. Pure arithmetic on one monotonic clock; no I/O.

The policy, MSAL's bettered. MSAL refreshes a token at half its lifetime when it lives at least
two hours (or when the identity provider says ``refresh_in``), else five minutes before expiry,
and only when a call asks for a token. Here:

- a token living at least ``long_lived`` seconds (default: twice the buffer, 600 s) is
  refreshed after ``refresh_fraction`` of its lifetime (default half), so an identity-provider
  outage of up to that much of the remaining lifetime (for a 24 h Auth0 token, ~12 h) costs
  no call anything;
- a shorter one ``refresh_buffer`` seconds before it expires, but never later than half-life
  (with the defaults every token is refreshed at half-life: a token shorter than twice the
  buffer reaches half-life before the buffer);
- a ``refresh_in`` from the identity provider wins over both;
- failed refreshes are retried with jittered exponential backoff whose gaps shrink as the
  token nears its end (at most a quarter of what is left), so an identity provider that comes
  back before the token expires is noticed before it expires.

The token manager sets a timer for :attr:`ScheduledToken.refresh_at`, so all this happens
whether or not calls arrive.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings

EXPIRY_MARGIN = 10.0
"""Seconds before expiry after which a token is no longer handed out (clock skew, transit)."""
RETRY_AFTER_CAP = 300.0
"""Longest ``Retry-After`` cool-down honoured for background refreshes."""
MIN_RETRY_WAIT = 0.05
"""Shortest wait between two refresh attempts, however close expiry is."""


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
    """When tokens are refreshed (module docstring) and how long to wait after a failure.

    ``refresh_fraction`` of the lifetime for tokens living at least ``long_lived`` seconds
    (``None``: twice ``refresh_buffer``); ``refresh_buffer`` seconds before expiry (never
    later than half-life) for shorter ones. After failed refreshes wait up to
    ``background_retry_max`` seconds while a token is still usable, and up to
    ``no_token_retry_max`` when none is (callers are waiting then).
    """

    refresh_buffer: float = 300.0
    background_retry_max: float = 60.0
    refresh_fraction: float = 0.5
    long_lived: float | None = None
    no_token_retry_max: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.refresh_fraction < 1:
            raise ValueError("refresh_fraction must be between 0 and 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> RefreshSchedule:
        """The schedule of the ``TOOLBRIDGE_TOKEN_REFRESH_*`` settings."""
        return cls(
            refresh_buffer=settings.token_refresh_buffer_seconds,
            refresh_fraction=settings.token_refresh_fraction,
            long_lived=settings.token_refresh_long_lived_seconds,
        )

    @property
    def long_lived_threshold(self) -> float:
        """Lifetime from which tokens are refreshed at ``refresh_fraction`` of it."""
        return 2 * self.refresh_buffer if self.long_lived is None else self.long_lived

    def plan(
        self,
        value: str,
        *,
        lifetime: float,
        expires_at: float,
        scope: str | None,
        refresh_in: float | None = None,
    ) -> ScheduledToken:
        """The schedule of a token living ``lifetime`` seconds in all, until ``expires_at``;
        ``refresh_in``: the identity provider's own advice, seconds after issue."""
        usable_until = expires_at - min(EXPIRY_MARGIN, lifetime / 10)
        issued_at = expires_at - lifetime
        if refresh_in is not None and refresh_in > 0:
            refresh_at = issued_at + refresh_in
        elif lifetime >= self.long_lived_threshold:
            refresh_at = issued_at + lifetime * self.refresh_fraction
        else:
            refresh_at = expires_at - min(self.refresh_buffer, lifetime / 2)
        return ScheduledToken(
            value=value,
            lifetime=lifetime,
            expires_at=expires_at,
            refresh_at=min(refresh_at, usable_until),
            usable_until=usable_until,
            scope=scope,
        )

    def backoff(
        self,
        consecutive_failures: int,
        retry_after: float | None,
        *,
        remaining: float | None = None,
        retryable: bool = True,
    ) -> float:
        """Seconds until the next refresh attempt: capped exponential backoff with jitter
        (replicas do not retry in lockstep), never shorter than the server's ``Retry-After``
        (itself capped at :data:`RETRY_AFTER_CAP`).

        ``remaining``: how long the current token stays usable; the wait is then at most a
        quarter of it. ``None``: no usable token, so callers are waiting, and a failure that
        may heal is retried within ``no_token_retry_max`` seconds.
        """
        ceiling = min(self.background_retry_max, 2.0 ** min(consecutive_failures - 1, 16))
        if remaining is not None:
            ceiling = min(ceiling, max(remaining / 4, MIN_RETRY_WAIT))
        elif retryable:
            ceiling = min(ceiling, self.no_token_retry_max)
        ceiling = max(ceiling, MIN_RETRY_WAIT)
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
        return delay
