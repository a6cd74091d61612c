"""Fault suite of issue 12 for the MCP server, through the real path: ``toolbridge-api serve``
as a child process (SQLite in ``tmp_path``), the fake IdP, the MCP server over streamable HTTP
and a real ``fastmcp.Client``.

- ``kill -9`` of the API while creates are in flight, then a restart on the same port and
  database: calls during the outage fail with a clear tool error, calls after the restart
  succeed, creates reported as "may have been applied" are checked with the uid the message
  names, and nothing is duplicated or lost.
- The IdP failing past the token lifetime (2 s tokens): ``health_check`` says degraded with the
  expiry, tool calls name the identity provider, and the server recovers by itself.
- DNS-rebinding headers against ``/mcp`` are refused and create nothing (counted at the API).

Behaviour is asserted, never speed; the figures are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastmcp import Client

from tests.conftest import AUDIENCE
from tests.support.api import ApiProcess
from tests.support.idp import IdP, Reply
from tests.support.mcp_calls import assert_no_secrets, call, call_error, result_text
from tests.support.mcp_server import TENANT_SECRET, McpHttpServer, mcp_settings
from toolbridge_mcp.server import create_server

DEADLINE = 60.0
"""Functional deadline for anything polled (readiness, recovery): generous, never a speed bound."""

_UID_IN_MESSAGE = re.compile(r"uid='([0-9a-f-]{36})'")
_MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


class KillableApi(ApiProcess):
    """``toolbridge-api serve`` that can be killed with SIGKILL and started again on the same
    port and database."""

    def kill9(self) -> None:
        process, self._process = self._process, None
        assert process is not None
        process.kill()
        process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)


def _api(idp: IdP, database: Path) -> KillableApi:
    return KillableApi(
        {
            "TOOLBRIDGE_API_JWKS_URL": f"{idp.base_url}/.well-known/jwks.json",
            "TOOLBRIDGE_API_ISSUER": idp.issuer,
            "TOOLBRIDGE_API_AUDIENCE": AUDIENCE,
            "TOOLBRIDGE_API_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "TOOLBRIDGE_API_TENANT_SECRET": TENANT_SECRET,
            "TOOLBRIDGE_API_RATE_LIMIT_REQUESTS": "1000000",
            "TOOLBRIDGE_API_RATE_LIMIT_BURST": "1000000",
            "TOOLBRIDGE_API_AUTH_RATE_LIMIT_REQUESTS": "1000000",
            "TOOLBRIDGE_API_AUTH_RATE_LIMIT_BURST": "1000000",
        },
        cwd=database.parent,
    )


def _mcp(api_url: str, idp: IdP, **overrides: Any) -> McpHttpServer:
    return McpHttpServer(create_server(mcp_settings(api_url, idp, **overrides))).start()


def _rows(database: Path) -> int:
    """Items stored at the API, read from its database file."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        count: int = connection.execute("SELECT count(*) FROM entity_rows").fetchone()[0]
    return count


async def _all_notes(client: Client[Any], idp: IdP) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        arguments: dict[str, Any] = {"limit": 100}
        if cursor:
            arguments["cursor"] = cursor
        page = await call(client, idp, "list_notes", **arguments)
        items += page["items"]
        cursor = page.get("nextCursor")
        if not cursor or not page["items"]:
            return items


def _assert_clear(text: str, idp: IdP) -> None:
    assert_no_secrets(text, idp)
    assert "Traceback" not in text
    assert 'File "' not in text


@dataclass
class Outcome:
    started: float
    ended: float
    title: str
    uid: str | None = None
    error: str | None = None


