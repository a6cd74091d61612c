"""Where issued tokens are kept between fetches, keyed by what they were issued for.

The token manager keeps the current token in memory for its fast path; a :class:`TokenCache`
is the tier behind it that other processes (or a restarted one) can share: before asking the
identity provider, the manager looks here, and it puts every token it fetches here.
:class:`MemoryTokenCache` is the first implementation (one process). To share tokens across a
fleet, implement :class:`TokenCache` over Redis (``GET``/``SET`` with ``PX`` set to the
remaining lifetime) and pass it to the :class:`~toolbridge_mcp.tokens.TokenManager`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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


class TokenCache(Protocol):
    """Tokens by cache key (see ``TokenEndpoint.cache_key``). A cache may lose entries at
    any time; the manager then fetches a new token. Errors are logged and treated as a miss."""

    async def get(self, key: str) -> CachedToken | None:
        """The token stored under ``key``, if any (expired ones may be returned)."""
        ...

    async def put(self, key: str, token: CachedToken) -> None:
        """Store ``token`` under ``key``, replacing what was there."""
        ...


class MemoryTokenCache:
    """A :class:`TokenCache` in this process's memory, one entry per key (the latest).
    Shared by several managers of one process, it lets a manager built later (a server
    restarted in process) start with the token an earlier one fetched."""

    def __init__(self) -> None:
        self._tokens: dict[str, CachedToken] = {}

    async def get(self, key: str) -> CachedToken | None:
        return self._tokens.get(key)

    async def put(self, key: str, token: CachedToken) -> None:
        self._tokens[key] = token
