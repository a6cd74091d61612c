"""A minimal resource server that accepts only the fake IdP's tokens, and can revoke them.

It lets BearerAuth be tested against a real 401 over HTTP rather than a mocked transport.
"""

from __future__ import annotations

import threading

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


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
