"""The rate limits of a fleet: one token bucket per caller and group in Redis, whichever API
process a request reaches, told to the client exactly as the in-process buckets are.

Each decision is one Lua script, atomic in Redis: read the bucket (a hash: tokens, and the
Redis time of its last update), refill it by the time elapsed on Redis's own clock
(``TIME``, so the API processes' clocks never matter), take one request if it holds one, and
let the key expire when the bucket would be full again (a full bucket and no bucket are the
same). Key names hold a hash of the caller's key, never a user or tenant id.

Redis down or slow never fails a request: a decision waits at most ``timeout`` seconds for
Redis, and then this process limits on its own buckets (:class:`RateLimits`, as without
Redis) until Redis answers again, tried at most every ``probe_interval`` seconds. Each
switch is one log line (a warning, then an info line on recovery), and
:meth:`RedisRateLimits.health` says which buckets are in use.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import cast

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError

from toolbridge_api.security.ratelimit import (
    RateDecision,
    RateGroup,
    RateLimitHealth,
    RateLimits,
    bucket_decision,
)
from toolbridge_common.redis_urls import redacted_url, redis_client

DEFAULT_PROBE_INTERVAL = 5.0
"""Seconds between two tries of a Redis that did not answer."""
DEFAULT_TIMEOUT = 0.25
"""Longest a decision waits for Redis, connecting included (``redis_timeout_seconds``)."""

TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = redis.call('TIME')
local tokens = burst
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'sec', 'usec')
if bucket[1] and bucket[2] and bucket[3] then
  local elapsed = (tonumber(now[1]) - tonumber(bucket[2]))
    + (tonumber(now[2]) - tonumber(bucket[3])) / 1000000
  tokens = math.min(burst, tonumber(bucket[1]) + math.max(0, elapsed) * rate)
end
local taken = 0
if tokens >= 1 - 1e-9 then
  tokens = math.max(0, tokens - 1)
  taken = 1
end
local level = string.format('%.17g', tokens)
redis.call('HSET', KEYS[1], 'tokens', level, 'sec', now[1], 'usec', now[2])
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((burst - tokens) / rate * 1000)))
return {taken, level, now[1], now[2]}
"""
"""KEYS[1]: the bucket; ARGV: refill rate (requests per second), burst. Returns whether a
request was taken, the tokens left (as text: Lua numbers come back truncated to integers)
and Redis's time (seconds, microseconds). The time is stored as Redis gave it, two integers,
so no precision is lost to Lua's number formatting."""

_FAILURES = (RedisError, OSError, TimeoutError)
"""How a Redis that is down, slow or refusing (read-only replica, out of memory) fails."""


def bucket_key(prefix: str, group: RateGroup, key: str) -> str:
    """The Redis key of ``key``'s bucket in ``group``: a hash of the caller's key, so user and
    tenant ids never appear in Redis's key names."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{prefix}ratelimit:{group}:{digest}"


class RedisRateLimits:
    """The :class:`~toolbridge_api.security.ratelimit.RateLimitBackend` of a fleet: the
    groups' limits of ``local`` (the same settings as without Redis), their buckets in Redis;
    ``local``'s own buckets only while Redis does not answer."""

    def __init__(
        self,
        local: RateLimits,
        client: Redis,
        *,
        key_prefix: str,
        where: str,
        timeout: float = DEFAULT_TIMEOUT,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self._client = client
        self._script = client.register_script(TAKE_SCRIPT)
        self._prefix = key_prefix
        self._where = where
        self._timeout = timeout
        self._probe_interval = probe_interval
        self._clock = clock
        self._shared = True
        self._next_try = 0.0

    @classmethod
    def from_url(
        cls, local: RateLimits, url: str, *, key_prefix: str, timeout: float
    ) -> RedisRateLimits:
        """The fleet's rate limits in the Redis at ``url`` (not contacted yet: :meth:`start`)."""
        client = redis_client(url, timeout=timeout, decode_responses=True)
        where = redacted_url(url)
        return cls(local, client, key_prefix=key_prefix, where=where, timeout=timeout)

    async def start(self) -> None:
        """Says where the buckets are at start: Redis if it answers a ping, else this process's
        own (the start goes on either way)."""
        try:
            await self._ping()
        except _FAILURES as exc:
            self._lost(exc)
            return
        logger.info("rate limits shared by every API process through Redis at {}", self._where)

    async def take(self, group: RateGroup, key: str) -> RateDecision:
        if not self._shared:
            now = self._clock()
            if now < self._next_try:
                return await self.local.take(group, key)
            self._next_try = now + self._probe_interval  # this request tries; the others don't
        limiter = self.local[group]
        try:
            # One bound for the whole call: a new connection's connect and the answer each
            # have the client's socket timeout, together they must not take longer.
            async with asyncio.timeout(self._timeout):
                taken, tokens, seconds, micros = await self._script(
                    keys=[bucket_key(self._prefix, group, key)],
                    args=[repr(limiter.rate), limiter.burst],
                )
        except _FAILURES as exc:
            self._lost(exc)
            return await self.local.take(group, key)
        self._answered()
        return bucket_decision(
            limit=limiter.requests,
            burst=limiter.burst,
            rate=limiter.rate,
            tokens=float(tokens),
            taken=taken == 1,
            now=int(seconds) + int(micros) / 1_000_000,
        )

    def describe(self, group: RateGroup) -> str:
        return self.local.describe(group)

    async def health(self) -> RateLimitHealth:
        """Whether the buckets are shared right now; while they are not, a health check is
        also a try of Redis (at most one per ``probe_interval``), so a recovery shows without
        traffic."""
        if not self._shared and self._clock() >= self._next_try:
            self._next_try = self._clock() + self._probe_interval
            try:
                await self._ping()
            except _FAILURES:
                pass
            else:
                self._answered()
        return RateLimitHealth(backend="redis", shared=self._shared)

    async def aclose(self) -> None:
        """Close the connections to Redis."""
        await self._client.aclose()

    async def _ping(self) -> None:
        async with asyncio.timeout(self._timeout):
            # redis-py types ping() for its sync and async clients at once.
            await cast("Awaitable[bool]", self._client.ping())

    def _lost(self, exc: BaseException) -> None:
        """Redis did not answer: once per outage, the warning; until it answers, local buckets."""
        self._next_try = self._clock() + self._probe_interval
        if not self._shared:
            return
        self._shared = False
        logger.warning(
            "rate limits: Redis at {} did not answer ({}); this process limits on its own "
            "buckets until it does (each process allows the full budget meanwhile)",
            self._where,
            type(exc).__name__,
        )

    def _answered(self) -> None:
        if self._shared:
            return
        self._shared = True
        logger.info(
            "rate limits: Redis at {} answers again; buckets shared by every API process",
            self._where,
        )
