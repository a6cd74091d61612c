"""Minimal resource servers for tests of the client side over real HTTP.

:class:`ApiStub` accepts only the fake IdP's tokens and can revoke them, so BearerAuth meets
a real 401 rather than a mocked transport. :class:`TenantRefusingApi` answers everything as
the Go API answers a tenant-header failure: a plain-text 401 without a challenge.
"""

from __future__ import annotations

import threading

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


class ApiStub:
    """``GET /whoami`` answers 200 ``{"sub": ...}`` for a valid RS256 JWT, 401 otherwise.

    ``revoked`` and ``reject_all`` are set by the test; the server thread only reads them.
    """

    def __init__(self, public_key: rsa.RSAPublicKey, *, audience: str) -> None:
        self.public_key = public_key
        self.audience = audience
        self.revoked: set[str] = set()
        self.reject_all = False
        self._lock = threading.Lock()
        self._authorizations: list[str | None] = []
        self.app = Starlette(
            routes=[
                Route("/whoami", self._whoami, methods=["GET"]),
                Route("/forbidden", self._forbidden, methods=["GET"]),
            ]
        )

    @property
    def authorizations(self) -> list[str | None]:
        """The Authorization header of every request, in arrival order."""
        with self._lock:
            return list(self._authorizations)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._authorizations)

    def reset(self) -> None:
        with self._lock:
            self._authorizations.clear()
        self.revoked.clear()
        self.reject_all = False

    async def _forbidden(self, request: Request) -> Response:
        """A valid token without permission: 403, which a new token would not change."""
        with self._lock:
            self._authorizations.append(request.headers.get("authorization"))
        return JSONResponse({"error": "forbidden"}, status_code=403)

    async def _whoami(self, request: Request) -> Response:
        header = request.headers.get("authorization")
        with self._lock:
            self._authorizations.append(header)
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _unauthorized(None)
        if self.reject_all or token in self.revoked:
            return _unauthorized("The access token has been revoked")
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                audience=self.audience,
                options={"require": ["exp", "aud", "sub"]},
            )
        except jwt.InvalidTokenError:
            return _unauthorized("The access token is invalid")
        return JSONResponse({"sub": claims["sub"]})


def _unauthorized(description: str | None) -> Response:
    """RFC 6750 §3: a bare challenge without credentials, ``invalid_token`` with bad ones."""
    challenge = 'Bearer realm="toolbridge-api"'
    if description is not None:
        challenge += f', error="invalid_token", error_description="{description}"'
    return Response(status_code=401, headers={"WWW-Authenticate": challenge})


GO_TENANT_REFUSAL = "Unauthorized: invalid tenant headers\n"
"""The Go API's body for every tenant-header failure (``http.Error``: text/plain, 401)."""


class TenantRefusingApi:
    """An ASGI app answering every request like the Go API with a wrong tenant secret:
    ``401``, ``text/plain; charset=utf-8``, ``Unauthorized: invalid tenant headers``, no
    ``WWW-Authenticate``. Counts the requests and keeps their tenant headers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[tuple[str, str, dict[str, str]]] = []

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        """(method, path, X-TB-* headers) of every request, in arrival order."""
        with self._lock:
            return list(self._seen)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        tenant = {k: v for k, v in request.headers.items() if k.lower().startswith("x-tb-")}
        with self._lock:
            self._seen.append((request.method, request.url.path, tenant))
        response = PlainTextResponse(
            GO_TENANT_REFUSAL,
            status_code=401,
            headers={"X-Content-Type-Options": "nosniff"},
        )
        await response(scope, receive, send)
