"""The development issuer over real HTTP on 127.0.0.1: in a server thread (``RunningIssuer``)
or as the ``toolbridge-dev-issuer serve`` command (``IssuerProcess``). Every token either
hands out is checked against the test's logs afterwards."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import jwt
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.conftest import CLIENT_ID, CLIENT_SECRET, NASTY_SECRET, LogCapture
from tests.support.jwks import leaked
from tests.support.process import ServiceProcess, free_port
from tests.support.server import ServerThread
from toolbridge_dev.issuer.app import create_app
from toolbridge_dev.issuer.config import IssuerSettings
from toolbridge_dev.issuer.keys import SigningKey, load_or_create_signing_key

AUDIENCE = "https://api.toolbridge.local"
OTHER_AUDIENCE = "https://other.toolbridge.local"
NASTY_CLIENT_ID = "nasty client:é+%"
CLIENTS = {CLIENT_ID: CLIENT_SECRET, NASTY_CLIENT_ID: NASTY_SECRET}
COMMAND = str(Path(sys.executable).parent / "toolbridge-dev-issuer")

_TOKENS: list[str] = []
_TOKENS_LOCK = threading.Lock()


def track(token: str) -> str:
    """Remember a token so the leak check below looks for it in the test's logs."""
    with _TOKENS_LOCK:
        _TOKENS.append(token)
    return token


@pytest.fixture(autouse=True)
def no_issued_token_in_logs(logs: LogCapture) -> Iterator[None]:
    """The shared ``logs`` fixture checks for secrets; this adds the tokens issued here."""
    with _TOKENS_LOCK:
        _TOKENS.clear()
    yield
    with _TOKENS_LOCK:
        tokens = list(_TOKENS)
    assert not leaked(logs.text(), tokens), "an issued token appeared in the logs"


@pytest.fixture(autouse=True)
def quiet_client_transport() -> Iterator[None]:
    """The tests' HTTP clients log response headers at DEBUG, a redirect's ``Location`` (and
    so its code) among them; the leak check is about what the issuer logs."""
    loggers = [logging.getLogger(name) for name in ("httpcore", "httpcore2")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.INFO)
    yield
    for each, level in zip(loggers, levels, strict=True):
        each.setLevel(level)


def issuer_messages(logs: LogCapture, level: str) -> list[str]:
    """The test's log messages at ``level`` without httpx's own request lines."""
    return [line for line in logs.messages(level) if not line.startswith("HTTP Request:")]


class _Deferred:
    """ASGI app set once the port is known: the issuer URL, and so the app, depend on it."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


class RunningIssuer:
    """:func:`create_app` served by uvicorn on a free 127.0.0.1 port, ``issuer_url`` its own
    address, the key in ``state_dir`` (created on first start)."""

    def __init__(self, state_dir: Path, **settings: Any) -> None:
        self.state_dir = state_dir
        defaults = {"clients": CLIENTS, "audiences": [AUDIENCE, OTHER_AUDIENCE]}
        self.overrides: dict[str, Any] = defaults | settings
        self._deferred = _Deferred()
        self._server = ServerThread(self._deferred, name="toolbridge-dev-issuer")
        self.settings: IssuerSettings | None = None
        self.key: SigningKey | None = None

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def issuer_url(self) -> str:
        return f"{self.url}/"

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    def start(self) -> Self:
        self._server.start()
        self.settings = IssuerSettings(
            _env_file=None,  # type: ignore[call-arg]
            issuer_url=self.issuer_url,
            state_dir=self.state_dir,
            **self.overrides,
        )
        self.key = load_or_create_signing_key(self.state_dir)
        self._deferred.app = create_app(self.settings, self.key)
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fetch(self, **form: str) -> str:
        """A token for the default client (form body, client_secret_post)."""
        body = {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        } | form
        response = httpx.post(self.token_url, data=body)
        assert response.status_code == 200, response.text
        return track(response.json()["access_token"])


def verify(token: str, jwks_url: str, *, issuer: str, audience: str = AUDIENCE) -> dict[str, Any]:
    """Check signature (key from the served JWKS by kid), iss, aud and exp with PyJWT."""
    signing_key = jwt.PyJWKClient(jwks_url, cache_keys=False).get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        signing_key.key,
        algorithms=["RS256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    return claims


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIssuer]:
    with RunningIssuer(tmp_path_factory.mktemp("issuer")) as running:
        yield running


def cli_env(state_dir: Path, **settings: str) -> dict[str, str]:
    """The environment without any TOOLBRIDGE_* variable of the machine, plus ``settings``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
    return base | {"TOOLBRIDGE_DEV_ISSUER_STATE_DIR": str(state_dir)} | settings


def run_cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``toolbridge-dev-issuer ARGS`` to completion, as a user runs it."""
    return subprocess.run(  # noqa: S603 - our own console script
        [COMMAND, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class IssuerProcess(ServiceProcess):
    """``toolbridge-dev-issuer serve`` as a child process on a free 127.0.0.1 port; ready once
    the discovery document answers."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        port = free_port()
        super().__init__(
            [COMMAND, "serve"],
            env | {"TOOLBRIDGE_DEV_ISSUER_PORT": str(port)},
            port=port,
            ready_path="/.well-known/openid-configuration",
            cwd=cwd,
        )
