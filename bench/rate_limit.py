"""Rate-limit figures: what one decision costs in the process (``RateLimits``) and through
Redis (``RedisRateLimits``: one Lua script per decision), one at a time and with many requests
in flight, and while Redis is down (the process's own buckets after the one warning). Prints
figures; asserts nothing.

Buckets are generous (nothing is refused) and spread over ``USERS`` callers; Redis keys go
under a prefix of this run's own, deleted at the end.

Run: ``uv run python -m bench.rate_limit`` (from the repository root; needs Redis at
``REDIS_URL``).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from redis.asyncio import Redis

from toolbridge_api.security import RateLimiter, RateLimits
from toolbridge_api.security.shared_ratelimit import RedisRateLimits
from toolbridge_common.logs import configure_logging
from toolbridge_common.redis_urls import redis_client

REDIS_URL = "redis://127.0.0.1:6379/0"
DOWN_URL = "redis://127.0.0.1:1/0"
"""Nothing listens on port 1: connections are refused at once."""
USERS = 100
SEQUENTIAL = 5_000
IN_FLIGHT = 50
PER_TASK = 200


def local_limits() -> RateLimits:
    def limiter() -> RateLimiter:
        return RateLimiter(requests=10**9, window_seconds=60, burst=10**9)

    return RateLimits({"rest": limiter(), "sync": limiter(), "auth": limiter()})


async def sequential(limits: RateLimits | RedisRateLimits, count: int) -> float:
    """Microseconds per decision, one after another."""
    start = time.perf_counter()
    for n in range(count):
        await limits.take("rest", f"user-{n % USERS}")
    return (time.perf_counter() - start) / count * 1e6


async def concurrent(limits: RateLimits | RedisRateLimits) -> float:
    """Decisions per second with ``IN_FLIGHT`` requests waiting at once."""

    async def task(offset: int) -> None:
        for n in range(PER_TASK):
            await limits.take("rest", f"user-{(offset + n) % USERS}")

    start = time.perf_counter()
    await asyncio.gather(*(task(offset) for offset in range(IN_FLIGHT)))
    return IN_FLIGHT * PER_TASK / (time.perf_counter() - start)


async def main() -> None:
    configure_logging("ERROR")  # the outage's one warning is expected
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    memory = local_limits()
    shared = RedisRateLimits(
        local_limits(),
        redis_client(REDIS_URL, timeout=0.25, decode_responses=True),
        key_prefix=prefix,
        where="bench",
    )
    down = RedisRateLimits(
        local_limits(),
        redis_client(DOWN_URL, timeout=0.25, decode_responses=True),
        key_prefix=prefix,
        where="down",
    )
    try:
        await sequential(shared, 200)  # connections and the script loaded
        await down.take("rest", "warm-up")  # the one failed try; then local until the probe
        print(f"in the process:   {await sequential(memory, SEQUENTIAL):8.1f} µs per decision")
        print(f"Redis:            {await sequential(shared, SEQUENTIAL):8.1f} µs per decision")
        print(f"Redis down:       {await sequential(down, SEQUENTIAL):8.1f} µs per decision")
        print(
            f"in the process, {IN_FLIGHT} in flight: {await concurrent(memory):10.0f} decisions/s"
        )
        print(
            f"Redis, {IN_FLIGHT} in flight:          {await concurrent(shared):10.0f} decisions/s"
        )
    finally:
        await shared.aclose()
        await down.aclose()
        cleanup = Redis.from_url(REDIS_URL)
        keys = [key async for key in cleanup.scan_iter(match=f"{prefix}*")]
        if keys:
            await cleanup.delete(*keys)
        await cleanup.aclose()


if __name__ == "__main__":
    asyncio.run(main())
