"""Redis for tests: the machine's shared one (127.0.0.1:6379, keys under a prefix of the
test's own), or a ``redis-server`` of the test's own on a free port, which it may stop,
pause and restart (never the shared one)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from typing import Self

import redis

from tests.support.process import free_port

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_problem(url: str = SHARED_REDIS_URL) -> str | None:
    """None if Redis answers at ``url``, else why not (for a skip reason)."""
    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"Redis not reachable at {url}: {type(exc).__name__}"
    return None


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"tbtest:{uuid.uuid4().hex[:12]}:"


def delete_prefixed(url: str, prefix: str) -> None:
    """Remove a test's keys from the shared Redis."""
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


class RedisServer:
    """``redis-server`` on 127.0.0.1 and a free port, no persistence, optionally with a
    password; ``stop()``/``start()`` keep the port, ``pause()``/``resume()`` freeze it (it
    then accepts connections and never answers: a slow Redis)."""

    def __init__(self, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def installed() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        auth = "" if self.password is None else f":{self.password}@"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no"]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        self._process = subprocess.Popen(  # noqa: S603 - a fixed program
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while redis_problem(self.url) is not None:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # a paused server must see the SIGTERM
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def pause(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
