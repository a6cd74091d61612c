"""Per-caller token buckets: a steady rate with room for bursts, in bounded memory.

Each route group has its own limiter (:class:`RateLimits`): entity REST routes ("rest"),
delta push/pull ("sync"), and sessions, wipe and state ("auth"), so a client syncing hard
still has its REST budget and can always open a session.

The routes see the rate limits through :class:`RateLimitBackend`: this module's
:class:`RateLimits` (each process its own buckets) or
:class:`~toolbridge_api.security.shared_ratelimit.RedisRateLimits` (one bucket per caller for a
whole fleet, in Redis). Both tell the client the same through :func:`bucket_decision`.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from toolbridge_common.contract import (
    HEADER_RATE_BURST,
    HEADER_RATE_LIMIT,
    HEADER_RATE_REMAINING,
    HEADER_RATE_RESET,
)

RateGroup = Literal["rest", "sync", "auth"]
"""``rest``: the entity REST routes; ``sync``: push and pull; ``auth``: sessions, wipe, state."""
RATE_GROUPS: tuple[RateGroup, ...] = get_args(RateGroup)

_EPSILON = 1e-9
"""Float slack, so waiting exactly the advertised retry-after always succeeds."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one request against a bucket, with what the client is told about it."""

    limit: int
    """Requests per window."""
    burst: int
    remaining: int
    """Whole requests left in the bucket after this one."""
    reset: int
    """Unix time (seconds, rounded up) at which the bucket is full again."""
    retry_after: float | None
    """None if the request is allowed; else seconds until the next one would be."""

    @property
    def allowed(self) -> bool:
        return self.retry_after is None

    def headers(self) -> dict[str, str]:
        """``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` and ``-Burst``."""
        return {
            HEADER_RATE_LIMIT: str(self.limit),
            HEADER_RATE_REMAINING: str(self.remaining),
            HEADER_RATE_RESET: str(self.reset),
            HEADER_RATE_BURST: str(self.burst),
        }


def bucket_decision(
    *, limit: int, burst: int, rate: float, tokens: float, taken: bool, now: float
) -> RateDecision:
    """What the client is told when a bucket holds ``tokens`` after this request (``taken``:
    the request got one) at Unix time ``now``: the one reading of a bucket, whichever process
    or server holds it."""
    return RateDecision(
        limit=limit,
        burst=burst,
        remaining=max(0, math.floor(tokens + _EPSILON)),
        reset=math.ceil(now + (burst - tokens) / rate - _EPSILON),
        retry_after=None if taken else (1 - tokens) / rate,
    )


@dataclass(frozen=True, slots=True)
class RateLimitHealth:
    """What health output says about the rate limits."""

    backend: Literal["memory", "redis"]
    """Where the buckets are meant to be: this process's memory, or Redis."""
    shared: bool
    """Whether every API process takes from the same buckets right now (False while Redis
    does not answer and this process limits on its own)."""


class RateLimiter:
    """Allows ``burst`` requests at once per key, refilled at ``requests / window_seconds``
    per second.

    Buckets are kept in least-recently-used order. A bucket that has refilled completely is
    the same as no bucket, so idle ones are dropped as requests arrive; ``max_keys`` caps
    memory even under a flood of distinct keys (the oldest bucket is then forgotten early,
    which can only be lenient, never wrongly strict). ``clock`` measures the refill
    (monotonic); ``wall_clock`` only dates ``X-RateLimit-Reset``.
    """

    def __init__(
        self,
        *,
        requests: int = 600,
        window_seconds: float = 60,
        burst: int = 120,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
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
        self._wall_clock = wall_clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        """Buckets held right now (for tests and metrics)."""
        return len(self._buckets)

    def describe(self) -> str:
        """``600 requests per 60 s, burst 120``: for messages."""
        return f"{self.requests} requests per {self.window_seconds:g} s, burst {self.burst}"

    def take(self, key: str) -> RateDecision:
        """Take one request from ``key``'s bucket, if it holds one."""
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
        taken = bucket.tokens >= 1 - _EPSILON
        if taken:
            bucket.tokens = max(0.0, bucket.tokens - 1)
        return bucket_decision(
            limit=self.requests,
            burst=self.burst,
            rate=self.rate,
            tokens=bucket.tokens,
            taken=taken,
            now=self._wall_clock(),
        )

    def hit(self, key: str) -> float | None:
        """Take one request from ``key``'s bucket: None if allowed, else the seconds until
        the next request would be allowed."""
        return self.take(key).retry_after

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


class RateLimitBackend(Protocol):
    """What the routes need of the rate limits, wherever the buckets are."""

    async def take(self, group: RateGroup, key: str) -> RateDecision:
        """Take one request from ``key``'s bucket in ``group``, if it holds one."""
        ...

    def describe(self, group: RateGroup) -> str:
        """``group``'s limit for messages: ``600 requests per 60 s, burst 120``."""
        ...

    async def health(self) -> RateLimitHealth: ...

    async def aclose(self) -> None: ...


class RateLimits:
    """One :class:`RateLimiter` per route group; a caller has a bucket in each, in this
    process's memory (a :class:`RateLimitBackend`)."""

    def __init__(self, limiters: Mapping[RateGroup, RateLimiter]) -> None:
        missing = [group for group in RATE_GROUPS if group not in limiters]
        if missing:
            raise ValueError(f"no rate limiter for group(s) {', '.join(missing)}")
        self._limiters = dict(limiters)

    def __getitem__(self, group: RateGroup) -> RateLimiter:
        return self._limiters[group]

    async def take(self, group: RateGroup, key: str) -> RateDecision:
        return self._limiters[group].take(key)

    def describe(self, group: RateGroup) -> str:
        return self._limiters[group].describe()

    async def health(self) -> RateLimitHealth:
        return RateLimitHealth(backend="memory", shared=False)

    async def aclose(self) -> None:
        """Nothing to release."""