async def test_kill_9_of_the_api_mid_stream_loses_and_duplicates_nothing(
    idp: IdP, tmp_path: Path
) -> None:
    database = tmp_path / "api.db"
    api = _api(idp, database).start()
    mcp = _mcp(api.url, idp)
    outcomes: list[Outcome] = []
    stop = asyncio.Event()
    try:
        async with Client(mcp.url, timeout=DEADLINE) as client:

            async def worker(w: int) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    title = f"fault-{w}-{n}"
                    started = time.monotonic()
                    result = await client.call_tool(
                        "create_note", {"title": title, "content": "x"}, raise_on_error=False
                    )
                    text = result_text(result)
                    _assert_clear(text, idp)
                    outcome = Outcome(started, time.monotonic(), title)
                    if result.is_error:
                        outcome.error = text
                    else:
                        assert isinstance(result.structured_content, dict)
                        outcome.uid = result.structured_content["uid"]
                    outcomes.append(outcome)
                    if result.is_error:
                        await asyncio.sleep(0.05)  # a client retrying, not a busy loop

            async def until(predicate: Any, what: str) -> None:
                deadline = time.monotonic() + DEADLINE
                while not predicate():
                    assert time.monotonic() < deadline, f"timed out waiting for {what}"
                    await asyncio.sleep(0.02)

            workers = [asyncio.create_task(worker(w)) for w in range(4)]
            try:
                await until(lambda: sum(o.uid is not None for o in outcomes) >= 8, "warm-up")
                killed_at = time.monotonic()
                await asyncio.to_thread(api.kill9)
                await until(
                    lambda: (
                        sum(o.error is not None and o.started > killed_at for o in outcomes) >= 4
                    ),
                    "calls failing during the outage",
                )
                restart_at = time.monotonic()
                await asyncio.to_thread(api.start, DEADLINE)
                ready_at = time.monotonic()
                await until(
                    lambda: sum(o.uid is not None and o.started > ready_at for o in outcomes) >= 8,
                    "calls succeeding after the restart",
                )
            finally:
                stop.set()
                await asyncio.gather(*workers, return_exceptions=True)
            for task in workers:
                task.result()  # a worker's failed assertion fails the test

            during = [o for o in outcomes if o.started > killed_at and o.ended < restart_at]
            after = [o for o in outcomes if o.started > ready_at]
            failures = [o for o in outcomes if o.error is not None]
            assert during, "no call both started and ended during the outage"
            assert all(o.error is not None for o in during), "a call succeeded with the API dead"
            assert all(o.uid is not None for o in after), [o.error for o in after if o.error]
            for o in failures:
                assert o.error is not None
                assert "ToolBridge API" in o.error, o.error
                assert api.url in o.error, o.error

            # Each failure names what happened; a "may have been applied" create names its uid.
            maybe: dict[str, Outcome] = {}
            for o in failures:
                assert o.error is not None
                if "may have been applied" in o.error:
                    found = _UID_IN_MESSAGE.search(o.error)
                    assert found, f"no uid to check with in: {o.error}"
                    maybe[found.group(1)] = o
                else:
                    assert "try again" in o.error, o.error
            applied: set[str] = set()
            for uid, o in maybe.items():
                got = await client.call_tool("get_note", {"uid": uid}, raise_on_error=False)
                text = result_text(got)
                _assert_clear(text, idp)
                if got.is_error:
                    assert "not found" in text, text
                else:
                    assert isinstance(got.structured_content, dict)
                    assert got.structured_content["payload"]["title"] == o.title
                    applied.add(uid)

            succeeded = {o.uid for o in outcomes if o.uid is not None}
            notes = await _all_notes(client, idp)
            uids = [note["uid"] for note in notes]
            titles = [note["payload"]["title"] for note in notes]
            assert len(uids) == len(set(uids)), "an item listed twice"
            assert len(titles) == len(set(titles)), "a create stored twice"
            assert succeeded <= set(uids), "a create reported as done is missing"
            assert set(uids) == succeeded | applied, "an item stored by a create reported failed"
            assert len(uids) == len(succeeded) + len(applied)
            assert _rows(database) == len(uids)
            first_after = min((o.ended for o in after), default=float("nan"))
            print(
                f"\nkill -9: {len(outcomes)} creates, {len(succeeded)} succeeded, "
                f"{len(failures)} failed during the outage ({len(maybe)} 'may have been "
                f"applied', {len(applied)} of them applied), {len(notes)} notes stored; "
                f"outage {restart_at - killed_at:.2f} s, restart {ready_at - restart_at:.2f} s, "
                f"first success {first_after - ready_at:.2f} s after the API was ready"
            )
    finally:
        mcp.stop()
        api.stop()


