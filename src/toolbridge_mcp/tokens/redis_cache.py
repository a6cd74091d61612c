"""Tokens shared by a fleet through Redis: one token request per renewal for every process.

What is stored: under ``{prefix}token:{<cache key>}`` (the endpoint's ``cache_key``, already a
hash of token URL, client id and request; never a secret) the value ``<fence>:<sealed token>``.
The token is sealed with AES-256-GCM under a key derived (HKDF-SHA256) from
``TOOLBRIDGE_TOKEN_CACHE_KEY`` or the client secret, the Redis key and fence bound in as
associated data: Redis holds no token or secret in clear, and a value copied to another key or
given another fence does not open. A value that does not open (another key, corruption) is a
miss and is dropped, so the next token replaces it.

One renewal per fleet: a renewer that finds no usable token takes the lock
``…:lock`` (``SET NX PX`` with a random holder token; released only by its holder, by a Lua
compare-and-delete), and with it the next number of the fence counter ``…:fence`` (``INCR``,
in the same script). It fetches and publishes through a Lua script that refuses to overwrite a
token published with a higher fence, so a holder that lost its lock (paused past its expiry)
can never replace a newer token. The lock expires after the token request deadline plus
:data:`LOCK_MARGIN`: a token request ends by its deadline, so the holder never needs to extend
it, and a holder that died mid-request frees it by then for another process to complete.

The others wait by polling the stored token every :data:`POLL_INTERVAL` seconds. Polling,
not pub/sub: in-process single flight leaves one waiter per process, renewals come once per
token half-life, and a waiter must watch the lock's expiry anyway (a dead holder publishes
nothing); pub/sub would add a dedicated connection per process and a subscribe-then-read
dance so as not to miss the message, for a few dozen cheap ``GET`` s saved.

Redis down or slow (every call bounded by ``TOOLBRIDGE_REDIS_TIMEOUT_SECONDS``): this process
goes on with its own in-memory cache, logs one warning, shows ``shared: false`` in health
output and metrics, and probes Redis every :data:`PROBE_INTERVAL` seconds (never on a call)
until it answers again (one info line). No token request waits on Redis beyond its timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from toolbridge_common.redis_urls import redacted_url, redis_client
from toolbridge_common.settings import ConfigError
from toolbridge_mcp.tokens.cache import (
    CachedToken,
    CacheState,
    Fetch,
    MemoryTokenCache,
    Wanted,
    renew_locally,
)

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings

LOCK_MARGIN = 2.0
"""Seconds the renewal lock outlives the token request deadline."""
POLL_INTERVAL = 0.05
"""Seconds between two looks at the stored token while another process renews."""
FENCE_TTL = 86_400.0
"""Seconds the fence counter lives after the last lock (or as long as its token, if longer):
a holder stalled past its lock must still find a higher fence when it publishes late."""
PROBE_INTERVAL = 2.0
"""Seconds between two checks that Redis answers (the only calls made while it is down)."""
LOCAL_ENTRIES = 4096
"""Tokens kept in this process's fallback cache (per-user mode keeps one per user)."""
_FENCE_TTL_MS = round(FENCE_TTL * 1000)
_ERRORS = (RedisError, OSError)
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)
"""Errors that mean Redis cannot be used now (others are one call's problem)."""
_HKDF_SALT = b"toolbridge-mcp token cache"
_HKDF_INFO = b"aes-256-gcm v1"
_NONCE_BYTES = 12

