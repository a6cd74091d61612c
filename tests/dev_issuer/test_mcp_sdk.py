"""The MCP Python SDK's own OAuth client (``mcp.client.auth.OAuthClientProvider``) completes
sign-in against the dev issuer with a scripted browser: RFC 9728 discovery, RFC 8414
metadata, dynamic registration, the code flow with PKCE and ``resource``, the RFC 9207
``iss`` check, and a refresh with rotation when the access token expires.

The protected resource here is a stand-in that only checks bearer tokens (audience = its own
URL, as the MCP authorization spec requires), not the ToolBridge MCP server: the end-to-end
run against ``toolbridge-mcp dev --per-user`` belongs to the stack's tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import jwt
import pytest
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from pydantic import AnyUrl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.dev_issuer import AUDIENCE, RunningIssuer, track
from tests.support.server import ServerThread

CALLBACK = "http://127.0.0.1:53682/callback"


class ProtectedResource:
    """A resource server that accepts only the issuer's tokens for its own URL and answers
    401 with the RFC 9728 ``resource_metadata`` pointer otherwise; it records the subjects
    and tokens it served."""

    def __init__(self) -> None:
        self.issuer: RunningIssuer | None = None
        self.subjects: list[str] = []
        self.tokens: list[str] = []
        app = Starlette(
            routes=[
                Route("/mcp", self._call, methods=["POST"]),
                Route("/.well-known/oauth-protected-resource/mcp", self._metadata),
            ]
        )
        self.server = ServerThread(app, name="protected-resource")

    @property
    def resource(self) -> str:
        return f"{self.server.url}/mcp"

    async def _metadata(self, request: Request) -> Response:
        assert self.issuer is not None
        return JSONResponse(
            {"resource": self.resource, "authorization_servers": [self.issuer.issuer_url]}
        )

    async def _call(self, request: Request) -> Response:
        assert self.issuer is not None
        assert self.issuer.key is not None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            claims = jwt.decode(
                token,
                self.issuer.key.public_key,
                algorithms=["RS256"],
                audience=self.resource,
                issuer=self.issuer.issuer_url,
            )
        except jwt.InvalidTokenError:
            metadata = f"{self.server.url}/.well-known/oauth-protected-resource/mcp"
            return Response(
                status_code=401,
                headers={
                    "WWW-Authenticate": f'Bearer error="invalid_token", '
                    f'resource_metadata="{metadata}"'
                },
            )
        assert scheme == "Bearer"
        self.subjects.append(claims["sub"])
        self.tokens.append(token)
        return JSONResponse({"sub": claims["sub"]})


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


class ScriptedBrowser:
    """Opens the authorization URL, presses "Sign in as ``user``" and hands the redirect's
    parameters back to the SDK, as a person in a browser would."""

    def __init__(self, issuer: RunningIssuer, user: str) -> None:
        self.issuer = issuer
        self.user = user
        self.opened: list[str] = []
        self._result: AuthorizationCodeResult | None = None

    async def redirect(self, url: str) -> None:
        self.opened.append(url)
        async with httpx.AsyncClient() as browser:
            page = await browser.get(url)
            assert page.status_code == 200, page.text
            match = re.search(r'name="request" value="([^"]+)"', page.text)
            assert match is not None
            answer = await browser.post(
                f"{self.issuer.url}/authorize", data={"request": match.group(1), "user": self.user}
            )
        location = answer.headers["location"]
        assert location.startswith(f"{CALLBACK}?")
        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        track(params["code"])
        self._result = AuthorizationCodeResult(
            code=params["code"], state=params.get("state"), iss=params.get("iss")
        )

    async def callback(self) -> AuthorizationCodeResult:
        assert self._result is not None
        return self._result


@pytest.fixture
def resource(tmp_path: Path) -> Iterator[ProtectedResource]:
    protected = ProtectedResource()
    protected.server.start()
    with RunningIssuer(
        tmp_path / "issuer",
        audiences=[AUDIENCE, protected.resource],
        token_lifetime_seconds=2,
    ) as issuer:
        protected.issuer = issuer
        yield protected
    protected.server.stop()


async def test_the_sdk_registers_signs_in_and_refreshes(resource: ProtectedResource) -> None:
    assert resource.issuer is not None
    issuer = resource.issuer
    storage = MemoryStorage()
    browser = ScriptedBrowser(issuer, "alice")
    provider = OAuthClientProvider(
        server_url=resource.resource,
        client_metadata=OAuthClientMetadata(
            redirect_uris=[AnyUrl(CALLBACK)], client_name="MCP SDK test client"
        ),
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=10) as client:
        first = await client.post(resource.resource, json={})
        assert first.status_code == 200, first.text
        assert first.json() == {"sub": "alice"}

        assert storage.client_info is not None
        assert storage.client_info.client_id.startswith("dev-")
        assert storage.client_info.token_endpoint_auth_method == "none"
        (opened,) = browser.opened
        query: dict[str, Any] = parse_qs(urlsplit(opened).query)
        assert query["resource"] == [resource.resource]
        assert query["code_challenge_method"] == ["S256"]
        assert storage.tokens is not None
        first_refresh = storage.tokens.refresh_token
        assert first_refresh is not None
        track(storage.tokens.access_token)
        track(first_refresh)

        await asyncio.sleep(2.2)  # the 2 s access token expires; the SDK refreshes
        second = await client.post(resource.resource, json={})
        assert second.status_code == 200, second.text
        assert storage.tokens.refresh_token not in (None, first_refresh)  # rotated
        track(storage.tokens.access_token)
        track(storage.tokens.refresh_token or "")

    assert len(browser.opened) == 1  # the refresh needed no second sign-in
    assert resource.subjects == ["alice", "alice"]
    assert resource.tokens[0] != resource.tokens[1]
    claims = jwt.decode(resource.tokens[1], options={"verify_signature": False})
    assert claims["aud"] == resource.resource
    assert claims["client_id"] == storage.client_info.client_id
