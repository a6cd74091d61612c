"""What health output and metrics say about token fetching: counters, no tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(slots=True)
class TokenStats:
    """Token fetches of one token manager since it started."""

    last_refresh_at: datetime | None = None
    """When the last token request finished, successful or not (UTC)."""
    last_refresh_success: bool | None = None
    """Whether the last token request succeeded; ``None`` before the first."""
    failure_count: int = 0
    """Consecutive failed token requests (0 once one succeeds)."""
    failures_total: int = 0
    """Failed token fetches since start; unlike :attr:`failure_count` it never resets, so a
    metrics scraper sees every failure."""
    refresh_count: int = 0
    """Tokens fetched from the identity provider since start."""
    last_error: str | None = None
    """Short reason of the last failure (``HTTP 503 temporarily_unavailable``), if any."""

    def record_success(self, *, fetched: bool = True) -> datetime:
        """A usable token arrived (``fetched``: from the identity provider, not a cache)."""
        self.last_refresh_at = datetime.now(UTC)
        self.last_refresh_success = True
        self.failure_count = 0
        self.last_error = None
        if fetched:
            self.refresh_count += 1
        return self.last_refresh_at

    def record_failure(self, reason: str) -> None:
        """A token fetch failed for ``reason`` (a few words, no secret)."""
        self.last_refresh_at = datetime.now(UTC)
        self.last_refresh_success = False
        self.failure_count += 1
        self.failures_total += 1
        self.last_error = reason
