"""The tool path's CPU per call, next to a bare authenticated client's: this process's CPU
time per call while the other end, a stand-in API answering from memory
(:mod:`bench.fake_api`), runs in a child process. Prints figures; asserts nothing.

- ``tool path``: ``FastMCP.call_tool`` on our server in this process (middleware, argument
  validation, the tool, the API client with its auth, session headers and pool, the typed
  result) — an MCP request without the JSON-RPC transport;
- ``from_openapi``: the same for ``FastMCP.from_openapi`` over the API's OpenAPI document;
- ``bare httpx`` / ``bare httpx2``: one kept-alive client with an ``Authorization`` header, a
  GET and ``.json()``.

Each runs at concurrency 1 and 20, taking turns ``--rounds`` times; the figure is the lowest
CPU per call of the rounds (the least disturbed by the rest of the machine).

Run: ``uv run python -m bench.tool_path [--rounds 5]`` (from the repository root).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")

import httpx
import httpx2
from fastmcp import Client, FastMCP
from pydantic import SecretStr

from bench.fake_api import UID
from bench.token_manager import AUDIENCE, CLIENT_ID, CLIENT_SECRET, RemoteIdP
from tests.support.process import ServiceProcess, free_port
from toolbridge_common.logs import configure_logging
from toolbridge_mcp.config import Settings
from toolbridge_mcp.server import create_server

Call = Callable[[], Awaitable[object]]
CALLS = {1: 400, 20: 1000}


async def cpu_per_call(call: Call, calls: int, concurrency: int) -> tuple[float, float]:
    """(CPU µs per call in this process, calls per second)."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return (time.process_time() - cpu) / calls * 1e6, calls / seconds


async def main(rounds: int) -> None:
    configure_logging("WARNING")
    port = free_port()
    fake = ServiceProcess(
        [sys.executable, "-m", "bench.fake_api", str(port)],
        dict(os.environ),
        port=port,
        ready_path="/healthz",
    ).start()
    idp = RemoteIdP()
    try:
        await compare(fake.url, idp.token_url, rounds)
    finally:
        idp.close()
        fake.stop()


async def compare(api_url: str, token_url: str, rounds: int) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        go_api_base_url=api_url,
        auth0_client_id=CLIENT_ID,
        auth0_client_secret=SecretStr(CLIENT_SECRET),
        auth0_token_url=token_url,
        auth0_audience=AUDIENCE,
    )
    ours = create_server(settings)
    headers = {"Authorization": "Bearer token", "X-Sync-Session": "s", "X-Sync-Epoch": "1"}
    spec = _openapi_document()
    theirs_http = httpx2.AsyncClient(base_url=api_url, headers=headers, timeout=30)
    theirs = FastMCP.from_openapi(spec, client=theirs_http)
    limits = {"max_connections": 100, "max_keepalive_connections": 50}
    bare = httpx.AsyncClient(base_url=api_url, headers=headers, limits=httpx.Limits(**limits))
    bare2 = httpx2.AsyncClient(base_url=api_url, headers=headers, limits=httpx2.Limits(**limits))

    async def get(client: httpx.AsyncClient | httpx2.AsyncClient) -> Any:
        response = await client.get(f"/v1/notes/{UID}")
        response.raise_for_status()
        return response.json()

    async with Client(ours):  # runs the server's lifespan (the backend opens)
        contenders: dict[str, Call] = {
            "tool path (get_note)": lambda: ours.call_tool("get_note", {"uid": UID}),
            "from_openapi (get_notes)": lambda: theirs.call_tool("get_notes", {"uid": UID}),
            "bare httpx GET": lambda: get(bare),
            "bare httpx2 GET": lambda: get(bare2),
        }
        print(
            f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}; lowest of {rounds} rounds\n"
        )
        print(f"{'':<26}{'conc':>5}{'CPU µs/call':>13}{'calls/s':>9}{'x bare httpx':>14}")
        for concurrency, calls in CALLS.items():
            for call in contenders.values():
                await cpu_per_call(call, 100, concurrency)  # warm-up, pools grown
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
            for _ in range(rounds):
                for name, call in contenders.items():
                    results[name].append(await cpu_per_call(call, calls, concurrency))
            floor = min(cpu for cpu, _ in results["bare httpx GET"])
            for name, figures in results.items():
                cpu = min(c for c, _ in figures)
                rate = max(r for _, r in figures)
                print(f"{name:<26}{concurrency:>5}{cpu:>13.0f}{rate:>9.0f}{cpu / floor:>13.2f}x")
    for client in (bare, bare2, theirs_http):
        await client.aclose()


def _openapi_document() -> dict[str, Any]:
    from toolbridge_api.app import create_app
    from toolbridge_api.config import ApiSettings

    settings = ApiSettings(_env_file=None, audience="a", hs256_secret=SecretStr("x" * 32))  # type: ignore[call-arg]
    document: dict[str, Any] = json.loads(json.dumps(create_app(settings).openapi()))
    return document


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
