"""Access tokens over time: cached, renewed ahead of expiry, shared through a cache.

- :mod:`.manager` — :class:`TokenManager` (fast path, single flight, serving through outages)
- :mod:`.schedule` — :class:`RefreshSchedule` (when to renew, backoff after failures)
- :mod:`.cache` — the :class:`TokenCache` protocol and :class:`MemoryTokenCache`
- :mod:`.redis_cache` — ``RedisTokenCache``: tokens shared by a fleet (imported when used)
- :mod:`.stats` — :class:`TokenStats`, read by health output and metrics

Getting a token from an identity provider is :mod:`toolbridge_mcp.oauth`'s job.
"""

from toolbridge_mcp.tokens.cache import (
    CachedToken,
    CacheState,
    MemoryTokenCache,
    RenewingTokenCache,
    TokenCache,
)
from toolbridge_mcp.tokens.manager import TokenManager, TokenSource
from toolbridge_mcp.tokens.schedule import RefreshSchedule, ScheduledToken
from toolbridge_mcp.tokens.stats import TokenStats

__all__ = [
    "CacheState",
    "CachedToken",
    "MemoryTokenCache",
    "RefreshSchedule",
    "RenewingTokenCache",
    "ScheduledToken",
    "TokenCache",
    "TokenManager",
    "TokenSource",
    "TokenStats",
]
