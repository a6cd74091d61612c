"""Fleet mode: tokens shared through the real Redis by real OS processes.

Against the machine's Redis (127.0.0.1:6379, keys under a prefix of each test's own) and, for
the tests that stop Redis, a ``redis-server`` of the test's own; the fake IdP on 127.0.0.1
counts token requests. Fleet processes are ``tests.support.token_worker``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastmcp import Client

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET, LogCapture
from tests.support.idp import IdP, Reply
from tests.support.mcp_calls import call
from tests.support.mcp_server import ServerFactory
from tests.support.redis_server import (
    SHARED_REDIS_URL,
    RedisServer,
    delete_prefixed,
    redis_problem,
    unique_prefix,
)
from tests.support.token_worker import WorkerConfig, digest
from toolbridge_common.settings import ConfigError
from toolbridge_mcp.config import load_settings
from toolbridge_mcp.oauth import RetryPolicy
from toolbridge_mcp.tokens import CachedToken, TokenManager
from toolbridge_mcp.tokens.redis_cache import LOCK_MARGIN, RedisTokenCache

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 2.0
LOCK_TTL = DEADLINE + LOCK_MARGIN


@pytest.fixture(scope="module")
def shared_redis() -> str:
    """The machine's Redis; skipped when absent (failed with TOOLBRIDGE_TEST_REQUIRE_SERVICES=1)."""
    problem = redis_problem(SHARED_REDIS_URL)
    if problem is not None:
        if os.environ.get("TOOLBRIDGE_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{problem} (TOOLBRIDGE_TEST_REQUIRE_SERVICES=1)")
        pytest.skip(problem)
    return SHARED_REDIS_URL


@pytest.fixture
def prefix(shared_redis: str) -> Iterator[str]:
    value = unique_prefix()
    yield value
    delete_prefixed(shared_redis, value)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, with a password (it must never be logged)."""
    if not RedisServer.installed():
        pytest.skip("redis-server is not installed")
    with RedisServer(password="fleet-redis-pass") as server:
        yield server


class Worker:
    """One fleet process (``tests.support.token_worker``)."""

    def __init__(self, config: WorkerConfig) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
        self.process = subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "tests.support.token_worker", json.dumps(asdict(config))],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its forked members too: killed together, no orphans
        )

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.process.kill()
            _, err = self.process.communicate(timeout=10)
            raise RuntimeError(f"worker did not start: {line!r}\n{err[-2000:]}")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def reports(self, timeout: float = 90.0) -> list[dict[str, Any]]:
        """One per process."""
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            err = self.kill()
            raise AssertionError(f"no reports within {timeout:g}s\n{err[-2000:]}") from None
        assert self.process.returncode == 0, err[-2000:]
        reports: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
        return reports

    def kill(self) -> str:
        """SIGKILL to the worker and every member it forked (they hold its output pipes);
        what it wrote to stderr."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.communicate(timeout=10)[1]


def fleet_config(idp: IdP, redis_url: str, prefix: str, **options: Any) -> WorkerConfig:
    return WorkerConfig(
        redis_url=redis_url,
        prefix=prefix,
        token_url=idp.token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        audience=AUDIENCE,
        deadline=DEADLINE,
        lock_ttl=LOCK_TTL,
        **options,
    )


def run_fleet(config: WorkerConfig, processes: int) -> list[dict[str, Any]]:
    """``processes`` fleet members (forked by one worker), all calling at once; their
    reports."""
    worker = Worker(replace(config, processes=processes))
    try:
        worker.wait_ready()
        worker.go()
        return worker.reports()
    finally:
        if worker.process.poll() is None:
            worker.kill()


def test_a_fleet_of_8_cold_processes_makes_one_token_request_and_a_restart_none(
    idp: IdP, shared_redis: str, prefix: str
) -> None:
    """8 processes x 100 concurrent cold callers: one token request, one token for all;
    8 new processes while it is valid: no request."""
    config = fleet_config(idp, shared_redis, prefix, callers=100)
    reports = run_fleet(config, 8)
    assert len(idp.requests) == 1
    token = digest(idp.issued[0])
    assert [r["tokens"] for r in reports] == [[token]] * 8
    assert sum(r["errors"] for r in reports) == 0
    assert sum(r["refreshes"] for r in reports) == 1

    restarted = run_fleet(fleet_config(idp, shared_redis, prefix, callers=10), 8)
    assert len(idp.requests) == 1
    assert [r["tokens"] for r in restarted] == [[token]] * 8


