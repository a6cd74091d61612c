"""The development issuer over real HTTP on 127.0.0.1 for tests: in a server thread
(:class:`RunningIssuer`) or as the ``toolbridge-dev-issuer serve`` command
(:class:`IssuerProcess`). Every token either hands out is tracked (:func:`track`) so the
``tests/dev_issuer`` conftest can look for it in the test's logs afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Self

import httpx
import jwt

from tests.conftest import CLIENT_ID, CLIENT_SECRET, NASTY_SECRET, LogCapture
from tests.support.process import ServiceProcess, free_port
from tests.support.server import DeferredApp, ServerThread
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
    """Remember a token so the conftest's leak check looks for it in the test's logs."""
    with _TOKENS_LOCK:
        _TOKENS.append(token)
    return token


def forget_tracked() -> None:
    """Start a test with no tracked tokens."""
    with _TOKENS_LOCK:
        _TOKENS.clear()


def tracked() -> list[str]:
    """The tokens tracked since :func:`forget_tracked`."""
    with _TOKENS_LOCK:
        return list(_TOKENS)


def issuer_messages(logs: LogCapture, level: str) -> list[str]:
    """The test's log messages at ``level`` without httpx's own request lines."""
    return [line for line in logs.messages(level) if not line.startswith("HTTP Request:")]


class RunningIssuer:
    """:func:`create_app` served by uvicorn on a free 127.0.0.1 port, ``issuer_url`` its own
    address, the key in ``state_dir`` (created on first start)."""

    def __init__(self, state_dir: Path, **settings: Any) -> None:
        self.state_dir = state_dir
        defaults = {"clients": CLIENTS, "audiences": [AUDIENCE, OTHER_AUDIENCE]}
        self.overrides: dict[str, Any] = defaults | settings
        self._deferred = DeferredApp()
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
