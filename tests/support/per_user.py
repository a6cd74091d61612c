"""Per-user OAuth end to end, in process, over real HTTP: the dev authorization server, the API
with token exchange on (recording every ``Authorization`` it is sent), and MCP servers whose
public URL — and so their RFC 8707 resource — is their own address, plus the MCP SDK's OAuth
client driven by a scripted sign-in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import jwt
from fastmcp import FastMCP
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from pydantic import AnyUrl
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.api import ApiServer
from tests.support.dev_issuer import RunningIssuer
from tests.support.mcp_server import TENANT_ID, TENANT_SECRET
from tests.support.server import DeferredApp, ServerThread
from toolbridge_dev.issuer.tokens import mint_user_token
from toolbridge_mcp.config import Settings
from toolbridge_mcp.server import create_server

API_AUDIENCE = "https://api.toolbridge.test"
SCOPE = "toolbridge"
CALLBACK = "http://127.0.0.1:53682/callback"
EXCHANGE_PATH = "/auth/token-exchange"
OWN_ISSUER = "toolbridge-api"
_LIFESPAN_TIMEOUT = 30.0


class AuthorizationRecorder:
    """ASGI middleware keeping (path, Authorization header) of every request the API gets."""

    def __init__(self, app: ASGIApp, seen: list[tuple[str, str | None]]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            value = headers.get(b"authorization")
            self.seen.append((scope["path"], None if value is None else value.decode()))
        await self.app(scope, receive, send)


class OwnUrlMcpServer:
    """The MCP server over streamable HTTP on a free port, its public URL that very address:
    the port is taken first, then the server is built for it."""

    def __init__(self) -> None:
        self._deferred = DeferredApp()
        self._thread = ServerThread(self._deferred, name="toolbridge-mcp")
        self._thread.start()
        self.mcp: FastMCP[Any] | None = None
        self._held: concurrent.futures.Future[None] | None = None
        self._ready = threading.Event()
        self._release = asyncio.Event()

    @property
    def base_url(self) -> str:
        return self._thread.url

    @property
    def url(self) -> str:
        """The MCP endpoint, which is also this server's resource URL."""
        return f"{self._thread.url}/mcp"

    def serve(self, settings: Settings) -> Self:
        self.mcp = create_server(settings)
        app = self.mcp.http_app()
        self._deferred.app = app
        self._held = asyncio.run_coroutine_threadsafe(self._hold(app), self._thread.loop)
        if not self._ready.wait(_LIFESPAN_TIMEOUT) or self._held.done():
            self._held.result(timeout=0)
            raise RuntimeError("MCP server lifespan did not start")
        return self

    def stop(self) -> None:
        if self._held is not None and self._thread.running:
            self._thread.call_soon(self._release.set)
            self._held.result(timeout=_LIFESPAN_TIMEOUT)
        self._held = None
        self._thread.stop()

    async def _hold(self, app: Any) -> None:
        self._release = asyncio.Event()
        async with app.router.lifespan_context(app):
            self._ready.set()
            await self._release.wait()


