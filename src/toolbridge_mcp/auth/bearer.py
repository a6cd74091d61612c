"""An ``httpx.Auth`` that signs requests with managed tokens and survives revocation and
signing-key rotation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Generator

import httpx
from loguru import logger

from toolbridge_mcp.tokens import TokenManager

UNKNOWN_KEY_TEXT = "kid does not match any signing key"
"""How the ToolBridge API says that it does not know the key a token was signed with (yet)."""
UNKNOWN_KEY_WAITS: tuple[float, ...] = (0.5, 1.0, 1.5)
"""Seconds to wait before each resend of a token whose key the API does not know yet: the API
refetches its JWKS for an unknown key at most once a second, so the second resend (1.5 s after
the 401) always comes after a refetch."""


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer …`` from a :class:`TokenManager`.

    On a 401 the rejected token is invalidated and the request is sent once more with a
    fresh one, so a revoked or rotated token heals on the next call instead of in a day.
    If even the fresh token is refused, the API does not accept this client's tokens at all
    (wrong audience or issuer): refetching on every call would only burn the identity
    provider's quota, so for ``refetch_cooldown`` seconds 401s are passed on as they are.

    A 401 saying the token's key is unknown (``kid does not match any signing key``) is
    different: the identity provider rotated its keys and the API has not read the new ones
    yet. The same token is sent again after each of ``unknown_key_waits``; that is neither a
    configuration error nor a reason for a new token or the cool-down. Should the key still
    be unknown after them (this token comes from another identity provider than the API's
    keys), such 401s are passed on without waiting for ``refetch_cooldown`` seconds.
    """

    def __init__(
        self,
        manager: TokenManager,
        *,
        refetch_cooldown: float = 60.0,
        unknown_key_waits: tuple[float, ...] = UNKNOWN_KEY_WAITS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._manager = manager
        self._cooldown = refetch_cooldown
        self._unknown_key_waits = unknown_key_waits
        self._clock = clock
        self._no_refetch_until = float("-inf")
        self._no_key_wait_until = float("-inf")

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("BearerAuth needs an httpx.AsyncClient")
        yield request  # pragma: no cover - makes this a generator, as httpx expects

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._manager.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        waits = self._unknown_key_waits if self._clock() >= self._no_key_wait_until else ()
        for attempt, wait in enumerate(waits, start=1):
            if not await unknown_key(response):
                break
            logger.info(
                "The API does not know the key this token is signed with yet (the identity "
                "provider rotated its keys?); sending it again in {:.1f}s ({}/{})",
                wait,
                attempt,
                len(self._unknown_key_waits),
            )
            await asyncio.sleep(wait)
            token = await self._manager.get_token()  # the same one, unless it was refreshed
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
        if response.status_code != httpx.codes.UNAUTHORIZED:
            return
        if await unknown_key(response):
            if waits:
                self._no_key_wait_until = self._clock() + self._cooldown
                logger.error(
                    "The API still does not know the key this token is signed with: its JWKS "
                    "and this server's token endpoint seem to be different identity providers; "
                    "not waiting on such 401s for {:.0f}s",
                    self._cooldown,
                )
            return
        if self._clock() < self._no_refetch_until:
            return
        self._manager.invalidate(token)
        token = await self._manager.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == httpx.codes.UNAUTHORIZED and not await unknown_key(response):
            self._no_refetch_until = self._clock() + self._cooldown
            logger.error(
                "The API rejected a freshly fetched token too: it does not accept this "
                "client's tokens (check TOOLBRIDGE_AUTH0_AUDIENCE and the issuer the API "
                "trusts); not refetching on 401 for {:.0f}s",
                self._cooldown,
            )


async def unknown_key(response: httpx.Response) -> bool:
    """Whether ``response`` is the API's 401 for a token signed with a key it does not know."""
    if response.status_code != httpx.codes.UNAUTHORIZED:
        return False
    await response.aread()
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, str) and UNKNOWN_KEY_TEXT in error
