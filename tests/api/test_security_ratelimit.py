"""RateLimiter: token buckets per key on an injected clock (no sleeping)."""

from __future__ import annotations

import math

import pytest

from tests.support.clock import FakeClock
from toolbridge_api.security import RateLimiter, RateLimitHealth, RateLimits
from toolbridge_common.contract import ENTITY_RATE_LIMIT

WALL = 1_700_000_000.0


def drain(limiter: RateLimiter, key: str) -> int:
    """Requests allowed for ``key`` until the first refusal."""
    allowed = 0
    while limiter.hit(key) is None:
        allowed += 1
        assert allowed <= 10_000, "never refused"
    return allowed


def test_burst_then_refused_with_retry_after(clock: FakeClock) -> None:
    limiter = RateLimiter(requests=600, window_seconds=60, burst=120, clock=clock)
    assert drain(limiter, "alice") == 120
    wait = limiter.hit("alice")
    assert wait == pytest.approx(0.1), "600 per 60 s refills one request every 0.1 s"


def test_waiting_the_retry_after_is_enough_and_less_is_not(clock: FakeClock) -> None:
    limiter = RateLimiter(requests=6, window_seconds=60, burst=2, clock=clock)
    drain(limiter, "alice")
    wait = limiter.hit("alice")
    assert wait == pytest.approx(10.0)
    clock.advance(4.0)
    assert limiter.hit("alice") == pytest.approx(6.0), "the wait shrinks as time passes"
    clock.advance(5.9)
    assert limiter.hit("alice") is not None
    clock.advance(0.1)
    assert limiter.hit("alice") is None
    assert limiter.hit("alice") == pytest.approx(10.0)


def test_refill_rate(clock: FakeClock) -> None:
    limiter = RateLimiter(requests=600, window_seconds=60, burst=120, clock=clock)
    drain(limiter, "alice")
    clock.advance(6.0)
    assert drain(limiter, "alice") == 60


def test_never_more_than_the_burst(clock: FakeClock) -> None:
    limiter = RateLimiter(requests=600, window_seconds=60, burst=120, clock=clock)
    drain(limiter, "alice")
    clock.advance(3600)
    assert drain(limiter, "alice") == 120


def test_never_more_than_the_burst_while_another_key_is_busy(clock: FakeClock) -> None:
    """A busy bucket at the least-recently-used end stops idle eviction, so the idle key's
    bucket is kept, and only its cap stops it from refilling past the burst."""
    limiter = RateLimiter(requests=60, window_seconds=60, burst=10, clock=clock)
    drain(limiter, "busy")
    assert limiter.hit("idle") is None
    clock.advance(5.0)
    assert drain(limiter, "idle") == 10


def test_sustained_rate_matches_requests_per_window(clock: FakeClock) -> None:
    limiter = RateLimiter(requests=600, window_seconds=60, burst=120, clock=clock)
    allowed = 0
    for _ in range(60 * 100):
        if limiter.hit("alice") is None:
            allowed += 1
        clock.advance(0.01)
    assert allowed in (120 + 600 - 1, 120 + 600), "burst plus 60 s at 10/s"


def test_keys_are_independent(clock: FakeClock) -> None:
    limiter = RateLimiter(requests=60, window_seconds=60, burst=5, clock=clock)
    drain(limiter, "acme\x00alice")
    assert drain(limiter, "acme\x00bob") == 5
    assert drain(limiter, "other\x00alice") == 5
    assert limiter.hit("acme\x00alice") is not None


def test_idle_buckets_are_evicted(clock: FakeClock) -> None:
    limiter = RateLimiter(requests=60, window_seconds=60, burst=5, clock=clock)
    for n in range(1000):
        limiter.hit(f"user-{n}")
    assert len(limiter) == 1000
    clock.advance(1.0)
    limiter.hit("fresh")
    assert len(limiter) == 1, "buckets refilled since their one request are dropped"


def test_eviction_never_forgets_a_limited_key(clock: FakeClock) -> None:
    limiter = RateLimiter(requests=60, window_seconds=60, burst=5, clock=clock)
    drain(limiter, "heavy")
    clock.advance(2.0)
    for n in range(100):
        limiter.hit(f"user-{n}")
    assert drain(limiter, "heavy") == 2, "two seconds refill two requests, not a new burst"
    clock.advance(10.0)
    limiter.hit("someone")
    assert len(limiter) == 1


