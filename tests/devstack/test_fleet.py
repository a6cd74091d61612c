"""``toolbridge-mcp dev --replicas N`` as a developer runs it: a real HAProxy round-robin in
front of N MCP servers in stateless HTTP mode and M API processes, sharing the machine's Redis
(a database number of this test's own) and one database.

A real MCP client keeps calling tools through the balancer while the tokens expire several
times; every one of its HTTP requests goes to another replica (the balancer names the one that
answered in a response header), and nothing fails. Each replica holds its own sync session
with the API for the same principal, and any API process accepts any of them.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import redis
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from tests.api.conftest import services_required
from tests.devstack.test_dev_command import (
    JWT,
    DevCommand,
    _alive,
    _free_ports,
    _port_is_free,
    dev_command,
)
from tests.support.mcp_calls import result_text
from tests.support.redis_server import redis_problem
from toolbridge_dev.stack import NO_HAPROXY, REPLICA_HEADER

__all__ = ["dev_command"]  # the fixture, shared with the stack's other tests

REPLICAS = 3
TOKEN_LIFETIME = 3
CALL_INTERVAL = 0.1
"""About 8 tool calls a second: under the API's per-user rate limit (burst 120), which is
shared by the fleet through Redis."""


@pytest.fixture
def fleet_redis() -> Iterator[str]:
    """The machine's Redis, in a database number other tests do not use (this test's keys
    are removed afterwards); skips, or in CI fails, without Redis or HAProxy."""
    problem = redis_problem()
    if shutil.which("haproxy") is None:
        problem = "haproxy is not installed (apt-get install haproxy; .ci/run does)"
    if problem is not None:
        if services_required():
            pytest.fail(f"{problem} (TOOLBRIDGE_TEST_REQUIRE_SERVICES=1)")
        pytest.skip(problem)
    url = f"redis://127.0.0.1:6379/{random.randrange(8, 16)}"
    yield url
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        keys = list(client.scan_iter(match="toolbridge*", count=1000))
        if keys:
            client.delete(*keys)


def _replica_recorder(served_by: list[str]) -> Any:
    """An httpx client factory for fastmcp that notes which replica answered each request."""

    async def note(response: httpx2.Response) -> None:
        served_by.append(response.headers.get(REPLICA_HEADER, "-"))

    def factory(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
        **kwargs: Any,
    ) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            headers=headers,
            timeout=timeout or httpx2.Timeout(30.0, read=300.0),
            auth=auth,
            event_hooks={"response": [note]},
            **kwargs,
        )

    return factory


def _stats(text: str) -> dict[str, int]:
    """Requests each server behind the balancer took (``stot``), from its stats CSV."""
    rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
    return {
        row["svname"]: int(row["stot"])
        for row in rows
        if row["svname"] not in {"FRONTEND", "BACKEND"}
    }


async def test_a_client_is_served_by_every_replica_across_token_refreshes(
    tmp_path: Path, dev_command: list[DevCommand], fleet_redis: str
) -> None:
    dev = DevCommand(
        tmp_path,
        "--replicas",
        str(REPLICAS),
        "--api-processes",
        "2",
        "--token-lifetime",
        str(TOKEN_LIFETIME),
        "--redis-url",
        fleet_redis,
    ).start()
    dev_command.append(dev)
    dev.wait_up()
    pids = [int(m.group(1)) for m in re.finditer(r"pid (\d+)", dev.text)]
    assert len(pids) == REPLICAS + 2 + 2  # issuer, 2 API processes, replicas, HAProxy
    stats_url = re.search(r"stats at (http://\S+/stats)", dev.text)
    assert stats_url is not None

    served_by: list[str] = []
    transport = StreamableHttpTransport(
        dev.mcp_url, httpx_client_factory=_replica_recorder(served_by)
    )
    failures: list[str] = []
    calls = 0
    renewals_before = dev.count("Access token")
    # The handshake era's client (initialize, then a session id): the one stateless mode is for.
    async with Client(transport, mode="legacy") as client:

        async def tool(name: str, **arguments: Any) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            result = await client.call_tool(name, arguments, raise_on_error=False)
            if result.is_error:
                failures.append(f"{name}: {result_text(result)}")
                return {}
            assert isinstance(result.structured_content, dict)
            return result.structured_content

        deadline = time.monotonic() + 3 * TOKEN_LIFETIME + 1
        round_no = 0
        while time.monotonic() < deadline:
            round_no += 1
            # Made on one replica, read back through the next ones.
            note = await tool("create_note", title=f"fleet {round_no}")
            await asyncio.sleep(CALL_INTERVAL)
            listed = await tool("list_notes", limit=1000)
            assert note.get("uid") in {item["uid"] for item in listed.get("items", [])}
            await asyncio.sleep(CALL_INTERVAL)
            got = await tool("get_note", uid=note.get("uid", "-"))
            assert got.get("version") == note.get("version")
            await asyncio.sleep(CALL_INTERVAL)
        health = await tool("health_check")

    assert failures == []
    assert calls > 30
    assert health["status"] == "ok"
    # Each replica renewed (or took from the shared cache) tokens that lasted 3 s.
    assert dev.count("Access token") - renewals_before >= 3
    # Consecutive requests of one client landed on different replicas, every one of them.
    assert set(served_by) == {f"mcp-{n}" for n in range(1, REPLICAS + 1)}
    same = [i for i in range(1, len(served_by)) if served_by[i] == served_by[i - 1]]
    assert same == [], f"requests {same} went to the replica before them: {served_by}"

    # Every replica has its own sync session for the one service principal, and both API
    # processes served requests on sessions they did not necessarily open.
    with sqlite3.connect(tmp_path / ".toolbridge" / "api.db") as db:
        sessions = db.execute("SELECT COUNT(*) FROM sync_sessions WHERE tenant_id = 'dev'")
        assert sessions.fetchone()[0] == REPLICAS
    async with httpx.AsyncClient() as http:
        stats = _stats((await http.get(f"{stats_url.group(1)};csv")).text)
    assert all(stats[f"api-{n}"] > calls // 4 for n in (1, 2)), stats
    assert all(stats[f"mcp-{n}"] >= calls // REPLICAS for n in range(1, REPLICAS + 1)), stats

    assert dev.stop(signal.SIGINT) == 0
    assert "Stopped: load balancer, MCP server 3, MCP server 2, MCP server 1, API 2, API 1, " in (
        dev.text
    )
    assert [pid for pid in pids if _alive(pid)] == []
    assert all(_port_is_free(port) for port in dev.ports)
    assert not JWT.search(dev.text), "an access token reached the output"


def test_replicas_without_haproxy_is_a_clear_error(
    tmp_path: Path, dev_command: list[DevCommand]
) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    dev = DevCommand(tmp_path, "--replicas", "2", env={"PATH": str(bare)}).start()
    dev_command.append(dev)
    assert dev.wait() == 2
    assert NO_HAPROXY in dev.text
    assert "pid " not in dev.text  # nothing was started


def test_an_unreachable_redis_is_a_clear_error(
    tmp_path: Path, dev_command: list[DevCommand]
) -> None:
    (port,) = _free_ports(1)
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    fake = tmp_path / "bin"  # an haproxy on PATH, so the Redis check is what stops the start
    fake.mkdir()
    (fake / "haproxy").write_text("#!/bin/sh\nexit 1\n")
    (fake / "haproxy").chmod(0o755)
    path = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    dev = DevCommand(tmp_path, "--replicas", "2", "--redis-url", url, env=path).start()
    dev_command.append(dev)
    assert dev.wait() == 2
    assert f"Redis is not reachable at redis://:***@127.0.0.1:{port}/0" in dev.text
    assert "Start it (redis-server) or pass --redis-url" in dev.text
    assert "hunter2" not in dev.text
    assert "pid " not in dev.text


def test_redis_without_a_fleet_is_refused(tmp_path: Path) -> None:
    dev = DevCommand(tmp_path, "--redis-url", "redis://127.0.0.1:6379/0")
    done = subprocess.run(  # noqa: S603 - our own console script
        dev.args, cwd=tmp_path, env=dev.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "--redis-url is for a fleet: add --replicas N" in done.stderr
