"""Request limits the app enforces under any server (header count and size, body size and
time), the access log that never shows a query string, and the payload depth measured as
stored. The limits of ``toolbridge-api serve`` itself (a 64 MB header, a slow header) are in
``test_faults.py``, over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api.conftest import SQLITE_ONLY, Api, User
from tests.api.items import pull, push
from tests.conftest import LogCapture
from toolbridge_api.config import ApiSettings
from toolbridge_api.entities import MAX_PAYLOAD_DEPTH


def nested(levels: int) -> Any:
    """``levels`` objects inside each other (1: ``{"k": "leaf"}``)."""
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


@SQLITE_ONLY
async def test_too_many_headers_is_a_431(make_api: Any) -> None:
    api: Api = await make_api(max_header_count=20)
    headers = {f"X-Filler-{n}": "x" for n in range(25)}
    response = await api.http.get("/healthz", headers=headers)
    assert response.status_code == 431
    assert response.json()["error"].startswith("too many request headers: ")
    assert response.json()["error"].endswith("the limit is 20")
    assert response.headers["X-Correlation-ID"] == response.json()["correlation_id"]
    assert (await api.http.get("/healthz")).status_code == 200


@SQLITE_ONLY
async def test_headers_larger_than_the_limit_are_a_431(make_api: Any) -> None:
    """Under ``serve`` the parser refuses them first; under any other server, the app."""
    api: Api = await make_api(max_header_bytes=8 * 1024)
    response = await api.http.get("/healthz", headers={"X-Big": "x" * 9 * 1024})
    assert response.status_code == 431
    assert response.json()["error"] == (
        "request headers too large: the request line and headers may have at most 8192 bytes"
    )
    assert (await api.http.get("/healthz", headers={"X-Ok": "x" * 4096})).status_code == 200


@SQLITE_ONLY
async def test_a_body_that_does_not_arrive_in_time_is_a_408_and_nothing_is_written(
    make_api: Any,
) -> None:
    api: Api = await make_api(body_timeout_seconds=0.3)
    alice = await api.user()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"title": '
        await asyncio.sleep(1.0)
        yield b'"late"}'

    started = asyncio.get_running_loop().time()
    response = await alice.request(
        "POST", "/v1/notes", content=slow_body(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 408
    assert response.json()["error"] == "request body not received within 0.3 s"
    assert asyncio.get_running_loop().time() - started < 1.5
    assert (await alice.request("GET", "/v1/notes")).json()["items"] == []


@SQLITE_ONLY
async def test_the_access_log_never_shows_a_query_string(
    api: Api, logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token in the query string (some clients send ``?access_token=``) stays out of the
    logs: the line keeps method, path, status and correlation id only."""
    # The test's own HTTP client logs each URL it calls; only the API's lines are judged.
    monkeypatch.setattr(logging.getLogger("httpx"), "level", logging.WARNING)
    token = api.jwks.mint(sub="auth0|query")
    response = await api.http.get(
        f"/v1/notes?access_token={token}&limit=5", headers={"X-Correlation-ID": "cid-q"}
    )
    assert response.status_code == 401
    lines = [line for line in logs.messages("INFO") if '"GET /v1/notes' in line]
    assert len(lines) == 1, logs.text()
    assert lines[0].startswith('127.0.0.1:123 - "GET /v1/notes?… HTTP/1.1" 401 ')
    assert lines[0].endswith(" ms (correlation id cid-q)")
    assert "access_token" not in logs.text()
    assert token not in logs.text()


@SQLITE_ONLY
async def test_the_access_log_escapes_control_characters_in_the_path(
    api: Api, logs: LogCapture
) -> None:
    await api.http.get("/no%0Asuch%1Broute")
    (line,) = [line for line in logs.messages("INFO") if '"GET /no' in line]
    assert '"GET /no\\nsuch\\x1broute HTTP/1.1" 404' in line


def test_the_header_limits_have_room_for_the_largest_token() -> None:
    """Access tokens may be 16 KiB (the verifier's own limit): the defaults fit them."""
    settings = ApiSettings(_env_file=None, debug_sub_enabled=True)  # type: ignore[call-arg]
    assert settings.max_header_bytes >= 16 * 1024 + 4096
    assert settings.database_timeout_seconds < 15, "below the MCP server's request timeout"


@pytest.fixture
async def alice(api: Api) -> User:
    return await api.user()


async def test_the_deepest_process_metadata_can_be_written_back_as_read(alice: User) -> None:
    """``metadata`` is stored one level down (``lastActionMetadata``): the limit counts it
    there, so the item as read back can always be written back, by PUT and by push."""
    note = await alice.create("notes", {"title": "deep"})
    uid = note["uid"]
    deepest = nested(MAX_PAYLOAD_DEPTH - 1)
    processed = await alice.request(
        "POST", f"/v1/notes/{uid}/process", json={"action": "pin", "metadata": deepest}
    )
    assert processed.status_code == 200, processed.text
    too_deep = await alice.request(
        "POST", f"/v1/notes/{uid}/process", json={"action": "pin", "metadata": nested(64)}
    )
    assert too_deep.status_code == 400
    assert "nested more than 64 levels deep" in too_deep.json()["error"]

    read = (await alice.request("GET", f"/v1/notes/{uid}")).json()
    put = await alice.request("PUT", f"/v1/notes/{uid}", json=read["payload"])
    assert put.status_code == 200, put.text
    (pulled,) = (await pull(alice, "notes"))["upserts"]
    pulled["updatedTs"] = "2100-01-01T00:00:00Z"
    (ack,) = await push(alice, "notes", pulled)
    assert "error" not in ack, ack


async def test_push_measures_each_item_as_stored(alice: User) -> None:
    """A pushed item may be as deep as a REST payload (64 levels): before, the ``items``
    array counted as a level, so an item pulled from the server could not be pushed back."""
    uid = str(uuid.uuid4())
    item = {"uid": uid, "updatedTs": "2026-01-01T00:00:00Z", "deep": nested(MAX_PAYLOAD_DEPTH - 1)}
    (ack,) = await push(alice, "notes", item)
    assert ack.get("error") is None
    assert ack["uid"] == uid
    response = await alice.request(
        "POST",
        "/v1/sync/notes/push",
        json={"items": [{**item, "deep": nested(MAX_PAYLOAD_DEPTH)}]},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "body.items[0] is nested more than 64 levels deep"


async def test_a_version_conflict_is_no_warning_or_error(alice: User, logs: LogCapture) -> None:
    """An ordinary 412 is the client's business: the access line (INFO) is all it logs."""
    note = await alice.create("notes", {})
    conflict = await alice.request(
        "PUT", f"/v1/notes/{note['uid']}", json={}, headers={"If-Match": "7"}
    )
    assert conflict.status_code == 412
    assert logs.messages("WARNING") == []
    assert logs.messages("ERROR") == []
    assert any('" 412 ' in line for line in logs.messages("INFO"))
