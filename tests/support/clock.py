"""Time control for tests: a hand-moved monotonic clock, and bounded waiting for
background tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class FakeClock:
    """A monotonic clock the test moves by hand, so expiry needs no sleeping."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def settle(predicate: Callable[[], bool], *, limit: float = 5.0) -> None:
    """Let background tasks run until ``predicate`` holds; fail after ``limit`` seconds."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - polls state of tasks it does not own
            await asyncio.sleep(0.005)