@dataclass
class PerUserStack:
    """The dev issuer, the API (token exchange on for ``mcp``'s resource) and the per-user
    MCP server ``mcp``, which requires the ``toolbridge`` scope."""

    issuer: RunningIssuer
    api: ApiServer
    mcp: OwnUrlMcpServer
    seen: list[tuple[str, str | None]]
    state_dir: Path
    tokens: list[str]

    @property
    def resource(self) -> str:
        return self.mcp.url

    def settings(self, **overrides: Any) -> Settings:
        """Per-user settings as an operator writes them: the issuer, the API's audience."""
        fields: dict[str, Any] = {
            "go_api_base_url": self.api.url,
            "tenant_id": TENANT_ID,
            "tenant_header_secret": TENANT_SECRET,
            "oauth_issuer": self.issuer.issuer_url,
            "oauth_exchange_audience": API_AUDIENCE,
            "oauth_required_scopes": SCOPE,
            "public_url": self.mcp.base_url,
        }
        return Settings(_env_file=None, **(fields | overrides))  # type: ignore[call-arg]

    def mint(
        self,
        user: str = "alice",
        *,
        audience: str | None = None,
        lifetime: int = 300,
        scope: str | None = SCOPE,
        key: Any = None,
        issuer: str | None = None,
    ) -> str:
        """A user's token as the issuer would give it to their MCP client (for ``mcp`` by
        default); ``key``/``issuer`` to forge one of another authorization server."""
        assert self.issuer.key is not None
        token = mint_user_token(
            key or self.issuer.key,
            issuer=issuer or self.issuer.issuer_url,
            subject=user,
            audience=audience or self.resource,
            lifetime_seconds=lifetime,
            scope=scope,
            client_id="test-mcp-client",
        ).token
        self.tokens.append(token)
        return token

    def api_authorizations(self) -> list[str]:
        """Every Authorization the API got on its data routes (not the exchange)."""
        return [value for path, value in self.seen if path != EXCHANGE_PATH and value]

    def exchanges(self) -> int:
        """Token exchange requests the API answered so far."""
        return sum(path == EXCHANGE_PATH for path, _ in self.seen)

    def assert_only_api_tokens_reached_the_api(self, user_tokens: list[str]) -> None:
        """No user's own token was ever sent to the API, on any route, in any header; every
        data request carried a token of the API's own issuer."""
        values = [value for _, value in self.seen if value]
        assert values, "the API got no authenticated request"
        for token in user_tokens:
            assert all(token not in value for value in values), "a user token reached the API"
        for value in self.api_authorizations():
            scheme, _, token = value.partition(" ")
            assert scheme == "Bearer"
            claims = jwt.decode(token, options={"verify_signature": False})
            assert claims["iss"] == OWN_ISSUER, claims
            assert claims["aud"] == API_AUDIENCE


@dataclass
class ScriptedSignIn:
    """The MCP SDK's redirect and callback handlers, as a person in a browser: the
    authorization URL is opened with ``prompt=none&login_hint=<user>`` (the dev issuer's
    scripted sign-in), and the redirect's ``code``, ``state`` and ``iss`` handed back."""

    user: str
    opened: list[str]
    _result: AuthorizationCodeResult | None = None

    async def redirect(self, url: str) -> None:
        self.opened.append(url)
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        query |= {"prompt": "none", "login_hint": self.user}
        async with httpx.AsyncClient() as browser:
            answer = await browser.get(urlunsplit(parts._replace(query=urlencode(query))))
        assert answer.status_code in (302, 303), answer.text
        location = answer.headers["location"]
        assert location.startswith(f"{CALLBACK}?"), location
        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        assert "code" in params, params
        self._result = AuthorizationCodeResult(
            code=params["code"], state=params.get("state"), iss=params.get("iss")
        )

    async def callback(self) -> AuthorizationCodeResult:
        assert self._result is not None
        return self._result


class MemoryStorage:
    """The SDK's token storage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def oauth_client(url: str, user: str) -> tuple[OAuthClientProvider, MemoryStorage, ScriptedSignIn]:
    """The MCP SDK's own OAuth client for ``url``, signing in as ``user`` when asked."""
    storage = MemoryStorage()
    sign_in = ScriptedSignIn(user, [])
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            redirect_uris=[AnyUrl(CALLBACK)], client_name=f"ToolBridge test client ({user})"
        ),
        storage=storage,
        redirect_handler=sign_in.redirect,
        callback_handler=sign_in.callback,
    )
    return provider, storage, sign_in


def start_stack(
    state_dir: Path, *, token_lifetime: int = 300, **mcp_settings: Any
) -> Iterator[PerUserStack]:
    """Start everything (the MCP server's port first: it names the resource), yield, stop."""
    mcp = OwnUrlMcpServer()
    issuer = RunningIssuer(
        state_dir / "issuer",
        audiences=[API_AUDIENCE, mcp.url],
        scopes=["offline_access", SCOPE],
        token_lifetime_seconds=token_lifetime,
    )
    seen: list[tuple[str, str | None]] = []
    try:
        issuer.start()
        api = ApiServer(
            issuer.jwks_url,
            issuer.issuer_url,
            API_AUDIENCE,
            tenant_secret=TENANT_SECRET,
            exchange_subject_audience=mcp.url,
            exchange_signing_key_file=state_dir / "api-signing-key.pem",
        )
        api.app.add_middleware(AuthorizationRecorder, seen=seen)
        with api:
            stack = PerUserStack(issuer, api, mcp, seen, state_dir, [])
            mcp.serve(stack.settings(**mcp_settings))
            yield stack
            mcp.stop()  # before the API it calls
    finally:
        mcp.stop()
        issuer.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
