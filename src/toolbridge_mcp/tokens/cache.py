"""Where issued tokens are kept between fetches, keyed by what they were issued for.

The token manager keeps the current token in memory for its fast path; a :class:`TokenCache`
is the tier behind it that other processes (or a restarted one) can share: before asking the
identity provider, the manager looks here, and it puts every token it fetches here.

A cache may also coordinate renewals (:class:`RenewingTokenCache`): ``renew`` runs one fetch
for everything sharing the cache and hands the others its token, so the manager's renewal
stays one call whichever cache is behind it. :class:`MemoryTokenCache` coordinates one process
(the manager's :class:`~toolbridge_common.singleflight.SingleFlight` already does);
:class:`~toolbridge_mcp.tokens.redis_cache.RedisTokenCache` a fleet, through a lock in Redis.
A cache with only ``get`` and ``put`` gets :func:`renew_locally`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from loguru import logger

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings
    from toolbridge_mcp.tokens.redis_cache import RedisTokenCache


@dataclass(frozen=True, slots=True)
class CachedToken:
    """A token as stored: expiry in Unix seconds, so any process can read it."""

    value: str = field(repr=False)
    lifetime: float
    """Its whole lifetime as issued, in seconds (schedules refresh at half-life)."""
    expires_at: float
    """Unix time (seconds) when it expires."""
    scope: str | None = None
    refresh_in: float | None = None
    """The identity provider's refresh advice, seconds after issue, if it gave one."""


Fetch = Callable[[], Awaitable[CachedToken]]
"""Gets a new token from the identity provider (the manager installs it as it arrives)."""
Wanted = Callable[[CachedToken], bool]
"""Whether a stored token would do instead of fetching (not the one being replaced, not due)."""


class TokenCache(Protocol):
    """Tokens by cache key (see ``TokenEndpoint.cache_key``). A cache may lose entries at
    any time; the manager then fetches a new token. Errors are logged and treated as a miss."""

    async def get(self, key: str) -> CachedToken | None:
        """The token stored under ``key``, if any (expired ones may be returned)."""
        ...

    async def put(self, key: str, token: CachedToken) -> None:
        """Store ``token`` under ``key``, replacing what was there."""
        ...


@runtime_checkable
class RenewingTokenCache(TokenCache, Protocol):
    """A cache that also coordinates renewals among everything sharing it."""

    async def renew(self, key: str, fetch: Fetch, *, wanted: Wanted) -> CachedToken:
        """The token to use now for ``key``: a stored one ``wanted`` accepts, else one
        ``fetch`` got — by this caller, or by another sharing the cache whose renewal was
        under way (stored afterwards). Raises what ``fetch`` raises; never a cache error."""
        ...


async def renew_locally(
    cache: TokenCache, key: str, fetch: Fetch, *, wanted: Wanted
) -> CachedToken:
    """:meth:`RenewingTokenCache.renew` for one process: the stored token if wanted, else
    fetch and store. A failing cache costs a warning, never the token."""
    try:
        cached = await cache.get(key)
    except Exception as exc:
        logger.warning(
            "Token cache unavailable ({}): asking the identity provider", type(exc).__name__
        )
        cached = None
    if cached is not None and wanted(cached):
        return cached
    token = await fetch()
    try:
        await cache.put(key, token)
    except Exception as exc:
        logger.warning("Token cache unavailable ({}): token not shared", type(exc).__name__)
    return token


@dataclass(frozen=True, slots=True)
class CacheState:
    """Where tokens are cached now, for health output and metrics."""

    backend: Literal["memory", "redis"]
    shared: bool
    """Whether other processes see this process's tokens (``False`` while Redis is down)."""
    since: datetime | None = None
    """When ``shared`` last changed (the start, for a cache that never changes)."""


class MemoryTokenCache:
    """A :class:`TokenCache` in this process's memory, one entry per key (the latest).
    Shared by several managers of one process, it lets a manager built later (a server
    restarted in process) start with the token an earlier one fetched."""

    def __init__(self, max_entries: int | None = None) -> None:
        self._tokens: dict[str, CachedToken] = {}
        self._max_entries = max_entries
        """Beyond it the least recently stored entries go (many users' exchanged tokens)."""

    @property
    def state(self) -> CacheState:
        return CacheState("memory", shared=False)

    async def get(self, key: str) -> CachedToken | None:
        return self._tokens.get(key)

    async def put(self, key: str, token: CachedToken) -> None:
        self._tokens.pop(key, None)
        self._tokens[key] = token
        if self._max_entries is not None and len(self._tokens) > self._max_entries:
            del self._tokens[next(iter(self._tokens))]

    async def renew(self, key: str, fetch: Fetch, *, wanted: Wanted) -> CachedToken:
        return await renew_locally(self, key, fetch, wanted=wanted)

    async def start(self) -> None:
        """Nothing to connect to."""

    async def aclose(self) -> None:
        """Nothing to release."""


def token_cache_from_settings(
    settings: Settings, *, secret: str | None
) -> MemoryTokenCache | RedisTokenCache:
    """The token cache of a server: in memory, or in Redis with ``TOOLBRIDGE_REDIS_URL``
    (sealed with ``TOOLBRIDGE_TOKEN_CACHE_KEY``, else a key derived from ``secret``, the
    mode's client secret). The settings checked that one of them is there."""
    if settings.redis_url is None:
        return MemoryTokenCache()
    from toolbridge_mcp.tokens.redis_cache import RedisTokenCache

    return RedisTokenCache.from_settings(settings, secret=secret)