_FENCE_OF = """
local function fence_of(key)
  if redis.call('TYPE', key).ok ~= 'string' then return 0 end
  return tonumber(string.match(redis.call('GET', key), '^(%d+):') or '0')
end
-- The next fence: above every one given before, and above the stored token's even if the
-- counter was lost; the counter lives ttl ms more.
local function next_fence(counter, token, ttl)
  local fence = redis.call('INCR', counter)
  local stored = fence_of(token)
  if fence <= stored then
    fence = stored + 1
    redis.call('SET', counter, fence)
  end
  redis.call('PEXPIRE', counter, ttl)
  return fence
end
"""
_ACQUIRE = (
    _FENCE_OF
    + """
-- KEYS[1] lock, KEYS[2] fence counter, KEYS[3] token; ARGV[1] holder, ARGV[2] lock ms,
-- ARGV[3] counter ms. The lock and the next fence, or 0 if another holds the lock.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
return next_fence(KEYS[2], KEYS[3], ARGV[3])
"""
)
_NEXT_FENCE = (
    _FENCE_OF
    + """
-- KEYS[1] fence counter, KEYS[2] token; ARGV[1] counter ms. A fence without the lock.
return next_fence(KEYS[1], KEYS[2], ARGV[1])
"""
)
_PUBLISH = (
    _FENCE_OF
    + """
-- KEYS[1] token, KEYS[2] fence counter; ARGV[1] fence, ARGV[2] sealed token, ARGV[3] ms to
-- keep it. Refused if the stored token has the same or a higher fence.
if fence_of(KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"""
)
_DELETE_IF = """
-- KEYS[1]; ARGV[1] the value it must still hold (a lock's holder token, an unreadable value)
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class TokenSealer:
    """AES-256-GCM under a key derived with HKDF-SHA256 from ``secret``; each value is bound
    to its Redis key and fence (associated data)."""

    def __init__(self, secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO).derive(
            secret.encode()
        )
        self._aead = AESGCM(key)

    def seal(self, name: str, fence: int, token: CachedToken) -> bytes:
        plain = json.dumps(
            {
                "value": token.value,
                "lifetime": token.lifetime,
                "expires_at": token.expires_at,
                "scope": token.scope,
                "refresh_in": token.refresh_in,
            }
        ).encode()
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, _associated(name, fence))

    def open(self, name: str, stored: bytes) -> CachedToken | None:
        """The token of a stored ``<fence>:<sealed>`` value; ``None`` if it does not open."""
        fence, colon, sealed = stored.partition(b":")
        if not colon or not fence.isdigit() or len(sealed) <= _NONCE_BYTES:
            return None
        nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            fields = json.loads(self._aead.decrypt(nonce, body, _associated(name, int(fence))))
            return CachedToken(
                str(fields["value"]),
                float(fields["lifetime"]),
                float(fields["expires_at"]),
                None if fields["scope"] is None else str(fields["scope"]),
                None if fields["refresh_in"] is None else float(fields["refresh_in"]),
            )
        except (InvalidTag, ValueError, KeyError, TypeError):
            return None


def _associated(name: str, fence: int) -> bytes:
    return f"{name}|{fence}".encode()


class RedisTokenCache:
    """A :class:`~toolbridge_mcp.tokens.cache.RenewingTokenCache` in Redis, shared by a
    fleet (module docstring), with this process's :class:`MemoryTokenCache` as the fallback
    while Redis is down. :meth:`start` checks Redis and starts the probe; :meth:`aclose`
    stops it."""

    def __init__(
        self,
        url: str,
        *,
        secret: str,
        prefix: str = "toolbridge:",
        timeout: float = 0.5,
        lock_ttl: float = 15.0 + LOCK_MARGIN,
        probe_interval: float = PROBE_INTERVAL,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._url = redacted_url(url)
        self._redis: Redis = redis_client(url, timeout=timeout)
        self._sealer = TokenSealer(secret)
        self._prefix = prefix
        self._lock_ms = max(1, round(lock_ttl * 1000))
        self._probe_interval = probe_interval
        self._poll_interval = poll_interval
        self._local = MemoryTokenCache(max_entries=LOCAL_ENTRIES)
        self._shared = True
        self._since = datetime.now(UTC)
        self._probe: asyncio.Task[None] | None = None
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._publish = self._redis.register_script(_PUBLISH)
        self._next_fence = self._redis.register_script(_NEXT_FENCE)
        self._delete_if = self._redis.register_script(_DELETE_IF)

    @classmethod
    def from_settings(cls, settings: Settings, *, secret: str | None) -> RedisTokenCache:
        """The cache of ``TOOLBRIDGE_REDIS_*``: sealed with ``TOOLBRIDGE_TOKEN_CACHE_KEY``,
        else with a key derived from ``secret`` (the mode's client secret)."""
        from toolbridge_mcp.config import env_name

        if settings.redis_url is None:
            raise ConfigError(f"{env_name('redis_url')} not set")
        key = settings.token_cache_key.get_secret_value() if settings.token_cache_key else secret
        if key is None:
            raise ConfigError(
                f"{env_name('token_cache_key')} not set: tokens in Redis are encrypted with a "
                "key derived from it or from the client secret, and there is no client secret"
            )
        return cls(
            settings.redis_url.get_secret_value(),
            secret=key,
            prefix=settings.redis_key_prefix,
            timeout=settings.redis_timeout_seconds,
            lock_ttl=settings.token_request_deadline_seconds + LOCK_MARGIN,
        )

    @property
    def state(self) -> CacheState:
        return CacheState("redis", shared=self._shared, since=self._since)

    async def start(self) -> None:
        """Check that Redis answers (a warning if not) and keep checking."""
        await self._check()
        self._watch()

    async def aclose(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        with contextlib.suppress(*_ERRORS):
            await self._redis.aclose()

    async def get(self, key: str) -> CachedToken | None:
        if self._shared:
            try:
                return await self._read(key)
            except _ERRORS as exc:
                self._failed(exc)
        return await self._local.get(key)

    async def put(self, key: str, token: CachedToken) -> None:
        await self._local.put(key, token)
        if self._shared:
            try:
                await self._store(key, token, await self._fence(key))
            except _ERRORS as exc:
                self._failed(exc)

    async def renew(self, key: str, fetch: Fetch, *, wanted: Wanted) -> CachedToken:
        """One renewal for the fleet (module docstring); this process's own while Redis is
        down, or once it fails mid-way (never a second fetch for one renewal)."""
        self._watch()
        fetched: list[CachedToken] = []

        async def fetch_once() -> CachedToken:
            fetched.append(await fetch())
            return fetched[0]

        if self._shared:
            try:
                return await self._renew_shared(key, fetch_once, wanted)
            except _ERRORS as exc:
                self._failed(exc)
        if fetched:
            await self._local.put(key, fetched[0])
            return fetched[0]
        return await renew_locally(self._local, key, fetch, wanted=wanted)

    async def _renew_shared(self, key: str, fetch: Fetch, wanted: Wanted) -> CachedToken:
        """Wait for a wanted token or the lock; as holder, fetch and publish. After waiting
        a whole lock expiry (the lock changed hands meanwhile), fetch without it."""
        name, lock, fences = self._names(key)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._lock_ms / 1000
        while True:
            cached = await self._read(key)
            if cached is not None and wanted(cached):
                return cached
            holder = secrets.token_hex(16)
            fence = int(
                await self._acquire(
                    keys=[lock, fences, name], args=[holder, self._lock_ms, _FENCE_TTL_MS]
                )
            )
            if fence:
                try:
                    # A holder may have published between our read and our lock.
                    cached = await self._read(key)
                    if cached is not None and wanted(cached):
                        return cached
                    token = await fetch()
                    await self._store(key, token, fence)
                    return token
                finally:
                    with contextlib.suppress(*_ERRORS):
                        await self._delete_if(keys=[lock], args=[holder])
            if loop.time() >= give_up_at:
                logger.warning(
                    "Token cache: the renewal lock stayed taken for {:.1f}s; fetching a token "
                    "without it",
                    self._lock_ms / 1000,
                )
                token = await fetch()
                await self._store(key, token, await self._fence(key))
                return token
            await asyncio.sleep(self._poll_interval)

    async def _fence(self, key: str) -> int:
        """A fence for publishing without the lock (higher than any given before)."""
        name, _, fences = self._names(key)
        return int(await self._next_fence(keys=[fences, name], args=[_FENCE_TTL_MS]))

    async def _read(self, key: str) -> CachedToken | None:
        """The stored token; an unreadable value is dropped (if unchanged) and a miss."""
        name = self._names(key)[0]
        stored: Any = await self._redis.get(name)
        if stored is None:
            return None
        token = self._sealer.open(name, stored)
        if token is None:
            if await self._delete_if(keys=[name], args=[stored]):
                logger.warning(
                    "Token cache: an entry that does not decrypt (another "
                    "TOOLBRIDGE_TOKEN_CACHE_KEY or client secret, or corrupted) was dropped; "
                    "the next token replaces it"
                )
            return None
        await self._local.put(key, token)
        return token

    async def _store(self, key: str, token: CachedToken, fence: int) -> None:
        """Publish ``token`` with ``fence`` unless a higher fence's token is there."""
        await self._local.put(key, token)
        name, _, fences = self._names(key)
        keep_ms = round((token.expires_at - time.time()) * 1000)
        if keep_ms <= 0:
            return
        sealed = self._sealer.seal(name, fence, token)
        if not await self._publish(keys=[name, fences], args=[fence, sealed, keep_ms]):
            logger.debug("Token cache: a newer token was published meanwhile; kept it")

    def _names(self, key: str) -> tuple[str, str, str]:
        """Token, lock and fence counter keys (one hash tag: one Redis Cluster slot)."""
        name = f"{self._prefix}token:{{{key}}}"
        return name, f"{name}:lock", f"{name}:fence"

    def _watch(self) -> None:
        """Start the probe if it is not running (a cache used without :meth:`start`)."""
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(
                self._probe_forever(), name="toolbridge-token-cache-probe"
            )

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            await self._check()

    async def _check(self) -> None:
        try:
            await cast("Awaitable[bool]", self._redis.ping())  # typed sync-or-async
        except _ERRORS as exc:
            self._failed(exc)
        else:
            if not self._shared:
                self._shared, self._since = True, datetime.now(UTC)
                logger.info(
                    "Token cache: Redis at {} answers again; tokens are shared again", self._url
                )

    def _failed(self, exc: Exception) -> None:
        """Redis unavailable: fall back (one warning per outage). Another Redis error (a
        refused command) costs this call only."""
        if not isinstance(exc, _UNAVAILABLE):
            logger.warning("Token cache: Redis refused a command ({})", type(exc).__name__)
            return
        if self._shared:
            self._shared, self._since = False, datetime.now(UTC)
            logger.warning(
                "Token cache: Redis at {} unavailable ({}); this process uses its own "
                "in-memory token cache until it answers again (checked every {:g}s)",
                self._url,
                type(exc).__name__,
                self._probe_interval,
            )
