"""A fault-injecting, Auth0-shaped OAuth2 token endpoint for tests and benchmarks.

Real HTTP (and optionally TLS) on 127.0.0.1 so the client under test exercises its actual
transport, while each answer can be scripted: errors, Retry-After, garbage bodies, delays and
requests that hang until the test releases them.
"""

import asyncio
import contextlib
import hmac
import secrets
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.server import ServerThread
from toolbridge_dev.issuer.keys import SigningKey
from toolbridge_dev.issuer.oauth import client_credentials, error_response, parse_body
from toolbridge_dev.issuer.tokens import mint_client_token

DEFAULT_CLIENTS: dict[str, str] = {"test-client": "test-secret"}
DEFAULT_SCOPE = "read:notes write:notes"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})


@dataclass
class Reply:
    """One scripted answer; the defaults issue a normal one-hour JWT."""

    status: int = 200
    expires_in: int | None = 3600
    jwt: bool = True
    token_type: str = "Bearer"
    error: str | None = None
    error_description: str | None = None
    retry_after: str | None = None
    body: str | None = None
    hang: bool = False
    delay: float = 0.0
    fields: dict[str, Any] | None = None
    """More members of a successful answer (``refresh_in``, ...)."""
    granted_scope: str | None = None
    """The scope granted, when it differs from the one asked for."""