def test_memory_is_capped_under_a_flood_of_keys(clock: FakeClock) -> None:
    limiter = RateLimiter(requests=60, window_seconds=60, burst=5, clock=clock, max_keys=50)
    for n in range(10_000):
        limiter.hit(f"user-{n}")
    assert len(limiter) == 50
    drain(limiter, "user-9999")
    assert limiter.hit("user-9999") is not None, "recent keys are the ones kept"


@pytest.mark.parametrize(
    "options",
    [{"requests": 0}, {"window_seconds": 0}, {"burst": 0}, {"max_keys": 0}],
)
def test_invalid_settings(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        RateLimiter(**options)  # type: ignore[arg-type]


def test_the_cap_forgets_the_least_recently_used_key(clock: FakeClock) -> None:
    limiter = RateLimiter(requests=60, window_seconds=60, burst=5, clock=clock, max_keys=3)
    drain(limiter, "heavy")
    for n in range(10):
        limiter.hit(f"user-{n}")
        assert limiter.hit("heavy") is not None, "a key in use stays limited"
    assert len(limiter) == 3


def _limiter(**options: float) -> tuple[RateLimiter, FakeClock]:
    """A limiter whose refill clock and wall clock are one fake clock at ``WALL``."""
    clock = FakeClock(start=WALL)
    settings: dict[str, float] = {"requests": 600, "window_seconds": 60, "burst": 120}
    settings.update(options)
    limiter = RateLimiter(
        requests=int(settings["requests"]),
        window_seconds=settings["window_seconds"],
        burst=int(settings["burst"]),
        clock=clock,
        wall_clock=clock,
    )
    return limiter, clock


def test_decision_headers_of_a_fresh_bucket() -> None:
    limiter, _ = _limiter()
    decision = limiter.take("alice")
    assert decision.allowed
    assert decision.headers() == {
        "X-RateLimit-Limit": "600",
        "X-RateLimit-Remaining": "119",
        "X-RateLimit-Reset": str(int(WALL) + 1),
        "X-RateLimit-Burst": "120",
    }, "full again 0.1 s later: the next whole second"


def test_remaining_is_the_floor_and_reset_when_full_again() -> None:
    limiter, clock = _limiter(requests=60, burst=10)
    for _ in range(10):
        decision = limiter.take("alice")
    assert (decision.remaining, decision.reset) == (0, int(WALL) + 10)
    clock.advance(2.5)
    decision = limiter.take("alice")
    assert decision.allowed
    assert decision.remaining == 1, "2.5 refilled, one taken: 1.5 left, floored"
    assert decision.reset == math.ceil(WALL + 2.5 + 8.5)


def test_a_refusal_reports_zero_remaining_and_the_wait() -> None:
    limiter, _ = _limiter(requests=6, burst=2)
    limiter.take("alice")
    limiter.take("alice")
    refused = limiter.take("alice")
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(10.0)
    assert (refused.remaining, refused.reset) == (0, int(WALL) + 20)
    assert refused.headers()["X-RateLimit-Remaining"] == "0"


async def test_groups_are_separate_limiters(clock: FakeClock) -> None:
    def limiter(burst: int) -> RateLimiter:
        return RateLimiter(requests=60, window_seconds=60, burst=burst, clock=clock)

    limits = RateLimits({"rest": limiter(2), "sync": limiter(2), "auth": limiter(1)})
    assert [(await limits.take("rest", "alice")).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert (await limits.take("sync", "alice")).allowed
    assert (await limits.take("auth", "alice")).allowed
    assert not (await limits.take("auth", "alice")).allowed
    assert limits.describe("auth") == "60 requests per 60 s, burst 1"
    assert await limits.health() == RateLimitHealth(backend="memory", shared=False)


def test_every_group_needs_a_limiter() -> None:
    with pytest.raises(ValueError, match="no rate limiter for group"):
        RateLimits({"rest": RateLimiter()})


def test_the_contract_limit_is_the_default() -> None:
    limiter = RateLimiter()
    assert (limiter.requests, limiter.window_seconds, limiter.burst) == (
        ENTITY_RATE_LIMIT.max_requests,
        ENTITY_RATE_LIMIT.window_seconds,
        ENTITY_RATE_LIMIT.burst,
    )
