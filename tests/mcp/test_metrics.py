"""``GET /metrics`` over real HTTP: tool calls by tool and outcome, and the token's state as
the token manager sees it, per server and without a secret."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError, ValidationError
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import ApiServer
from tests.support.idp import IdP, Reply
from tests.support.mcp_calls import assert_no_secrets, call, call_error, mint_token
from tests.support.mcp_server import McpHttpServer, ServerFactory, mcp_settings
from toolbridge_mcp.metrics import ServerMetrics, outcome_of
from toolbridge_mcp.server import create_server

CALLS = "toolbridge_mcp_tool_calls_total"
LATENCY_COUNT = "toolbridge_mcp_tool_call_duration_seconds_count"
REFRESHES = "toolbridge_mcp_token_refreshes_total"
FAILURES = "toolbridge_mcp_token_refresh_consecutive_failures"
FAILURES_TOTAL = "toolbridge_mcp_token_refresh_failures_total"
LAST_SUCCESS = "toolbridge_mcp_token_last_refresh_success"
EXPIRES_IN = "toolbridge_mcp_token_expires_in_seconds"
API_REQUESTS = "toolbridge_mcp_api_requests_total"


class Scrape:
    """One scrape of ``/metrics``, parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The sample's value, or ``None`` if the scrape does not have it."""
        for sample in self.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
        return None

    def names(self) -> set[str]:
        return {sample.name for sample in self.samples}


async def scrape(server: McpHttpServer) -> Scrape:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


async def test_tool_calls_are_counted_by_tool_and_outcome(
    start_mcp: ServerFactory, idp: IdP
) -> None:
    server = start_mcp()
    async with Client(server.url) as client:
        note = await call(client, idp, "create_note", title="counted")
        await call(client, idp, "get_note", uid=note["uid"])
        await call(client, idp, "get_note", uid=note["uid"])
        await call_error(client, idp, "get_note", uid=str(uuid.uuid4()))
        await call_error(client, idp, "list_notes", limit=0)  # invalid argument
        await call_error(client, idp, "no_such_tool")
    metrics = await scrape(server)
    assert metrics.value(CALLS, tool="create_note", outcome="ok") == 1
    assert metrics.value(CALLS, tool="get_note", outcome="ok") == 2
    assert metrics.value(CALLS, tool="get_note", outcome="tool_error") == 1
    assert metrics.value(CALLS, tool="list_notes", outcome="tool_error") == 1
    assert metrics.value(CALLS, tool="unknown", outcome="error") == 1
    assert metrics.value(CALLS, tool="no_such_tool", outcome="error") is None
    assert metrics.value(LATENCY_COUNT, tool="get_note", outcome="ok") == 2
    assert metrics.value(LATENCY_COUNT, tool="get_note", outcome="tool_error") == 1
    assert_no_secrets(metrics.text, idp)


async def test_an_unexpected_exception_counts_as_error(api: ApiServer, idp: IdP) -> None:
    mcp = create_server(mcp_settings(api.url, idp))

    @mcp.tool
    async def explode() -> str:
        """Fails the way a bug would."""
        raise RuntimeError("a bug")

    server = McpHttpServer(mcp).start()
    try:
        async with Client(server.url) as client:
            message = await call_error(client, idp, "explode")
            await call(client, idp, "health_check")
        metrics = await scrape(server)
    finally:
        server.stop()
    assert "a bug" not in message  # masked, as for any tool
    assert metrics.value(CALLS, tool="explode", outcome="error") == 1
    assert metrics.value(CALLS, tool="explode", outcome="tool_error") is None
    assert metrics.value(CALLS, tool="health_check", outcome="ok") == 1


async def test_api_requests_are_counted_by_status(
    start_mcp: ServerFactory, api: ApiServer, idp: IdP
) -> None:
    server = start_mcp()
    async with Client(server.url) as client:
        note = await call(client, idp, "create_note", title="counted at both ends")
        before = await scrape(server)
        api.reset_counters()
        for _ in range(5):
            await call(client, idp, "get_note", uid=note["uid"])
        await call_error(client, idp, "get_note", uid=str(uuid.uuid4()))
        after = await scrape(server)
    assert before.value(API_REQUESTS, status="201") == 2  # the session, the note

    def delta(status: str) -> float:
        return (after.value(API_REQUESTS, status=status) or 0) - (
            before.value(API_REQUESTS, status=status) or 0
        )

    assert delta("200") == 5  # one API request per tool call, seen from the server
    assert delta("404") == 1
    assert api.requests == 6  # and counted at the API