def test_a_lock_holder_killed_mid_request_is_replaced_within_the_lock_expiry(
    idp: IdP, shared_redis: str, prefix: str
) -> None:
    """The holder is SIGKILLed while the IdP holds its request; the lock expires and one
    of the others fetches and publishes; it is what the fleet then uses."""
    idp.script(Reply(hang=True))
    config = fleet_config(idp, shared_redis, prefix, callers=5)
    holder = Worker(config)
    holder.wait_ready()
    holder.go()
    deadline = time.monotonic() + 10
    while not idp.requests:
        assert time.monotonic() < deadline, "the holder sent no token request"
        time.sleep(0.01)
    holder.kill()
    reports = run_fleet(config, 2)
    requests = idp.requests
    assert len(requests) == 2
    took_over_after = requests[1].at - requests[0].at
    assert took_over_after <= LOCK_TTL + 1.5
    successor = digest(idp.issued[-1])
    assert [r["tokens"] for r in reports] == [[successor]] * 2
    stored = asyncio.run(_stored(shared_redis, prefix))
    assert [digest(t.value) for t in stored] == [successor]


async def _stored(url: str, prefix: str) -> list[CachedToken]:
    """Every token under ``prefix`` that opens with the test client's secret."""
    cache = RedisTokenCache(url, secret=CLIENT_SECRET, prefix=prefix)
    try:
        client = redis.Redis.from_url(url)
        names = [
            name.decode()
            for name in client.scan_iter(match=f"{prefix}token:*")
            if not name.decode().endswith((":lock", ":fence"))
        ]
        client.close()
        keys = [name.removeprefix(f"{prefix}token:{{").removesuffix("}") for name in names]
        found = [await cache.get(key) for key in keys]
        return [token for token in found if token is not None]
    finally:
        await cache.aclose()


def test_the_scheduled_refresh_happens_once_per_fleet(
    idp: IdP, shared_redis: str, prefix: str
) -> None:
    """3 processes, 4 s tokens (renewed at half-life, 2 s), 3 lifetimes of calls: token
    requests as for one process, not three times as many. (With 2 s tokens a token request
    slowed past 1 s by a loaded machine makes every token due on arrival, and the fleet
    chases its own tail: a test of the machine, not of the fleet.)"""
    lifetime, duration = 4, 12.0
    idp.set_default(Reply(expires_in=lifetime))
    config = fleet_config(idp, shared_redis, prefix, callers=5, duration=duration)
    reports = run_fleet(config, 3)
    renewals = duration / (lifetime / 2)
    assert sum(r["errors"] for r in reports) == 0
    assert len(idp.requests) <= renewals + 2, len(idp.requests)
    assert sum(r["refreshes"] for r in reports) == len(idp.requests)


@pytest.fixture
async def redis_cache(shared_redis: str, prefix: str) -> AsyncIterator[RedisTokenCache]:
    cache = RedisTokenCache(shared_redis, secret=CLIENT_SECRET, prefix=prefix)
    await cache.start()
    yield cache
    await cache.aclose()


def _manager(idp: IdP, cache: RedisTokenCache) -> TokenManager:
    return TokenManager.client_credentials(
        CLIENT_ID,
        CLIENT_SECRET,
        audience=AUDIENCE,
        token_url=idp.token_url,
        retry=RetryPolicy(wait_initial=0.01, wait_max=0.05, deadline=DEADLINE),
        cache=cache,
    )