@dataclass(frozen=True)
class Seen:
    """One recorded token request, captured before the reply is chosen."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    content_type: str
    client_id: str | None
    auth_method: str | None


class IdP:
    """The fake token endpoint, served by a :class:`ServerThread` (uvicorn, own event loop)."""

    def __init__(
        self,
        *,
        clients: dict[str, str] | None = None,
        audience: str = "https://api.toolbridge.test",
        tls: bool = False,
        issuer_host: str = "127.0.0.1",
    ) -> None:
        if issuer_host not in _LOOPBACK_HOSTS:
            raise ValueError(f"issuer_host must be loopback, got {issuer_host!r}")
        self.clients = dict(DEFAULT_CLIENTS if clients is None else clients)
        self.audience = audience
        self.tls = tls
        self.issuer_host = issuer_host
        self.ca: trustme.CA | None = trustme.CA() if tls else None

        self._key = self._first_key = SigningKey.generate()
        self.public_key: rsa.RSAPublicKey = self._key.public_key
        """The first key's public half (what :meth:`reset` signs with again)."""
        self.jwks: dict[str, Any] = {"keys": [self._key.public_jwk()]}

        self._lock = threading.Lock()
        self._script: deque[Reply] = deque()
        self._default = Reply()
        self._requests: list[Seen] = []
        self._issued: list[str] = []
        self._busy = 0
        self._metadata: dict[str, Any] | None = None
        self._metadata_paths: tuple[str, ...] | None = None
        self._metadata_fetches: list[str] = []

        self._server = ServerThread(
            self._app(), tls_ca=self.ca, on_close=self._begin_close, name="toolbridge-fake-idp"
        )
        # Loop-owned state; only touched from the server thread once started.
        self._release_event = asyncio.Event()
        self._closed = asyncio.Event()

    @property
    def port(self) -> int:
        """Bound port; fails loudly instead of yielding a URL with port 0."""
        try:
            return self._server.port
        except RuntimeError:
            raise RuntimeError("IdP not started") from None

    @property
    def base_url(self) -> str:
        return f"{self._server.scheme}://{self.issuer_host}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/token"

    @property
    def domain(self) -> str:
        """Host:port for Auth0 "domain" mode, which always builds https://{domain}/oauth/token."""
        return f"{self.issuer_host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this IdP's throwaway CA."""
        if self.ca is None:
            raise RuntimeError("ssl_context() needs IdP(tls=True)")
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def start(self) -> "IdP":
        """Bind 127.0.0.1 on a free port and return once the server accepts connections."""
        if self._server.running:
            raise RuntimeError("IdP already started")
        # asyncio.Event binds to a loop on first wait, so a restarted server needs new ones.
        self._release_event = asyncio.Event()
        self._closed = asyncio.Event()
        try:
            self._server.start()
        except RuntimeError as exc:
            raise RuntimeError("fake IdP failed to start") from exc.__cause__
        return self

    def stop(self) -> None:
        """Stop within ~2 s even with hung requests: release them, then force exit if needed."""
        self._server.stop()

    def __enter__(self) -> "IdP":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *replies: Reply) -> None:
        """Queue replies; each token request consumes one, then the default applies."""
        with self._lock:
            self._script.extend(replies)

    def set_default(self, reply: Reply) -> None:
        with self._lock:
            self._default = reply

    def release(self) -> None:
        """Wake every request hanging right now (later hang replies hang again)."""
        self._server.call_soon(self._release_now)

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._requests)

    @property
    def issued(self) -> list[str]:
        with self._lock:
            return list(self._issued)

    @property
    def issuer(self) -> str:
        """The ``iss`` of its tokens: the base URL with a trailing slash (as Auth0's)."""
        return f"{self.base_url}/"

    def metadata(self) -> dict[str, Any]:
        """The RFC 8414 / OpenID metadata it serves (unless :meth:`set_metadata` replaced it)."""
        with self._lock:
            if self._metadata is not None:
                return dict(self._metadata)
        return {
            "issuer": self.issuer,
            "token_endpoint": self.token_url,
            "jwks_uri": f"{self.base_url}/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        }

    def set_metadata(
        self, document: dict[str, Any] | None, *, paths: tuple[str, ...] | None = None
    ) -> None:
        """Serve ``document`` at both well-known paths, or only at ``paths`` (``{}``: answer
        404); ``None``: the default document again."""
        with self._lock:
            self._metadata = document
            self._metadata_paths = paths

    @property
    def metadata_fetches(self) -> list[str]:
        """The paths of the metadata requests it answered."""
        with self._lock:
            return list(self._metadata_fetches)

    def rotate_key(self) -> None:
        """Sign new tokens with a new key, published next to the old one (key rotation)."""
        key = SigningKey.generate()
        with self._lock:
            self._key = key
            self.jwks = {"keys": [key.public_jwk(), *self.jwks["keys"]]}

    def fetch_token(self, client_id: str, secret: str, audience: str | None = None) -> str:
        """A real access token over HTTP, as a static or per-user token would be obtained."""
        response = httpx.post(
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
                "audience": audience or self.audience,
            },
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    def drain(self, timeout: float = 3.0) -> None:
        """Release hanging requests and wait until every request has been answered, so a
        late answer cannot issue a token after the next test's reset()."""
        deadline = time.monotonic() + timeout
        while True:
            self.release()
            with self._lock:
                if self._busy == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("fake IdP still answering requests after drain()")
            time.sleep(0.005)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._issued.clear()
            self._script.clear()
            self._default = Reply()
            self._metadata = None
            self._metadata_paths = None
            self._metadata_fetches.clear()
            self._key = self._first_key
            self.jwks = {"keys": [self._first_key.public_jwk()]}

    def _release_now(self) -> None:
        event, self._release_event = self._release_event, asyncio.Event()
        event.set()

    def _begin_close(self) -> None:
        self._closed.set()
        self._release_now()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but cut short by stop() so shutdown stays prompt."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closed.wait()

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/oauth/token", self._token, methods=["POST"]),
                Route("/.well-known/jwks.json", self._jwks, methods=["GET"]),
                Route("/.well-known/oauth-authorization-server", self._meta, methods=["GET"]),
                Route("/.well-known/openid-configuration", self._meta, methods=["GET"]),
            ]
        )

    async def _jwks(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse(self.jwks)

    async def _meta(self, request: Request) -> Response:
        with self._lock:
            self._metadata_fetches.append(request.url.path)
            paths = self._metadata_paths
        document = self.metadata()
        if not document or (paths is not None and request.url.path not in paths):
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse(document)

    async def _token(self, request: Request) -> Response:
        """Counts requests in progress, so a test can wait until none is left (drain)."""
        with self._lock:
            self._busy += 1
        try:
            return await self._answer(request)
        finally:
            with self._lock:
                self._busy -= 1

    async def _answer(self, request: Request) -> Response:
        at = time.monotonic()
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        form, problem = parse_body(raw, content_type)
        credentials = client_credentials(form, request.headers.get("authorization"))
        problem = problem or credentials.problem
        client_id, secret = credentials.client_id, credentials.secret
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        seen = Seen(
            at=at,
            method=request.method,
            path=request.url.path,
            headers=headers,
            form=form,
            content_type=content_type,
            client_id=client_id,
            auth_method=credentials.method,
        )
        with self._lock:
            self._requests.append(seen)
            reply = self._script.popleft() if self._script else self._default

        # No await between recording and waiting, so release() after seeing the request works.
        if reply.hang and not self._closed.is_set():
            await self._release_event.wait()
        if reply.delay > 0:
            await self._pause(reply.delay)

        extra = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
        if reply.body is not None:
            return Response(
                reply.body, status_code=reply.status, media_type="text/html", headers=extra
            )
        if reply.status != 200:
            return error_response(
                reply.status, reply.error or "server_error", reply.error_description, extra
            )

        if problem is not None:
            return error_response(400, "invalid_request", problem, extra)
        grant_type = form.get("grant_type")
        if grant_type != "client_credentials":
            return error_response(
                400, "unsupported_grant_type", f"Unsupported grant type: {grant_type}", extra
            )
        expected = self.clients.get(client_id) if client_id is not None else None
        if (
            expected is None
            or secret is None
            or not hmac.compare_digest(secret.encode(), expected.encode())
        ):
            if credentials.method == "client_secret_basic":
                extra = {**extra, "WWW-Authenticate": 'Basic realm="toolbridge-idp"'}
            return error_response(401, "invalid_client", "Client authentication failed", extra)
        assert client_id is not None
        audience = form.get("audience", form.get("resource", self.audience))
        if audience != self.audience:
            return error_response(
                403, "access_denied", f"Service not enabled within domain: {audience}", extra
            )
        return self._issue(reply, client_id, audience, form.get("scope") or DEFAULT_SCOPE, extra)

    def _issue(
        self, reply: Reply, client_id: str, audience: str, scope: str, headers: dict[str, str]
    ) -> Response:
        """Mint an Auth0-style M2M access token; jti makes every token distinct."""
        lifetime = reply.expires_in if reply.expires_in is not None else 3600
        scope = reply.granted_scope if reply.granted_scope is not None else scope
        with self._lock:
            key = self._key
        if reply.jwt:
            token = mint_client_token(
                key,
                issuer=f"{self.base_url}/",
                client_id=client_id,
                audience=audience,
                lifetime_seconds=lifetime,
                scope=scope,
            ).token
        else:
            token = secrets.token_urlsafe(32)
        with self._lock:
            self._issued.append(token)
        payload: dict[str, Any] = {"access_token": token, "token_type": reply.token_type}
        if reply.expires_in is not None:
            payload["expires_in"] = reply.expires_in
        payload["scope"] = scope
        payload |= reply.fields or {}
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        return JSONResponse(payload, headers={**headers, **no_store})
