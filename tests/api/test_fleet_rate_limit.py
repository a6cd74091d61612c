"""The API's rate limit across processes (issue 15, fleet mode): buckets in Redis, one per
user and group, whichever API process a request reaches; the same numbers and headers as one
process; Redis down or slow never fails a request.

Real things only: ``toolbridge-api serve`` child processes on 127.0.0.1, the machine's Redis
(keys under a prefix of each test's own) or a ``redis-server`` of the test's own that it
stops and pauses, PostgreSQL or SQLite files.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.api.conftest import require_postgres, services_required
from tests.conftest import LogCapture
from tests.support.api import ApiProcess, postgres_database_sync, run_api_cli
from tests.support.jwks import AUDIENCE, JWKSServer
from tests.support.redis_server import (
    SHARED_REDIS_URL,
    RedisServer,
    delete_prefixed,
    redis_problem,
    unique_prefix,
)
from toolbridge_api.config import ApiSettings, load_api_settings
from toolbridge_api.security import RateLimiter, RateLimitHealth, RateLimits
from toolbridge_api.security.shared_ratelimit import (
    RedisRateLimits,
    bucket_key,
)
from toolbridge_common.redis_urls import redacted_url, redis_client
from toolbridge_common.settings import ConfigError

REQUESTS, WINDOW, BURST = 1, 600, 6
"""One request per 10 minutes: what refills while a test runs is counted, and is 0 unless
the machine stalls for minutes."""
AUTH_REQUESTS, AUTH_BURST = 1, 4
PROCESSES = 3
STARTUP_SECONDS = 90
REDIS_PASSWORD = "redis-pass-for-fleet-tests"

LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def _require_redis() -> None:
    problem = redis_problem()
    if problem is not None:
        if services_required():
            pytest.fail(f"{problem} (TOOLBRIDGE_TEST_REQUIRE_SERVICES=1)")
        pytest.skip(problem)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own in the shared Redis, emptied afterwards."""
    _require_redis()
    prefix = unique_prefix()
    yield prefix
    delete_prefixed(SHARED_REDIS_URL, prefix)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, with a password (which must never be logged)."""
    if not RedisServer.installed():
        if services_required():
            pytest.fail("redis-server not installed (TOOLBRIDGE_TEST_REQUIRE_SERVICES=1)")
        pytest.skip("redis-server not installed")
    with RedisServer(password=REDIS_PASSWORD) as server:
        yield server


def fleet_env(
    jwks: JWKSServer, database_url: str, redis_url: str | None, prefix: str, **more: str
) -> dict[str, str]:
    env = {
        "TOOLBRIDGE_API_JWKS_URL": jwks.jwks_url,
        "TOOLBRIDGE_API_ISSUER": jwks.issuer,
        "TOOLBRIDGE_API_AUDIENCE": AUDIENCE,
        "TOOLBRIDGE_API_DATABASE_URL": database_url,
        "TOOLBRIDGE_API_RATE_LIMIT_REQUESTS": str(REQUESTS),
        "TOOLBRIDGE_API_RATE_LIMIT_WINDOW_SECONDS": str(WINDOW),
        "TOOLBRIDGE_API_RATE_LIMIT_BURST": str(BURST),
        "TOOLBRIDGE_API_AUTH_RATE_LIMIT_REQUESTS": str(AUTH_REQUESTS),
        "TOOLBRIDGE_API_AUTH_RATE_LIMIT_WINDOW_SECONDS": str(WINDOW),
        "TOOLBRIDGE_API_AUTH_RATE_LIMIT_BURST": str(AUTH_BURST),
        "TOOLBRIDGE_API_REDIS_KEY_PREFIX": prefix,
        **more,
    }
    if redis_url is not None:
        env["TOOLBRIDGE_REDIS_URL"] = redis_url  # the fleet-wide name
    return env


def sqlite_url(folder: Path) -> str:
    return f"sqlite+aiosqlite:///{folder / 'api.db'}"


def refilled(elapsed: float, requests: int = REQUESTS, window: float = WINDOW) -> int:
    """Whole requests a bucket can gain in ``elapsed`` seconds."""
    return math.floor(elapsed * requests / window)


def health(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/healthz", timeout=5).json()
    return body


class Caller:
    """One user sending each request to the next URL in turn, each on a new connection (so
    that workers sharing a socket get them too)."""

    def __init__(self, urls: list[str], jwks: JWKSServer) -> None:
        self.urls = urls
        self.sent = 0
        self.user = f"auth0|fleet-{uuid.uuid4().hex[:10]}"
        self.headers = {"Authorization": f"Bearer {jwks.mint(sub=self.user)}"}

    def send(self, method: str, path: str) -> httpx.Response:
        url = self.urls[self.sent % len(self.urls)]
        self.sent += 1
        return httpx.request(method, f"{url}{path}", headers=self.headers, timeout=10)

    def open_session(self) -> None:
        response = self.send("POST", "/v1/sync/sessions")
        assert response.status_code == 201, response.text
        body = response.json()
        self.headers |= {"X-Sync-Session": body["id"], "X-Sync-Epoch": str(body["epoch"])}


def assert_one_bucket(
    responses: list[httpx.Response], elapsed: float, *, requests: int, burst: int
) -> int:
    """The responses are those of one bucket of ``burst`` (plus what refilled meanwhile):
    allowed first, counting down, then 429s with Retry-After, the same headers throughout.
    Returns how many were allowed."""
    statuses = [r.status_code for r in responses]
    allowed = statuses.count(200) + statuses.count(201)
    assert burst <= allowed <= burst + refilled(elapsed, requests), statuses
    assert statuses[:burst] == [statuses[0]] * burst, statuses
    assert statuses[0] in (200, 201), statuses
    assert 429 in statuses
    for response in responses:
        assert response.headers["X-RateLimit-Limit"] == str(requests)
        assert response.headers["X-RateLimit-Burst"] == str(burst)
    remaining = [int(r.headers["X-RateLimit-Remaining"]) for r in responses[:burst]]
    assert remaining == list(range(burst - 1, -1, -1)), "one countdown across processes"
    for response in responses:
        if response.status_code == 429:
            assert response.headers["X-RateLimit-Remaining"] == "0"
            wait = int(response.headers["Retry-After"])
            assert WINDOW / requests - elapsed - 1 <= wait <= WINDOW / requests
            assert response.json()["error"] == (
                f"rate limit exceeded ({requests} requests per {WINDOW} s, burst {burst}); "
                f"retry after {wait} s"
            )
    return allowed


def assert_resets_within(responses: list[httpx.Response], before: float, after: float) -> None:
    """``X-RateLimit-Reset``: Unix time (rounded up) when the one bucket is full again."""
    for used, response in enumerate(responses[:BURST], start=1):
        reset = int(response.headers["X-RateLimit-Reset"])
        full = used * WINDOW / REQUESTS
        assert math.floor(before + full) - 1 <= reset <= math.ceil(after + full), used


def test_the_limit_holds_across_three_api_processes(api_jwks: JWKSServer, prefix: str) -> None:
    """Three ``toolbridge-api serve`` processes on PostgreSQL and one Redis: a user's requests
    spread round-robin over them get one bucket's burst in all, not three; the headers count
    down across processes as in one; each process answers 429 once it is spent."""
    require_postgres()
    with postgres_database_sync() as database_url:
        env = fleet_env(api_jwks, database_url, SHARED_REDIS_URL, prefix)
        processes = [ApiProcess(env).start(STARTUP_SECONDS) for _ in range(PROCESSES)]
        try:
            urls = [process.url for process in processes]
            caller = Caller(urls, api_jwks)

            before = time.time()
            sessions = [caller.send("POST", "/v1/sync/sessions") for _ in range(AUTH_BURST + 2)]
            session = sessions[0].json()
            caller.headers |= {
                "X-Sync-Session": session["id"],
                "X-Sync-Epoch": str(session["epoch"]),
            }
            notes = [caller.send("GET", "/v1/notes") for _ in range(PROCESSES * BURST + PROCESSES)]
            elapsed = time.time() - before

            assert_one_bucket(sessions, elapsed, requests=AUTH_REQUESTS, burst=AUTH_BURST)
            allowed = assert_one_bucket(notes, elapsed, requests=REQUESTS, burst=BURST)
            assert allowed < PROCESSES * BURST
            assert_resets_within(notes, before, before + elapsed)
            by_process = [notes[n :: len(urls)] for n in range(len(urls))]
            assert all(any(r.status_code == 429 for r in served) for served in by_process)
            for url in urls:
                assert health(url)["rate_limit"] == {"backend": "redis", "shared": True}
        finally:
            for process in processes:
                process.stop()
    with redis.Redis.from_url(SHARED_REDIS_URL) as client:
        keys = sorted(key.decode() for key in client.scan_iter(match=f"{prefix}*"))
        digest = hashlib.sha256(caller.user.encode()).hexdigest()[:32]
        assert keys == [f"{prefix}ratelimit:auth:{digest}", f"{prefix}ratelimit:rest:{digest}"]
        ttl = client.pttl(f"{prefix}ratelimit:rest:{digest}")
        assert 0 < ttl <= BURST * WINDOW / REQUESTS * 1000, "gone once it would be full again"


def test_workers_of_one_serve_command_share_the_limit(
    api_jwks: JWKSServer, own_redis: RedisServer, tmp_path: Path
) -> None:
    """``toolbridge-api serve --workers 3`` on a SQLite file: the schema is migrated once,
    before the workers start; three workers serve the port; requests on new connections,
    served by more than one worker, get one bucket's burst between them. (A Redis of the
    test's own: its client list tells which workers ran the limiter's script.)"""
    env = fleet_env(api_jwks, sqlite_url(tmp_path), own_redis.url, "t:")
    api = ApiProcess(env, cwd=tmp_path, args=("--workers", str(PROCESSES)))
    # Each worker imports the whole app after it is spawned: seconds each on a busy machine.
    with api.start(timeout=STARTUP_SECONDS):
        deadline = time.monotonic() + STARTUP_SECONDS
        while sum("toolbridge-api ready" in line for line in api.output) < PROCESSES:
            assert time.monotonic() < deadline, "\n".join(api.output[-20:])
            time.sleep(0.1)
        caller = Caller([api.url], api_jwks)
        before = time.time()
        caller.open_session()
        notes = [caller.send("GET", "/v1/notes") for _ in range(PROCESSES * BURST + PROCESSES)]
        elapsed = time.time() - before
        assert_one_bucket(notes, elapsed, requests=REQUESTS, burst=BURST)
        assert health(api.url)["rate_limit"] == {"backend": "redis", "shared": True}
        with redis.Redis.from_url(own_redis.url, decode_responses=True) as client:
            clients = client.client_list()
        output = list(api.output)
    deciding = [c for c in clients if c["cmd"] in ("evalsha", "eval")]
    assert len(deciding) >= 2, f"one worker served every request: {clients}"
    workers = {m.group(1) for line in output if (m := re.search(r"server process \[(\d+)]", line))}
    assert len(workers) == PROCESSES, output
    upgrades = [line.split(" | ")[-1] for line in output if "Running upgrade" in line]
    assert upgrades, "the parent migrated the new file"
    assert len(upgrades) == len(set(upgrades)), "each revision applied once, by the parent"


@pytest.mark.usefixtures("clean_settings_env")
def test_the_api_variable_wins_over_the_fleet_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLBRIDGE_REDIS_URL", "redis://fleet.internal:6379/0")
    settings = load_api_settings(ApiSettings, debug_sub_enabled=True, _env_file=None)
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://fleet.internal:6379/0"
    monkeypatch.setenv("TOOLBRIDGE_API_REDIS_URL", "redis://api.internal:6380/1")
    settings = load_api_settings(ApiSettings, debug_sub_enabled=True, _env_file=None)
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://api.internal:6380/1"
    assert "api.internal" not in repr(settings)


@pytest.mark.parametrize(
    "url",
    [
        "http://:secret-pw@cache:6379/0",
        "redis://:secret-pw@:6379/0",
        "redis://:secret-pw@cache:99999/0",
        "redis://:secret-pw@cache:6379/zero",
        "unix://",
    ],
)
@pytest.mark.usefixtures("clean_settings_env")
def test_a_bad_redis_url_names_the_variable_never_the_value(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("TOOLBRIDGE_REDIS_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_api_settings(ApiSettings, debug_sub_enabled=True, _env_file=None)
    message = str(caught.value)
    assert "TOOLBRIDGE_API_REDIS_URL (or TOOLBRIDGE_REDIS_URL)" in message
    assert "secret-pw" not in message
    assert "cache" not in message


@pytest.mark.parametrize(
    "database_url",
    [
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite:///file:shared?mode=memory&cache=shared&uri=true",
    ],
)
def test_workers_refuse_an_in_memory_database(tmp_path: Path, database_url: str) -> None:
    result = run_api_cli(
        tmp_path,
        "serve",
        "--workers",
        "2",
        TOOLBRIDGE_API_DEBUG_SUB_ENABLED="true",
        TOOLBRIDGE_API_DATABASE_URL=database_url,
    )
    assert result.returncode == 2
    assert "TOOLBRIDGE_API_WORKERS (--workers) above 1 needs a database" in result.stderr
    assert "TOOLBRIDGE_API_DATABASE_URL is an in-memory SQLite database" in result.stderr


# The limiter itself against a real Redis.


def local_limits(requests: int, window: float, burst: int) -> RateLimits:
    def limiter() -> RateLimiter:
        return RateLimiter(requests=requests, window_seconds=window, burst=burst)

    return RateLimits({"rest": limiter(), "sync": limiter(), "auth": limiter()})


def shared_limits(
    url: str, prefix: str, *, requests: int, window: float, burst: int, probe: float = 5.0
) -> RedisRateLimits:
    return RedisRateLimits(
        local_limits(requests, window, burst),
        redis_client(url, timeout=0.25, decode_responses=True),
        key_prefix=prefix,
        where=redacted_url(url),
        probe_interval=probe,
    )


async def test_the_script_counts_down_and_refuses_like_the_in_process_bucket(prefix: str) -> None:
    limits = shared_limits(SHARED_REDIS_URL, prefix, requests=600, window=60, burst=3)
    memory = local_limits(600, 60, 3)
    try:
        shared = [await limits.take("rest", "acme\x00alice") for _ in range(4)]
        local = [await memory.take("rest", "acme\x00alice") for _ in range(4)]
        assert [d.allowed for d in shared] == [True, True, True, False]
        assert [d.remaining for d in shared] == [d.remaining for d in local] == [2, 1, 0, 0]
        assert {(d.limit, d.burst) for d in shared} == {(600, 3)}
        assert 0 < (shared[-1].retry_after or 0) <= 0.1
        assert (await limits.take("sync", "acme\x00alice")).allowed, "groups are separate"
        assert (await limits.take("rest", "acme\x00bob")).allowed, "callers are separate"
        assert await limits.health() == RateLimitHealth(backend="redis", shared=True)
    finally:
        await limits.aclose()


async def test_refill_retry_after_and_reset_follow_redis_time(prefix: str) -> None:
    """One request a second, burst 2: the third request at once is refused and told to wait
    exactly what the stored bucket lacks; waiting that long is enough; X-RateLimit-Reset is
    Redis's time plus the time to refill, rounded up; the key expires when full again."""
    limits = shared_limits(SHARED_REDIS_URL, prefix, requests=1, window=1, burst=2)
    key = bucket_key(prefix, "rest", "alice")
    assert "alice" not in key
    with redis.Redis.from_url(SHARED_REDIS_URL, decode_responses=True) as client:
        try:
            start_s, start_us = client.time()
            first, second = await limits.take("rest", "alice"), await limits.take("rest", "alice")
            refused = await limits.take("rest", "alice")
            end_s, end_us = client.time()
            stored = client.hgetall(key)
            ttl = client.pttl(key)
        finally:
            await limits.aclose()
    assert (first.allowed, second.allowed, refused.allowed) == (True, True, False)
    tokens = float(stored["tokens"])
    assert 0 <= tokens <= (end_s - start_s) + (end_us - start_us) / 1e6, "refilled meanwhile"
    assert refused.retry_after is not None
    assert refused.retry_after == pytest.approx(1 - tokens, abs=1e-12)
    now = int(stored["sec"]) + int(stored["usec"]) / 1e6
    assert refused.reset == math.ceil(now + (2 - tokens) - 1e-9)
    assert (refused.remaining, second.remaining, first.remaining) == (0, 0, 1)
    assert 0 < ttl <= math.ceil((2 - tokens) * 1000)

    limits = shared_limits(SHARED_REDIS_URL, prefix, requests=1, window=1, burst=2)
    try:
        await asyncio.sleep(refused.retry_after + 0.01)
        later = await limits.take("rest", "alice")
        assert later.allowed, "the advertised wait refilled one request"
        assert not (await limits.take("rest", "alice")).allowed
    finally:
        await limits.aclose()


