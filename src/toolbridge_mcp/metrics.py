"""Prometheus metrics of one MCP server: tool calls and their latency, and the token's state.

Each server has its own registry: tests and benchmarks build many servers in one process, and
the global default registry would mix their counts and refuse the second set of names. Token
figures are read from the auth mode's token manager when scraped (a collector, not counters fed
alongside it), so they can neither drift from what the manager knows nor be counted twice.
API answers are counted by status on the backend client's transport, so requests per tool
call (one in steady state) can be watched in production. Labels hold tool names, outcomes,
status codes and the auth mode only: never a token, secret, argument or path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal

import httpx
import mcp_types as mt
from fastmcp.exceptions import FastMCPError, NotFoundError, ToolError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.backend.transport import DEFAULT_LIMITS, PooledTransport

Outcome = Literal["ok", "tool_error", "error"]
UNKNOWN_TOOL = "unknown"
"""Tool label of calls to a tool that does not exist (keeps the label set bounded)."""

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def outcome_of(exc: BaseException) -> Outcome:
    """``tool_error`` for a failure explained to the caller (a :class:`ToolError` the tool
    raised, invalid arguments), ``error`` for anything else: an unexpected exception, which
    FastMCP masks as a ``ToolError`` caused by it."""
    if not isinstance(exc, FastMCPError):
        return "error"
    cause = exc.__cause__
    if isinstance(exc, ToolError) and cause is not None and not isinstance(cause, FastMCPError):
        return "error"
    return "tool_error"


class ToolCallMetrics(Middleware):
    """Counts and times every ``tools/call`` by tool and outcome."""

    def __init__(self, calls: Counter, latency: Histogram) -> None:
        self._calls = calls
        self._latency = latency

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        tool = context.message.name
        outcome: Outcome = "error"
        started = time.perf_counter()
        try:
            result = await call_next(context)
        except NotFoundError:
            tool = UNKNOWN_TOOL
            raise
        except Exception as exc:
            outcome = outcome_of(exc)
            raise
        else:
            outcome = "tool_error" if result.is_error else "ok"
            return result
        finally:
            self._latency.labels(tool, outcome).observe(time.perf_counter() - started)
            self._calls.labels(tool, outcome).inc()


class CountingTransport(httpx.AsyncBaseTransport):
    """The backend client's pooled transport (:class:`PooledTransport`), counting the API's
    answers by status (``unavailable`` when none came). :meth:`prepare` builds the pool
    ahead of the first request; after :meth:`aclose` the next request builds a fresh one, so
    a server stopped and started again gets a new pool, as with httpx's own transport."""

    def __init__(self, requests: Counter, limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        self._requests = requests
        self._limits = limits
        self._pool: PooledTransport | None = None

    def prepare(self) -> None:
        """Build the pool and its TLS context now (~20 ms of CPU): call it before serving
        or in a worker thread, never on a loop that serves."""
        if self._pool is None:
            self._pool = PooledTransport(self._limits)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool = self._pool
        if pool is None:
            self.prepare()
            pool = self._pool
            assert pool is not None
        try:
            response = await pool.handle_async_request(request)
        except httpx.TransportError:
            self._requests.labels("unavailable").inc()
            raise
        self._requests.labels(str(response.status_code)).inc()
        return response

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()


def _mode_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "toolbridge_mcp_auth_mode",
        "How the server authenticates to the API (1 for the mode in use).",
        labels=["mode"],
    )


def _cache_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "toolbridge_mcp_token_cache_shared",
        "1 while the fleet shares tokens through the cache (Redis answers), 0 while this "
        "process uses its own (memory backend, or Redis down).",
        labels=["backend"],
    )


class TokenCollector(Collector):
    """The auth mode, and its token manager's state at scrape time (modes that fetch
    tokens only)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def describe(self) -> Iterator[Metric]:
        yield _mode_family()
        yield _cache_family()
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        mode = _mode_family()
        auth = self._backend.auth
        mode.add_metric([auth.name], 1)
        yield mode
        cache = auth.token_cache
        if cache is not None:
            shared = _cache_family()
            shared.add_metric([cache.backend], 1 if cache.shared else 0)
            yield shared
        manager = auth.manager
        if manager is None:
            return
        stats = manager.stats
        refreshes, failures_total, failures, success, expires_in = self._families()
        refreshes.add_metric([], stats.refresh_count)
        failures_total.add_metric([], stats.failures_total)
        failures.add_metric([], stats.failure_count)
        yield refreshes
        yield failures_total
        yield failures
        if stats.last_refresh_success is not None:
            success.add_metric([], 1 if stats.last_refresh_success else 0)
            yield success
        expires_at = manager.expires_at
        if expires_at is not None:
            expires_in.add_metric([], (expires_at - datetime.now(UTC)).total_seconds())
            yield expires_in

    def _families(
        self,
    ) -> tuple[
        CounterMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            CounterMetricFamily(
                "toolbridge_mcp_token_refreshes",
                "Access tokens fetched from the identity provider since start.",
            ),
            CounterMetricFamily(
                "toolbridge_mcp_token_refresh_failures",
                "Failed token fetches since start (each fetch counts once, retries included).",
            ),
            GaugeMetricFamily(
                "toolbridge_mcp_token_refresh_consecutive_failures",
                "Token requests failed in a row (0 once one succeeds); alert when above 0.",
            ),
            GaugeMetricFamily(
                "toolbridge_mcp_token_last_refresh_success",
                "1 if the last token request succeeded, 0 if it failed.",
            ),
            GaugeMetricFamily(
                "toolbridge_mcp_token_expires_in_seconds",
                "Seconds until the cached access token expires; absent without a token.",
            ),
        )


class ServerMetrics:
    """The registry of one server, what feeds it (the tool-call middleware, the API
    transport, the token collector) and its ``/metrics`` view."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        calls = Counter(
            "toolbridge_mcp_tool_calls",
            "MCP tool calls by tool and outcome (ok, tool_error, error).",
            ["tool", "outcome"],
            registry=self.registry,
        )
        latency = Histogram(
            "toolbridge_mcp_tool_call_duration_seconds",
            "Time to answer an MCP tool call, by tool and outcome.",
            ["tool", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._api_requests = Counter(
            "toolbridge_mcp_api_requests",
            "Requests to the ToolBridge API by response status (unavailable: no answer).",
            ["status"],
            registry=self.registry,
        )
        self.middleware = ToolCallMetrics(calls, latency)

    def api_transport(self) -> CountingTransport:
        """The transport for the backend's API client."""
        return CountingTransport(self._api_requests)

    def watch_tokens(self, backend: Backend) -> None:
        """Report ``backend``'s auth mode and token state at each scrape."""
        self.registry.register(TokenCollector(backend))

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics``."""
        del request
        return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)