async def test_idp_down_past_the_token_lifetime_degrades_then_recovers(
    idp: IdP, tmp_path: Path
) -> None:
    lifetime = 2
    idp.set_default(Reply(expires_in=lifetime))
    database = tmp_path / "api.db"
    api = _api(idp, database).start()
    mcp = _mcp(
        api.url,
        idp,
        token_refresh_buffer_seconds=1.0,
        token_request_deadline_seconds=3.0,
        auth0_timeout_seconds=2.0,
    )
    try:
        async with Client(mcp.url, timeout=DEADLINE) as client:
            await call(client, idp, "create_note", title="before the outage")
            assert (await call(client, idp, "health_check"))["status"] == "ok"

            idp.set_default(
                Reply(status=503, error="temporarily_unavailable", error_description="down")
            )
            down_at = time.monotonic()
            health: dict[str, Any] = {}
            deadline = time.monotonic() + DEADLINE
            while True:  # past the lifetime of the last token issued
                health = await call(client, idp, "health_check")
                if health.get("token_expired_seconds_ago"):
                    break
                assert time.monotonic() < deadline, f"never degraded: {health}"
                await asyncio.sleep(0.2)
            assert health["status"] == "degraded", health
            assert health["token_expired_seconds_ago"] > 0
            assert health["token_expires_at"] is not None
            assert "expired" in health["detail"], health

            message = await call_error(client, idp, "list_notes")
            _assert_clear(message, idp)
            assert "identity provider" in message, message
            error = await call_error(client, idp, "create_note", title="during the outage")
            assert "identity provider" in error, error
            outage = time.monotonic() - down_at

            idp.set_default(Reply(expires_in=lifetime))
            back_at = time.monotonic()
            deadline = back_at + DEADLINE
            failures_after = 0
            while True:
                result = await client.call_tool("list_notes", {}, raise_on_error=False)
                _assert_clear(result_text(result), idp)
                if not result.is_error:
                    break
                failures_after += 1
                assert time.monotonic() < deadline, result_text(result)
                await asyncio.sleep(0.2)
            recovery = time.monotonic() - back_at
            await call(client, idp, "create_note", title="after the outage")
            notes = await _all_notes(client, idp)
            assert sorted(n["payload"]["title"] for n in notes) == [
                "after the outage",
                "before the outage",
            ]
            assert (await call(client, idp, "health_check"))["status"] == "ok"
            print(
                f"\nIdP down: degraded after {outage:.2f} s with {lifetime} s tokens, "
                f"expired {health['token_expired_seconds_ago']} s ago; recovered "
                f"{recovery:.2f} s after the IdP returned ({failures_after} calls failed "
                "meanwhile), same MCP server"
            )
    finally:
        mcp.stop()
        api.stop()
        idp.set_default(Reply())


async def test_rebinding_headers_are_refused_and_create_nothing(idp: IdP, tmp_path: Path) -> None:
    database = tmp_path / "api.db"
    api = _api(idp, database).start()
    mcp = _mcp(api.url, idp)
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "page", "version": "1"},
        },
    }
    create = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "create_note", "arguments": {"title": "rebound"}},
    }
    try:
        async with Client(mcp.url, timeout=DEADLINE) as client:
            await call(client, idp, "create_note", title="legitimate")
        before = _rows(database)
        statuses: dict[str, list[int]] = {}
        async with httpx.AsyncClient(timeout=30) as http:
            for headers in (
                {"Host": "evil.example"},
                {"Origin": "http://evil.example"},
                {"Host": "evil.example", "Origin": "http://evil.example"},
            ):
                seen = statuses.setdefault("+".join(sorted(headers)), [])
                for body in (init, create):
                    response = await http.post(
                        mcp.url, json=body, headers={**_MCP_HEADERS, **headers}
                    )
                    seen.append(response.status_code)
                    assert response.status_code in (400, 403, 421), response.text
                    assert "rebound" not in response.text
                    _assert_clear(response.text, idp)
        async with Client(mcp.url, timeout=DEADLINE) as client:
            titles = [n["payload"]["title"] for n in await _all_notes(client, idp)]
        assert titles == ["legitimate"]
        after = _rows(database)
        assert after == before
        print(f"\nrebinding: refused with {statuses}; items at the API {before} -> {after}")
    finally:
        mcp.stop()
        api.stop()
