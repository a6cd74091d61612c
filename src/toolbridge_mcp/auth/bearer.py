"""An ``httpx.Auth`` that signs requests with managed tokens and survives revocation."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Generator

import httpx
from loguru import logger

from toolbridge_mcp.tokens import TokenManager


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer …`` from a :class:`TokenManager`.

    On a 401 the rejected token is invalidated and the request is sent once more with a
    fresh one, so a revoked or rotated token heals on the next call instead of in a day.
    If even the fresh token is refused, the API does not accept this client's tokens at all
    (wrong audience or issuer): refetching on every call would only burn the identity
    provider's quota, so for ``refetch_cooldown`` seconds 401s are passed on as they are.
    """

    def __init__(
        self,
        manager: TokenManager,
        *,
        refetch_cooldown: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._manager = manager
        self._cooldown = refetch_cooldown
        self._clock = clock
        self._no_refetch_until = float("-inf")

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("BearerAuth needs an httpx.AsyncClient")
        yield request  # pragma: no cover - makes this a generator, as httpx expects

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._manager.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != httpx.codes.UNAUTHORIZED:
            return
        if self._clock() < self._no_refetch_until:
            return
        self._manager.invalidate(token)
        token = await self._manager.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == httpx.codes.UNAUTHORIZED:
            self._no_refetch_until = self._clock() + self._cooldown
            logger.error(
                "The API rejected a freshly fetched token too: it does not accept this "
                "client's tokens (check TOOLBRIDGE_AUTH0_AUDIENCE and the issuer the API "
                "trusts); not refetching on 401 for {:.0f}s",
                self._cooldown,
            )