async def test_unreachable_api_is_counted(start_mcp: ServerFactory, idp: IdP) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = start_mcp(api_url=url)  # nothing listens there once the socket is closed
    async with Client(server.url) as client:
        await call_error(client, idp, "list_notes")
    assert (await scrape(server)).value(API_REQUESTS, status="unavailable") == 1


async def test_counting_transport_opens_a_new_pool_after_close(api: ApiServer) -> None:
    metrics = ServerMetrics()
    transport = metrics.api_transport()
    for _ in range(2):  # as when a server's lifespan runs again
        async with httpx.AsyncClient(base_url=api.url, transport=transport) as http:
            assert (await http.get("/healthz")).status_code == 200
    assert Scrape(metrics.exposition().decode()).value(API_REQUESTS, status="200") == 2


def test_outcome_tells_explained_failures_from_masked_ones() -> None:
    masked = ToolError("Error calling tool 'x'")
    masked.__cause__ = KeyError("x")
    assert outcome_of(masked) == "error"
    assert outcome_of(ToolError("Note 'x' not found.")) == "tool_error"
    assert outcome_of(ValidationError("bad arguments")) == "tool_error"
    assert outcome_of(RuntimeError("a bug")) == "error"


async def test_token_gauges_move_after_a_refresh(start_mcp: ServerFactory, idp: IdP) -> None:
    idp.script(Reply(jwt=False, expires_in=120))  # refused by the API, so the next call refreshes
    server = start_mcp()
    before = await scrape(server)
    assert before.value(REFRESHES) == 1
    assert before.value(FAILURES) == 0
    assert before.value(LAST_SUCCESS) == 1
    expires_before = before.value(EXPIRES_IN)
    assert expires_before is not None
    assert 0 < expires_before <= 120
    assert before.value("toolbridge_mcp_auth_mode", mode="auth0") == 1
    async with Client(server.url) as client:
        await call(client, idp, "list_notes")
    after = await scrape(server)
    assert after.value(REFRESHES) == 2
    expires_after = after.value(EXPIRES_IN)
    assert expires_after is not None
    assert expires_after > 120
    assert_no_secrets(before.text + after.text, idp)


async def test_refresh_failures_show_and_clear(start_mcp: ServerFactory, idp: IdP) -> None:
    idp.set_default(Reply(status=503, error="temporarily_unavailable"))
    server = start_mcp(token_request_deadline_seconds=0.5)
    down = await scrape(server)
    assert down.value(REFRESHES) == 0
    failures = down.value(FAILURES)
    assert failures is not None
    assert failures >= 1
    assert down.value(FAILURES_TOTAL) == failures
    assert down.value(LAST_SUCCESS) == 0
    assert EXPIRES_IN not in down.names()  # no token, no expiry
    idp.set_default(Reply())
    async with Client(server.url) as client:
        await call(client, idp, "list_notes")
    healed = await scrape(server)
    assert healed.value(REFRESHES) == 1
    assert healed.value(FAILURES) == 0
    assert healed.value(FAILURES_TOTAL) == failures  # the counter keeps what the gauge forgot
    assert healed.value(LAST_SUCCESS) == 1
    assert healed.value(EXPIRES_IN) is not None


@pytest.mark.parametrize("mode", ["static", "passthrough"])
async def test_other_modes_have_no_token_metrics(
    start_mcp: ServerFactory, idp: IdP, mode: str
) -> None:
    token = mint_token(idp)
    overrides = {"jwt_token": token} if mode == "static" else {}
    server = start_mcp(mode, **overrides)
    async with Client(server.url, auth=token if mode == "passthrough" else None) as client:
        await call(client, idp, "list_notes")
    metrics = await scrape(server)
    assert metrics.value("toolbridge_mcp_auth_mode", mode=mode) == 1
    assert metrics.value(CALLS, tool="list_notes", outcome="ok") == 1
    assert not {REFRESHES, FAILURES, FAILURES_TOTAL, LAST_SUCCESS, EXPIRES_IN} & metrics.names()
    assert token not in metrics.text


async def test_each_server_counts_its_own_calls(start_mcp: ServerFactory, idp: IdP) -> None:
    first, second = start_mcp(), start_mcp()
    async with Client(first.url) as client:
        await call(client, idp, "list_tasks")
        await call(client, idp, "list_tasks")
    async with Client(second.url) as client:
        await call(client, idp, "list_tasks")
    assert (await scrape(first)).value(CALLS, tool="list_tasks", outcome="ok") == 2
    assert (await scrape(second)).value(CALLS, tool="list_tasks", outcome="ok") == 1
