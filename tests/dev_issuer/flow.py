"""Driving the issuer's authorization code flow over real HTTP as a client and a user would:
register, open the authorization URL, pick a user on the login page, read the redirect's
``Location`` (redirects are never followed), redeem the code. Every code and token handed out
is tracked for the logs' leak check."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.dev_issuer import RunningIssuer, track
from tests.support.server import ServerThread

REDIRECT_URI = "http://127.0.0.1:53682/callback"
STATE = "st/ä+ &=?#"
"""A ``state`` full of characters that must survive the round trip unchanged."""

_REQUEST_ID = re.compile(r'name="request" value="([^"]+)"')


def pkce() -> tuple[str, str]:
    """A fresh ``(code_verifier, S256 code_challenge)``."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def register(issuer: RunningIssuer, **metadata: Any) -> dict[str, Any]:
    """A public client registered by RFC 7591 (redirect URI :data:`REDIRECT_URI` unless
    given, refresh tokens allowed); ``None`` leaves a member out."""
    body = {
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "client_name": "Flow test client",
    } | metadata
    body = {name: value for name, value in body.items() if value is not None}
    response = httpx.post(f"{issuer.url}/oauth/register", json=body)
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def authorization_params(client_id: str, challenge: str, **extra: str | None) -> dict[str, str]:
    """The query of an authorization request; ``None`` in ``extra`` leaves a parameter out."""
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": STATE,
    }
    params |= extra
    return {name: value for name, value in params.items() if value is not None}


def open_authorization(issuer: RunningIssuer, params: dict[str, str]) -> httpx.Response:
    """``GET /authorize?…`` as the browser does, not following any redirect."""
    return httpx.get(f"{issuer.url}/authorize?{urlencode(params)}", follow_redirects=False)


def request_id(page: httpx.Response) -> str:
    """The sign-in request the login page's forms carry (also when shown again, 400, after
    an unacceptable user name)."""
    assert page.status_code in {200, 400}, page.text
    match = _REQUEST_ID.search(page.text)
    assert match is not None, page.text
    return match.group(1)


def sign_in(
    issuer: RunningIssuer, page: httpx.Response, user: str = "alice", *, field: str = "user"
) -> httpx.Response:
    """Press "Sign in as ``user``" (``field="username"``: type it into the free-text field)."""
    form = {"request": request_id(page), field: user}
    return httpx.post(f"{issuer.url}/authorize", data=form, follow_redirects=False)


def redirected(response: httpx.Response, redirect_uri: str = REDIRECT_URI) -> dict[str, str]:
    """The parameters the client receives at ``redirect_uri`` (each exactly once)."""
    assert response.status_code in {302, 303}, response.text
    location = response.headers["location"]
    base, _, query = location.partition("?")
    assert base == redirect_uri.partition("?")[0], location
    parsed = parse_qs(query, keep_blank_values=True, strict_parsing=True)
    assert all(len(values) == 1 for values in parsed.values()), location
    params = {name: values[0] for name, values in parsed.items()}
    if "code" in params:
        track(params["code"])
    return params


def code_for(
    issuer: RunningIssuer,
    client_id: str,
    user: str = "alice",
    **extra: str | None,
) -> tuple[str, str]:
    """Run the browser part of the flow: ``(code, code_verifier)``."""
    verifier, challenge = pkce()
    page = open_authorization(issuer, authorization_params(client_id, challenge, **extra))
    params = redirected(sign_in(issuer, page, user))
    return params["code"], verifier


def redeem(
    issuer: RunningIssuer,
    client_id: str,
    code: str,
    verifier: str,
    redirect_uri: str = REDIRECT_URI,
    **extra: str,
) -> httpx.Response:
    """``POST /oauth/token`` with the code, as a public client (its ``client_id`` only)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        "client_id": client_id,
    } | extra
    return _tracked(httpx.post(issuer.token_url, data=form))


def refresh(issuer: RunningIssuer, client_id: str, token: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    return _tracked(httpx.post(issuer.token_url, data=form | extra))


def _tracked(response: httpx.Response) -> httpx.Response:
    if response.status_code == 200:
        body = response.json()
        track(body["access_token"])
        if "refresh_token" in body:
            track(body["refresh_token"])
    return response


def error(response: httpx.Response) -> tuple[int, str, str]:
    """``(status, error, error_description)`` of an RFC 6749 §5.2 answer."""
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    return response.status_code, body["error"], body["error_description"]


@dataclass
class Document:
    """What the document server answers at one path."""

    body: Any
    status: int = 200
    headers: dict[str, str] | None = None


class DocumentServer:
    """Client ID Metadata Documents served over real HTTP on 127.0.0.1, as a client hosts
    them; answers can be changed, redirected or broken, and fetches are counted."""

    def __init__(self) -> None:
        self.documents: dict[str, Document] = {}
        self.fetches: dict[str, int] = {}
        self._server = ServerThread(
            Starlette(routes=[Route("/{path:path}", self._serve)]), name="cimd-documents"
        )

    def start(self) -> DocumentServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def url(self, path: str) -> str:
        return f"{self._server.url}/{path}"

    def publish(self, path: str, **metadata: Any) -> str:
        """A valid document for a public client at ``path``; returns its URL (the client_id)."""
        url = self.url(path)
        self.documents[path] = Document(
            {
                "client_id": url,
                "client_name": "Document client",
                "redirect_uris": [REDIRECT_URI],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none",
            }
            | metadata
        )
        return url

    async def _serve(self, request: Request) -> Response:
        path = request.path_params["path"]
        self.fetches[path] = self.fetches.get(path, 0) + 1
        document = self.documents.get(path)
        if document is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        if isinstance(document.body, bytes):
            return Response(document.body, document.status, document.headers)
        return JSONResponse(document.body, document.status, document.headers)


def location_query(response: httpx.Response) -> str:
    """The raw query of a redirect's ``Location``."""
    return urlsplit(response.headers["location"]).query
