"""Shared fixtures: a real token endpoint on 127.0.0.1, a controllable clock, and a log
capture that fails any test whose logs contain a secret or an issued token."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from tests.support.clock import FakeClock
from tests.support.idp import IdP
from toolbridge_mcp.config import get_settings
from toolbridge_mcp.oauth import RetryPolicy
from toolbridge_mcp.tokens import RefreshSchedule, TokenManager

CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret"
NASTY_SECRET = "p@ss+w/rd%&=:x"
AUDIENCE = "https://api.toolbridge.test"
KNOWN_SECRETS = (CLIENT_SECRET, NASTY_SECRET)


@pytest.fixture(scope="session")
def idp_server() -> Iterator[IdP]:
    with IdP(clients={CLIENT_ID: CLIENT_SECRET, "nasty-client": NASTY_SECRET}) as server:
        yield server


@pytest.fixture(scope="session")
def tls_idp_server() -> Iterator[IdP]:
    with IdP(clients={CLIENT_ID: CLIENT_SECRET}, tls=True) as server:
        yield server


@pytest.fixture
def idp(idp_server: IdP) -> Iterator[IdP]:
    idp_server.reset()
    yield idp_server
    idp_server.drain()


@pytest.fixture
def tls_idp(tls_idp_server: IdP) -> Iterator[IdP]:
    tls_idp_server.reset()
    yield tls_idp_server
    tls_idp_server.drain()


@pytest.fixture
def clean_settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray TOOLBRIDGE_* variable or .env file from the machine changes a settings test."""
    for name in list(os.environ):
        if name.startswith("TOOLBRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class LogCapture:
    """Every log line of the test, loguru and standard library, at the lowest level."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def text(self) -> str:
        return "\n".join(self.lines)

    def messages(self, level: str) -> list[str]:
        return [line.split(" | ", 1)[1] for line in self.lines if line.startswith(f"{level} | ")]


class _ListHandler(logging.Handler):
    def __init__(self, capture: LogCapture) -> None:
        super().__init__(level=logging.DEBUG)
        self.capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        self.capture.lines.append(f"{record.levelname} | {record.getMessage()}")


@pytest.fixture(autouse=True)
def logs(request: pytest.FixtureRequest) -> Iterator[LogCapture]:
    """Captures all logs and, after the test, fails it if any secret or token leaked."""
    capture = LogCapture()
    sink = logger.add(
        lambda message: capture.lines.append(
            f"{message.record['level'].name} | {message.record['message']}"
        ),
        level="TRACE",
    )
    handler = _ListHandler(capture)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        logger.remove(sink)
        root.removeHandler(handler)
        root.setLevel(previous)
    issued: list[str] = []
    for name in ("idp_server", "tls_idp_server"):
        if name in request.fixturenames:
            issued += request.getfixturevalue(name).issued
    text = capture.text()
    leaked = [s for s in (*KNOWN_SECRETS, *issued) if s in text]
    assert not leaked, f"{len(leaked)} secret(s) or token(s) appeared in the logs"


ManagerFactory = Callable[..., TokenManager]


_RETRY_OPTIONS = {
    "retry_attempts": "attempts",
    "retry_wait_initial": "wait_initial",
    "retry_wait_max": "wait_max",
    "deadline": "deadline",
}
_SCHEDULE_OPTIONS = {
    "refresh_buffer": "refresh_buffer",
    "background_retry_max": "background_retry_max",
    "refresh_fraction": "refresh_fraction",
    "long_lived": "long_lived",
}


@pytest.fixture
async def make_manager(idp: IdP, clock: FakeClock) -> AsyncIterator[ManagerFactory]:
    """Builds client-credentials managers against the fake IdP with fast retries; closes
    them afterwards. Retry and schedule options go into a RetryPolicy and RefreshSchedule
    (``retry_attempts=1``, ``refresh_buffer=60``, ...); the rest to
    :meth:`TokenManager.client_credentials`."""
    made: list[TokenManager] = []

    def factory(**options: Any) -> TokenManager:
        settings: dict[str, Any] = {
            "token_url": idp.token_url,
            "audience": AUDIENCE,
            "clock": clock,
            "retry_wait_initial": 0.01,
            "retry_wait_max": 0.05,
            "deadline": 5.0,
        }
        settings |= options
        retry = {new: settings.pop(old) for old, new in _RETRY_OPTIONS.items() if old in settings}
        schedule = {
            new: settings.pop(old) for old, new in _SCHEDULE_OPTIONS.items() if old in settings
        }
        manager = TokenManager.client_credentials(
            settings.pop("client_id", CLIENT_ID),
            settings.pop("client_secret", CLIENT_SECRET),
            retry=RetryPolicy(**retry),
            schedule=RefreshSchedule(**schedule),
            **settings,
        )
        made.append(manager)
        return manager

    yield factory
    for manager in made:
        await manager.close()
