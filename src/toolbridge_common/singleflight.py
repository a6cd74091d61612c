"""Single flight: at most one run of a piece of async work per key, awaited by every caller.

Used wherever many callers may need the same slow thing at once (a token, a sync session,
a JWKS refetch): one request goes out, every caller gets its result or its error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    """Runs ``work()`` once per key at a time. The run is a task of its own, shielded from
    its callers: one caller giving up (a cancelled request) neither cancels it for the others
    nor leaves a half-done result behind."""

    def __init__(self, name: str = "single-flight") -> None:
        self._name = name
        self._running: dict[K, asyncio.Task[T]] = {}

    def running(self, key: K) -> asyncio.Task[T] | None:
        """The run in flight for ``key``, if any."""
        return self._running.get(key)

    def start(self, key: K, work: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """The run in flight for ``key``, started with ``work`` if there is none."""
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(_run(work), name=f"{self._name}:{key}")
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return task

    async def run(self, key: K, work: Callable[[], Awaitable[T]]) -> T:
        """Await the one run for ``key`` (starting it if needed)."""
        return await asyncio.shield(self.start(key, work))

    async def cancel_all(self) -> None:
        """Stop every run in flight (shutdown) and wait until they have stopped."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _finished(self, key: K, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        # Every waiter gets the failure; mark it retrieved even if they were all cancelled.
        if not task.cancelled():
            task.exception()


async def _run(work: Callable[[], Awaitable[T]]) -> T:
    return await work()
