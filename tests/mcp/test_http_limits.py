"""Issue 12: ``toolbridge-mcp serve`` refuses oversized request headers as soon as they pass
TOOLBRIDGE_MAX_HEADER_BYTES, without holding them (uvicorn's httptools parser buffered a
64 MB header: 97 -> 177 MB RSS, never given back)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.mcp_server import cli_command, server_env

_BIG = 64 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_64_mb_header_is_refused_without_growing_the_server(tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - our own console script
        [*cli_command(), "serve", "--port", str(port)],
        env=server_env(TOOLBRIDGE_JWT_TOKEN="opaque-static-token", TOOLBRIDGE_LOG_LEVEL="WARNING"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        before = _rss_mb(process.pid)
        sent, answer = 0, b""
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Big: " % port)
            chunk = b"a" * 65536
            try:
                while sent < _BIG:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # the server closed the connection: refused part-way
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                answer = sock.recv(100)
        after = _rss_mb(process.pid)
        assert answer.startswith(b"HTTP/1.1 400") or sent < _BIG, answer
        assert after - before < 10, f"RSS {before:.1f} -> {after:.1f} MB"
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # still serving
    finally:
        process.terminate()
        process.wait(10)
