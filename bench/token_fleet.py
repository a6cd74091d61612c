"""Fleet-mode token figures: token requests per token lifetime for fleets of 1, 2, 4 and 8
processes, each with its own in-memory cache vs sharing Redis; the cost of the Redis-backed
cache on the cached path (none: it is the same clock comparison) and when a process starts
(one Redis read and a decryption instead of a token request). Prints figures; asserts nothing.

Needs Redis at ``TOOLBRIDGE_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); keys
under a prefix of the run's own, deleted afterwards. The fleets are forked processes of
``tests.support.token_worker`` (5 callers each, calling every 20 ms), the IdP the scriptable
one in a process of its own.

Run: ``uv run python -m bench.token_fleet`` (from the repository root, < 2 min).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

from bench.token_manager import AUDIENCE, CLIENT_ID, CLIENT_SECRET, RemoteIdP, per_call_us
from tests.support.idp import Reply
from tests.support.redis_server import delete_prefixed, redis_problem, unique_prefix
from tests.support.token_worker import WorkerConfig
from toolbridge_common.logs import configure_logging
from toolbridge_mcp.oauth import RetryPolicy
from toolbridge_mcp.tokens import MemoryTokenCache, TokenManager
from toolbridge_mcp.tokens.cache import TokenCache
from toolbridge_mcp.tokens.redis_cache import RedisTokenCache

REDIS_URL = os.environ.get("TOOLBRIDGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
LIFETIME = 2
LIFETIMES = 3
FLEETS = (1, 2, 4, 8)


def run_fleet(idp: RemoteIdP, processes: int, *, memory: bool, prefix: str) -> dict[str, Any]:
    """``processes`` fleet members calling for :data:`LIFETIMES` token lifetimes."""
    idp.call("reset")
    idp.call("default", Reply(expires_in=LIFETIME))
    config = WorkerConfig(
        redis_url=REDIS_URL,
        prefix=prefix,
        token_url=idp.token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        audience=AUDIENCE,
        callers=5,
        duration=LIFETIME * LIFETIMES,
        memory=memory,
        processes=processes,
    )
    worker = subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "tests.support.token_worker", json.dumps(asdict(config))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdin is not None
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == "ready"
    worker.stdin.write("go\n")
    worker.stdin.flush()
    out, _ = worker.communicate(timeout=60)
    reports: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
    requests = idp.call("count")  # any other command: just the count
    return {
        "requests": requests,
        "per_lifetime": requests / LIFETIMES,
        "errors": sum(r["errors"] for r in reports),
        "calls": sum(r["calls"] for r in reports),
    }


def fleets(idp: RemoteIdP) -> None:
    print(
        f"Token requests per token lifetime ({LIFETIME} s tokens, renewed at half-life, "
        f"{LIFETIMES} lifetimes of calls; one process alone: ~2 per lifetime + the first)"
    )
    print(f"{'processes':>9} | {'memory (each its own)':>22} | {'Redis (shared)':>15} | errors")
    for processes in FLEETS:
        prefix = unique_prefix()
        try:
            memory = run_fleet(idp, processes, memory=True, prefix=prefix)
            shared = run_fleet(idp, processes, memory=False, prefix=prefix)
        finally:
            delete_prefixed(REDIS_URL, prefix)
        print(
            f"{processes:>9} | {memory['per_lifetime']:>22.1f} | {shared['per_lifetime']:>15.1f} "
            f"| {memory['errors']} / {shared['errors']}"
        )


def _manager(idp: RemoteIdP, cache: TokenCache) -> TokenManager:
    return TokenManager.client_credentials(
        CLIENT_ID,
        CLIENT_SECRET,
        audience=AUDIENCE,
        token_url=idp.token_url,
        retry=RetryPolicy(deadline=5.0),
        cache=cache,
    )


async def latency(idp: RemoteIdP) -> None:
    idp.call("reset")
    idp.call("default", Reply(expires_in=3600))
    prefix = unique_prefix()
    redis_cache = RedisTokenCache(REDIS_URL, secret=CLIENT_SECRET, prefix=prefix)
    await redis_cache.start()
    try:
        for name, cache in (("memory", MemoryTokenCache()), ("Redis", redis_cache)):
            async with _manager(idp, cache) as manager:
                await manager.get_token()
                cost = await per_call_us(manager.get_token)
            print(f"cached get_token(), {name + ' cache:':<14}{cost:8.3f} µs/call (best of 5)")

        starts, fetches, reads = [], [], []
        for _ in range(50):
            async with _manager(idp, redis_cache) as manager:  # a new process, warm Redis
                started = time.perf_counter()
                await manager.get_token()
                starts.append((time.perf_counter() - started) * 1000)
            async with _manager(idp, MemoryTokenCache()) as manager:  # no shared cache
                started = time.perf_counter()
                await manager.get_token()
                fetches.append((time.perf_counter() - started) * 1000)
            key = manager._source.cache_key
            started = time.perf_counter()
            await redis_cache.get(key)
            reads.append((time.perf_counter() - started) * 1000)
        print(
            "first get_token() of a new manager: from Redis "
            f"{statistics.median(starts):.2f} ms median, from the IdP (loopback) "
            f"{statistics.median(fetches):.2f} ms median (50 each)"
        )
        read = statistics.median(reads)
        print(f"one Redis cache read (GET + AES-GCM open): {read:.3f} ms median")
    finally:
        await redis_cache.aclose()
        delete_prefixed(REDIS_URL, prefix)


def main() -> None:
    configure_logging("ERROR")
    problem = redis_problem(REDIS_URL)
    if problem is not None:
        sys.exit(f"{problem} (set TOOLBRIDGE_BENCH_REDIS_URL)")
    idp = RemoteIdP()
    try:
        print(f"Python {sys.version.split()[0]}, IdP process at {idp.token_url}, Redis {REDIS_URL}")
        asyncio.run(latency(idp))
        fleets(idp)
    finally:
        idp.close()


if __name__ == "__main__":
    main()
