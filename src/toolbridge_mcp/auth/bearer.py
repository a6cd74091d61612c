"""An ``httpx.Auth`` that signs requests with managed tokens and survives revocation."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx

from toolbridge_mcp.auth.token_manager import TokenManager


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer …`` from a :class:`TokenManager`.

    On a 401 the rejected token is invalidated and the request is sent once more with a
    fresh one, so a revoked or rotated token heals on the next call instead of in a day.
    """

    def __init__(self, manager: TokenManager) -> None:
        self._manager = manager

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
        self._manager.invalidate(token)
        token = await self._manager.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        yield request