@pytest.mark.parametrize("damage", ["garbage", "flipped byte", "other fence"])
async def test_a_corrupted_stored_token_is_replaced_not_crashed_on(
    idp: IdP, redis_cache: RedisTokenCache, shared_redis: str, prefix: str, damage: str
) -> None:
    async with _manager(idp, redis_cache) as first:
        await first.get_token()
    client = redis.Redis.from_url(shared_redis)
    (name,) = [n for n in client.scan_iter(match=f"{prefix}token:*") if b":" not in n[-6:]]
    stored = client.get(name)
    assert isinstance(stored, bytes)
    fence, _, sealed = stored.partition(b":")
    if damage == "garbage":
        client.set(name, b"999999:not a sealed token")
    elif damage == "flipped byte":
        client.set(name, stored[:-1] + bytes([stored[-1] ^ 1]))
    else:
        client.set(name, str(int(fence) + 1).encode() + b":" + sealed)
    client.close()
    async with _manager(idp, redis_cache) as second:
        token = await second.get_token()
    assert len(idp.requests) == 2
    assert token == idp.issued[1]
    assert [t.value for t in await _stored(shared_redis, prefix)] == [token]


async def test_redis_holds_no_token_or_secret_in_clear(
    idp: IdP, redis_cache: RedisTokenCache, shared_redis: str, prefix: str
) -> None:
    async with _manager(idp, redis_cache) as manager:
        await manager.get_token()
        assert manager.invalidate(idp.issued[0])
        await manager.get_token()
    client = redis.Redis.from_url(shared_redis)
    names = list(client.scan_iter(match=f"{prefix}*"))
    values = [client.dump(name) for name in names]
    dump = b"\n".join([*names, *(value for value in values if isinstance(value, bytes))])
    client.close()
    assert len(names) == 2  # the token and its fence counter (the lock is released)
    for secret in (*idp.issued, CLIENT_SECRET):
        raw = secret.encode()
        for form in (
            raw,
            base64.b64encode(raw),
            base64.urlsafe_b64encode(raw).rstrip(b"="),
            raw.hex().encode(),
        ):
            assert form not in dump
        for part in secret.split("."):  # a JWT's parts are base64url themselves
            assert len(part) < 16 or part.encode() not in dump


async def test_a_stale_holder_never_overwrites_a_newer_token(
    shared_redis: str, prefix: str
) -> None:
    """Holder A stalls past its lock's expiry; B takes over and publishes; A's late token
    is refused (fence) and the stored token stays B's."""
    a = RedisTokenCache(shared_redis, secret=CLIENT_SECRET, prefix=prefix, lock_ttl=0.3)
    b = RedisTokenCache(shared_redis, secret=CLIENT_SECRET, prefix=prefix, lock_ttl=0.3)
    stall = asyncio.Event()
    soon = time.time() + 3600

    async def stale() -> CachedToken:
        await stall.wait()
        return CachedToken("stale-token", 3600, soon)

    async def fresh() -> CachedToken:
        return CachedToken("fresh-token", 3600, soon)

    try:
        late = asyncio.create_task(a.renew("k", stale, wanted=lambda _: False))
        await asyncio.sleep(0.1)  # A holds the lock now
        newer = await b.renew("k", fresh, wanted=lambda _: False)
        assert newer.value == "fresh-token"
        stall.set()
        assert (await late).value == "stale-token"  # A still uses what it fetched
        stored = await b.get("k")
        assert stored is not None
        assert stored.value == "fresh-token"
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize("outage", ["stopped", "hung"])
async def test_redis_down_or_hung_falls_back_to_the_process_cache_with_one_warning(
    idp: IdP, private_redis: RedisServer, logs: LogCapture, outage: str
) -> None:
    """Renewals while Redis is stopped (refused) or hung (accepts, never answers: each call
    bounded by the timeout) come from the IdP; no call fails; one warning, one info line."""
    down, up = (
        (private_redis.stop, private_redis.start)
        if outage == "stopped"
        else (private_redis.pause, private_redis.resume)
    )
    cache = RedisTokenCache(
        private_redis.url, secret=CLIENT_SECRET, prefix="fleet:", probe_interval=0.2
    )
    await cache.start()
    try:
        async with _manager(idp, cache) as manager:
            first = await manager.get_token()
            down()
            for _ in range(3):  # renewals while Redis is down: each from the IdP, no error
                assert manager.invalidate(await manager.get_token())
                assert await manager.get_token() != first
                await asyncio.sleep(0.3)
            assert not cache.state.shared
            up()
            await _until(lambda: cache.state.shared)
    finally:
        await cache.aclose()
    warnings = [m for m in logs.messages("WARNING") if "Token cache: Redis at" in m]
    assert len(warnings) == 1
    assert len([m for m in logs.messages("INFO") if "answers again" in m]) == 1
    assert "fleet-redis-pass" not in logs.text()
    assert "redis://:***@127.0.0.1" in warnings[0]


