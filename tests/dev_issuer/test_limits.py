"""Request limits of the dev issuer (issue 12): bodies (it read bodies of any size), header
count and size, and the time a body may take, in-process and as ``toolbridge-dev-issuer
serve`` over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.support.dev_issuer import IssuerProcess, RunningIssuer, cli_env

MB = 1024 * 1024


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIssuer]:
    with RunningIssuer(
        tmp_path_factory.mktemp("issuer-limits"),
        max_body_bytes=4096,
        max_header_count=20,
        body_timeout_seconds=0.3,
    ) as running:
        yield running


def test_a_body_over_the_limit_is_a_413(small: RunningIssuer) -> None:
    form = {"grant_type": "client_credentials", "padding": "x" * 5000}
    declared = httpx.post(small.token_url, data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert declared.status_code == 413
    assert declared.json() == {
        "error": "invalid_request",
        "error_description": "request body too large (the limit is 4096 bytes)",
    }

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield b"grant_type=client_credentials&padding="
        for _ in range(10):
            yield b"x" * 1000

    streamed = httpx.post(
        small.token_url,
        content=chunked(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert streamed.status_code == 413
    assert small.fetch()  # a normal request still works


def test_too_many_headers_is_a_431(small: RunningIssuer) -> None:
    headers = {f"X-Filler-{n}": "x" for n in range(25)}
    response = httpx.get(f"{small.url}/.well-known/jwks.json", headers=headers)
    assert response.status_code == 431
    assert response.json()["error_description"] == "too many request headers (the limit is 20)"


async def test_a_body_that_does_not_arrive_in_time_is_a_408(small: RunningIssuer) -> None:
    async def slow() -> AsyncIterator[bytes]:
        yield b"grant_type=client_credentials"
        await asyncio.sleep(1.0)
        yield b"&scope=x"

    async with httpx.AsyncClient() as client:
        response = await client.post(
            small.token_url,
            content=slow(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
    assert response.status_code == 408
    assert response.json()["error_description"] == "request body not received within 0.3 s"


def _memory(pid: int, field: str = "VmRSS") -> int:
    """Resident memory in bytes (``VmHWM``: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def test_serve_refuses_a_64_mb_header_without_growing(tmp_path: Path) -> None:
    """``toolbridge-dev-issuer serve`` parses with h11: the header is refused once it passes
    16 KiB and the connection closed, instead of being buffered whole."""
    with IssuerProcess(tmp_path, cli_env(tmp_path / "state")) as server:
        process = server._process  # the child, for its memory
        assert process is not None
        for _ in range(10):
            httpx.get(f"{server.url}/.well-known/jwks.json")
        before, peak_before = _memory(process.pid), _memory(process.pid, "VmHWM")
        answer = bytearray()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:

            def read() -> None:
                with contextlib.suppress(OSError):
                    while chunk := sock.recv(65536):
                        answer.extend(chunk)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            sent = 0
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nX-Huge: ")
                while sent < 64 * MB and reader.is_alive():
                    sock.sendall(b"a" * (256 * 1024))
                    sent += 256 * 1024
            reader.join(timeout=10)
        after, peak_after = _memory(process.pid), _memory(process.pid, "VmHWM")
        print(
            f"\ndev issuer, 64 MB header: {bytes(answer[:12])!r} after {sent / MB:.1f} MB sent,"
            f" RSS {before / MB:.1f} -> {after / MB:.1f} MB, peak {peak_before / MB:.1f} ->"
            f" {peak_after / MB:.1f} MB"
        )
        assert answer.startswith(b"HTTP/1.1 400 "), bytes(answer[:100])
        assert sent < 8 * MB, "refused while the header was still arriving"
        assert after - before < 8 * MB
        assert peak_after - peak_before < 8 * MB
        assert httpx.get(f"{server.url}/.well-known/jwks.json").status_code == 200
