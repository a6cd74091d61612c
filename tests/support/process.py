"""A console script of ours as a child process on a free 127.0.0.1 port, as a user runs it:
settings only through its environment; ready once a URL answers 200; its log lines (stderr)
kept in ``output``."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Self

import httpx


def free_port() -> int:
    """A port that was free a moment ago (the child binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServiceProcess:
    """``argv`` served on ``port``; ``ready_path`` is polled until it answers 200."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        port: int,
        ready_path: str,
        cwd: Path | None = None,
    ) -> None:
        self.argv = argv
        self.env = env
        self.port = port
        self.ready_path = ready_path
        self.cwd = cwd
        self.output: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        self._process = subprocess.Popen(  # noqa: S603 - our own console script
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True, name="child-log")
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                name = Path(self.argv[0]).name
                raise RuntimeError(f"{name} did not start:\n" + "\n".join(self.output[-20:]))
            time.sleep(0.05)
        return self

    def stop(self) -> int | None:
        """Terminate (SIGTERM, then SIGKILL) and return the exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}{self.ready_path}", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def _drain(self) -> None:
        process = self._process
        assert process is not None
        assert process.stderr is not None
        for line in process.stderr:
            self.output.append(line.rstrip("\n"))
