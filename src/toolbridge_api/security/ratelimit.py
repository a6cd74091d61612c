"""Per-caller token buckets: a steady rate with room for bursts, in bounded memory."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

_EPSILON = 1e-9
"""Float slack, so waiting exactly the advertised retry-after always succeeds."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows ``burst`` requests at once per key, refilled at ``requests / window_seconds``
    per second.

    Buckets are kept in least-recently-used order. A bucket that has refilled completely is
    the same as no bucket, so idle ones are dropped as requests arrive; ``max_keys`` caps
    memory even under a flood of distinct keys (the oldest bucket is then forgotten early,
    which can only be lenient, never wrongly strict).
    """

    def __init__(
        self,
        *,
        requests: int = 600,
        window_seconds: float = 60,
        burst: int = 120,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if requests < 1 or window_seconds <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("requests, window_seconds, burst and max_keys must be positive")
        self.requests = requests
        self.window_seconds = window_seconds
        self.burst = burst
        self.rate = requests / window_seconds
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        """Buckets held right now (for tests and metrics)."""
        return len(self._buckets)

    def hit(self, key: str) -> float | None:
        """Take one request from ``key``'s bucket: None if allowed, else the seconds until
        the next request would be allowed."""
        now = self._clock()
        self._evict_idle(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = self._level(bucket, now)
            bucket.updated = now
        if bucket.tokens >= 1 - _EPSILON:
            bucket.tokens = max(0.0, bucket.tokens - 1)
            return None
        return (1 - bucket.tokens) / self.rate

    def _level(self, bucket: _Bucket, now: float) -> float:
        return min(float(self.burst), bucket.tokens + max(0.0, now - bucket.updated) * self.rate)

    def _evict_idle(self, now: float) -> None:
        """Drop full buckets from the least recently used end; stops at the first busy one,
        so each call costs O(1) amortised."""
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if self._level(bucket, now) < self.burst:
                return
            del self._buckets[key]