async def _until(condition: Any) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - the cache's probe changes it
            await asyncio.sleep(0.05)


async def _health(base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base_url}/healthz")
        return dict(response.json())


async def _shared_gauge(base_url: str) -> str:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{base_url}/metrics")).text
    (line,) = [x for x in text.splitlines() if x.startswith("toolbridge_mcp_token_cache_shared")]
    return line


async def test_the_mcp_server_serves_through_a_redis_outage_and_returns_to_it(
    start_mcp: ServerFactory, idp: IdP, private_redis: RedisServer, logs: LogCapture
) -> None:
    server = start_mcp(redis_url=private_redis.url)
    failures = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal failures
        async with Client(server.url) as client:
            while not stop.is_set():
                result = await client.call_tool("list_notes", {}, raise_on_error=False)
                failures += result.is_error

    loaders = [asyncio.create_task(load()) for _ in range(3)]
    try:
        assert (await _health(server.base_url))["token_cache"]["shared"] is True
        private_redis.stop()
        await _until_health(server.base_url, shared=False)
        assert await _shared_gauge(server.base_url) == (
            'toolbridge_mcp_token_cache_shared{backend="redis"} 0.0'
        )
        private_redis.start()
        await _until_health(server.base_url, shared=True)
        assert await _shared_gauge(server.base_url) == (
            'toolbridge_mcp_token_cache_shared{backend="redis"} 1.0'
        )
    finally:
        stop.set()
        await asyncio.gather(*loaders)
    assert failures == 0
    assert len(idp.requests) == 1
    warnings = [m for m in logs.messages("WARNING") if "Token cache: Redis at" in m]
    assert len(warnings) == 1
    assert "fleet-redis-pass" not in logs.text()


async def _until_health(base_url: str, *, shared: bool) -> None:
    async with asyncio.timeout(10):
        while (await _health(base_url))["token_cache"]["shared"] is not shared:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def test_an_mcp_server_with_redis_serves_tools_and_reports_the_shared_cache(
    start_mcp: ServerFactory, idp: IdP, shared_redis: str, prefix: str
) -> None:
    first = start_mcp(redis_url=shared_redis, redis_key_prefix=prefix)
    second = start_mcp(redis_url=shared_redis, redis_key_prefix=prefix)
    for server in (first, second):
        async with Client(server.url) as client:
            await call(client, idp, "list_notes")
            health = await call(client, idp, "health_check")
        assert health["token_cache"]["backend"] == "redis"
        assert health["token_cache"]["shared"] is True
    assert len(idp.requests) == 1  # the second server took the first one's token
    assert len(await _stored(shared_redis, prefix)) == 1


def test_fleet_settings_are_checked_by_variable(clean_settings_env: None) -> None:
    with pytest.raises(ConfigError) as bad_url:
        load_settings(redis_url="http://user:hunter22@127.0.0.1:6379")
    assert "TOOLBRIDGE_REDIS_URL" in str(bad_url.value)
    assert "hunter22" not in str(bad_url.value)
    with pytest.raises(ConfigError, match="TOOLBRIDGE_TOKEN_CACHE_KEY"):
        load_settings(redis_url="redis://127.0.0.1:6379", token_cache_key="short")
    per_user = {
        "oauth_issuer": "http://127.0.0.1:9/",
        "oauth_exchange_audience": "https://api.toolbridge.test",
        "redis_url": "rediss://127.0.0.1:6379/0",
    }
    with pytest.raises(ConfigError, match="TOOLBRIDGE_TOKEN_CACHE_KEY not set"):
        load_settings(**per_user)
    assert load_settings(**per_user, token_cache_key="k" * 32).redis_url is not None