async def test_redis_stopped_then_back_fails_no_request(
    own_redis: RedisServer, logs: LogCapture
) -> None:
    """Redis gone: decisions come from this process's buckets, one warning; health says the
    buckets are not shared; Redis back: one info line, shared again. The password never
    appears."""
    limits = shared_limits(own_redis.url, "t:", requests=60, window=60, burst=3, probe=0.2)
    try:
        await limits.start()
        assert (await limits.take("rest", "alice")).remaining == 2
        own_redis.stop()
        during = [await limits.take("rest", "alice") for _ in range(5)]
        assert [d.allowed for d in during] == [True, True, True, False, False]
        assert [d.remaining for d in during][:3] == [2, 1, 0], "this process's own bucket"
        assert await limits.health() == RateLimitHealth(backend="redis", shared=False)
        own_redis.start()
        deadline = time.monotonic() + 10
        while not (await limits.health()).shared:
            assert time.monotonic() < deadline, "Redis back, never noticed"
            await asyncio.sleep(0.1)
        after = await limits.take("rest", "alice")
        assert (after.allowed, after.remaining) == (True, 2), "the new Redis's fresh bucket"
    finally:
        await limits.aclose()
    warnings = [m for m in logs.messages("WARNING") if "did not answer" in m]
    assert len(warnings) == 1, logs.text()
    assert f"127.0.0.1:{own_redis.port}/0" in warnings[0]
    assert len([m for m in logs.messages("INFO") if "answers again" in m]) == 1
    assert REDIS_PASSWORD not in logs.text()


