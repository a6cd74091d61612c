"""Processes of a test fleet: each a :class:`TokenManager` on a :class:`RedisTokenCache`,
with many concurrent callers of ``get_token``. Run as ``python -m tests.support.token_worker
CONFIG`` (JSON, see :class:`WorkerConfig`): prints ``ready`` once every process is built,
waits for a line on stdin (so the whole fleet starts calling at once), then prints the JSON
reports, one per process. ``processes`` > 1 forks them from this one after the imports (OS
processes of their own, each with its event loop and Redis connections; only the import time
is shared); 1 runs in this process, so that killing it kills the fleet member. Tokens are
reported as SHA-256 digests, never in clear."""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import sys
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event, Semaphore
from typing import Any

from toolbridge_common.logs import configure_logging
from toolbridge_mcp.oauth import RetryPolicy, TokenError
from toolbridge_mcp.tokens import TokenManager
from toolbridge_mcp.tokens.redis_cache import RedisTokenCache


@dataclass(frozen=True)
class WorkerConfig:
    redis_url: str
    prefix: str
    token_url: str
    client_id: str
    client_secret: str
    audience: str
    callers: int = 100
    duration: float = 0.0
    """0: each caller gets one token; else callers keep calling for this long."""
    patience: float = 30.0
    """How long a caller keeps retrying after a failed ``get_token``."""
    deadline: float = 5.0
    lock_ttl: float = 7.0
    memory: bool = False
    """Each process on its own (a fleet without Redis), for comparison."""
    processes: int = 1


@dataclass
class Report:
    tokens: list[str] = field(default_factory=list)
    """Digests of the distinct tokens callers got."""
    calls: int = 0
    errors: int = 0
    refreshes: int = 0
    first_token_after: float | None = None
    """Seconds from "go" to the first token any caller got."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _caller(
    manager: TokenManager, config: WorkerConfig, report: Report, started: float
) -> None:
    end = started + config.duration
    while True:
        give_up = time.monotonic() + config.patience
        while True:
            report.calls += 1
            try:
                token = await manager.get_token()
                break
            except TokenError:
                report.errors += 1
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.05)
        if report.first_token_after is None:
            report.first_token_after = time.monotonic() - started
        if (hashed := digest(token)) not in report.tokens:
            report.tokens.append(hashed)
        if time.monotonic() >= end:
            return
        await asyncio.sleep(0.02)


async def fleet_member(config: WorkerConfig, ready: Semaphore, go: Event) -> Report:
    cache = RedisTokenCache(
        config.redis_url,
        secret=config.client_secret,
        prefix=config.prefix,
        lock_ttl=config.lock_ttl,
    )
    manager = TokenManager.client_credentials(
        config.client_id,
        config.client_secret,
        audience=config.audience,
        token_url=config.token_url,
        retry=RetryPolicy(wait_initial=0.05, wait_max=0.2, deadline=config.deadline),
        cache=None if config.memory else cache,
    )
    if not config.memory:
        await cache.start()
    ready.release()
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    report = Report()
    started = time.monotonic()
    try:
        async with manager:
            await asyncio.gather(
                *(_caller(manager, config, report, started) for _ in range(config.callers))
            )
            report.refreshes = manager.stats.refresh_count
    finally:
        await cache.aclose()
    return report


def _forked(
    config: WorkerConfig, ready: Semaphore, go: Event, reports: Queue[dict[str, Any]]
) -> None:
    reports.put(asdict(asyncio.run(fleet_member(config, ready, go))))


async def _alone(config: WorkerConfig, ready: Semaphore, go: Event) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    member = asyncio.create_task(fleet_member(config, ready, go))
    await loop.run_in_executor(None, ready.acquire)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    go.set()
    return [asdict(await member)]


def main(config: WorkerConfig) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("fork")
    ready, go = context.Semaphore(0), context.Event()
    if config.processes == 1:
        return asyncio.run(_alone(config, ready, go))
    reports: Queue[dict[str, Any]] = context.Queue()
    members = [
        context.Process(target=_forked, args=(config, ready, go, reports))
        for _ in range(config.processes)
    ]
    for member in members:
        member.start()
    for _ in members:
        ready.acquire()
    print("ready", flush=True)
    sys.stdin.readline()
    go.set()
    collected = [reports.get(timeout=60) for _ in members]
    for member in members:
        member.join(timeout=10)
    return collected


if __name__ == "__main__":
    configure_logging("WARNING")
    print(json.dumps(main(WorkerConfig(**json.loads(sys.argv[1])))), flush=True)
