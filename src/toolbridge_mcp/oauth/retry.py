"""How one token fetch retries: a policy object over stamina.

Network errors, timeouts, 408, 429 and 5xx are retried with exponential backoff and
jitter; a ``Retry-After`` is honoured when it fits before the deadline; anything else (a
wrong secret, a missing grant) fails at once. One deadline bounds all attempts and waits
together, so a caller with no token never waits on the identity provider longer than it;
by default the attempts go on until that deadline (an identity provider refusing connections
for a few seconds does not fail a caller that could have waited 15 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import stamina

from toolbridge_mcp.oauth.errors import TokenError

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """The policy's deadline ended the attempts (not a timeout raised inside one);
    ``last`` is the failure of the last attempt that finished, if any."""

    def __init__(self, last: TokenError | None = None) -> None:
        super().__init__("deadline exceeded")
        self.last = last


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` tries at most (``None``: as many as fit), waits from ``wait_initial``
    doubling up to ``wait_max`` (plus up to ``wait_initial`` of jitter), all within
    ``deadline`` seconds."""

    attempts: int | None = None
    wait_initial: float = 0.2
    wait_max: float = 5.0
    deadline: float = 15.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy of ``TOOLBRIDGE_TOKEN_REQUEST_DEADLINE_SECONDS`` (the rest: defaults)."""
        return cls(deadline=settings.token_request_deadline_seconds)

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it succeeds or fails for good; re-raises its last
        :class:`TokenError`, or :class:`DeadlineExceeded` when the deadline ends it."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.deadline
        last: TokenError | None = None

        def retry_or_wait(exc: Exception) -> bool | float:
            nonlocal last
            if isinstance(exc, TokenError):
                last = exc
            if not isinstance(exc, TokenError) or not exc.retryable:
                return False
            if exc.retry_after is None:
                return True
            return exc.retry_after if exc.retry_after < give_up_at - loop.time() else False

        retrying = stamina.retry(  # named after ``attempt`` in stamina's instrumentation
            on=retry_or_wait,
            attempts=self.attempts,
            timeout=None,  # the deadline below also bounds an attempt in progress
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
            wait_jitter=self.wait_initial,
        )(attempt)
        deadline = asyncio.timeout_at(give_up_at)
        try:
            async with deadline:
                return await retrying()
        except TimeoutError:
            if deadline.expired():
                raise DeadlineExceeded(last) from None
            raise