async def test_a_hung_redis_is_waited_for_at_most_the_timeout(
    own_redis: RedisServer, logs: LogCapture
) -> None:
    """A Redis that accepts connections and never answers (paused): the decision falls back
    after the client's timeout and later ones do not wait for it until the next try."""
    limits = shared_limits(own_redis.url, "t:", requests=60, window=60, burst=3)
    try:
        assert (await limits.take("auth", "alice")).allowed
        own_redis.pause()
        try:
            decisions = await asyncio.wait_for(
                asyncio.gather(*(limits.take("auth", "alice") for _ in range(4))), timeout=10
            )
            assert sorted(d.allowed for d in decisions) == [False, True, True, True]
            assert not (await limits.health()).shared
        finally:
            own_redis.resume()
    finally:
        await limits.aclose()
    assert len([m for m in logs.messages("WARNING") if "did not answer (TimeoutError)" in m]) == 1


def test_an_api_process_serves_while_its_redis_is_down(
    api_jwks: JWKSServer, own_redis: RedisServer, tmp_path: Path
) -> None:
    """``toolbridge-api serve`` with Redis: every request is answered while Redis is down
    (its own buckets meanwhile), with one warning; health shows it; Redis back, the process
    finds it again by itself (a health check tries it) and says so once."""
    env = fleet_env(api_jwks, sqlite_url(tmp_path), own_redis.url, "t:")
    env["TOOLBRIDGE_API_RATE_LIMIT_REQUESTS"] = "1000"
    env["TOOLBRIDGE_API_RATE_LIMIT_BURST"] = "1000"
    with ApiProcess(env, cwd=tmp_path) as api:
        caller = Caller([api.url], api_jwks)
        caller.open_session()
        assert caller.send("GET", "/v1/notes").status_code == 200
        assert health(api.url)["rate_limit"] == {"backend": "redis", "shared": True}
        own_redis.stop()
        down = [caller.send("GET", "/v1/notes") for _ in range(5)]
        assert [r.status_code for r in down] == [200] * 5
        assert [r.headers["X-RateLimit-Limit"] for r in down] == ["1000"] * 5
        assert health(api.url) == {
            "status": "ok",
            "database": "ok",
            "rate_limit": {"backend": "redis", "shared": False},
        }
        own_redis.start()
        deadline = time.monotonic() + 15
        while not health(api.url)["rate_limit"]["shared"]:
            assert time.monotonic() < deadline, "\n".join(api.output[-20:])
            time.sleep(0.2)
        assert caller.send("GET", "/v1/notes").status_code == 200
        output = "\n".join(api.output)
    assert output.count("did not answer") == 1, output
    assert output.count("answers again") == 1, output
    assert f"Redis at redis://:***@127.0.0.1:{own_redis.port}/0" in output
    assert REDIS_PASSWORD not in output
