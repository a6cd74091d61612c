"""A fault-injecting, Auth0-shaped OAuth2 token endpoint for tests and benchmarks.

Real HTTP (and optionally TLS) on 127.0.0.1 so the client under test exercises its actual
transport, while each answer can be scripted: errors, Retry-After, garbage bodies, delays and
requests that hang until the test releases them.
"""

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import jwt
import trustme
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DEFAULT_CLIENTS: dict[str, str] = {"test-client": "test-secret"}
DEFAULT_SCOPE = "read:notes write:notes"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
_START_TIMEOUT = 10.0


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


@dataclass(frozen=True)
class _Basic:
    """Decoded HTTP Basic credentials; ids are None when the header was malformed."""

    client_id: str | None
    secret: str | None


def _parse_basic(header: str | None) -> _Basic | None:
    """Decode client_secret_basic per RFC 6749 §2.3.1 (urlencoded id and secret)."""
    if header is None:
        return None
    scheme, _, param = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return _Basic(None, None)
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return _Basic(None, None)
    return _Basic(unquote_plus(client_id), unquote_plus(secret))


def _parse_body(raw: bytes, content_type: str) -> tuple[dict[str, str], str | None]:
    """Return the body fields and, if the body is unacceptable, why (for invalid_request)."""
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/json" or mime.endswith("+json"):
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            return {}, "Malformed JSON body"
        if not isinstance(data, dict):
            return {}, "JSON body must be an object"
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}, None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {}, "Body is not UTF-8"
    pairs = parse_qsl(text, keep_blank_values=True)
    form = dict(pairs)
    if len(form) != len(pairs):
        return form, "Parameters must not be repeated"
    if raw and mime != "application/x-www-form-urlencoded":
        return form, f"Unsupported content type: {content_type or '(none)'}"
    return form, None


def _error(
    status: int,
    error: str,
    description: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build an RFC 6749 §5.2 error body."""
    payload = {"error": error}
    if description is not None:
        payload["error_description"] = description
    return JSONResponse(payload, status_code=status, headers=headers)


class IdP:
    """Runs the fake token endpoint in a background thread with its own event loop (uvicorn)."""

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

        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key: rsa.RSAPublicKey = self._private_key.public_key()
        self._kid = secrets.token_hex(8)
        jwk: dict[str, Any] = dict(RSAAlgorithm.to_jwk(self.public_key, as_dict=True))
        jwk.update(kid=self._kid, use="sig", alg="RS256")
        self.jwks: dict[str, Any] = {"keys": [jwk]}

        self._lock = threading.Lock()
        self._script: deque[Reply] = deque()
        self._default = Reply()
        self._requests: list[Seen] = []
        self._issued: list[str] = []

        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_error: BaseException | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        # Loop-owned state; only touched from the server thread.
        self._release_event = asyncio.Event()
        self._closed = asyncio.Event()

    @property
    def port(self) -> int:
        """Bound port; fails loudly instead of yielding a URL with port 0."""
        if self._port is None:
            raise RuntimeError("IdP not started")
        return self._port

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.issuer_host}:{self.port}"

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
        if self._thread is not None:
            raise RuntimeError("IdP already started")
        ssl_files: dict[str, str] = {}
        if self.ca is not None:
            self._tmp = tempfile.TemporaryDirectory(prefix="toolbridge-idp-")
            cert = self.ca.issue_cert("127.0.0.1", "localhost")
            key_path = Path(self._tmp.name, "key.pem")
            cert_path = Path(self._tmp.name, "cert.pem")
            cert.private_key_pem.write_to_path(str(key_path))
            cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
            ssl_files = {"ssl_keyfile": str(key_path), "ssl_certfile": str(cert_path)}
        config = uvicorn.Config(
            self._app(),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            log_config=None,
            access_log=False,
            lifespan="off",
            loop="asyncio",
            ws="none",
            timeout_graceful_shutdown=1,
            **ssl_files,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread_error = None
        self._thread = threading.Thread(
            target=self._run, args=(server,), name="toolbridge-fake-idp", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake IdP failed to start") from self._thread_error
            time.sleep(0.005)
        self._port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop within ~2 s even with hung requests: release them, then force exit if needed."""
        thread, server, loop = self._thread, self._server, self._loop
        if thread is None or server is None:
            return
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._begin_close)
        server.should_exit = True
        thread.join(timeout=1.5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=1.0)
        self._thread = self._server = self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

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
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._release_now)

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._requests)

    @property
    def issued(self) -> list[str]:
        with self._lock:
            return list(self._issued)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._issued.clear()
            self._script.clear()
            self._default = Reply()

    def _run(self, server: uvicorn.Server) -> None:
        """Thread body; keeps exceptions for start() rather than letting pytest see them."""
        try:
            asyncio.run(self._serve(server))
        except BaseException as exc:
            self._thread_error = exc

    async def _serve(self, server: uvicorn.Server) -> None:
        self._release_event = asyncio.Event()
        self._closed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        await server.serve()

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
            ]
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse(self.jwks)

    async def _token(self, request: Request) -> Response:
        at = time.monotonic()
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        form, problem = _parse_body(raw, content_type)
        basic = _parse_basic(request.headers.get("authorization"))
        if basic is not None:
            if "client_secret" in form:
                problem = problem or "Use only one client authentication method"
            auth_method: str | None = "client_secret_basic"
            client_id = basic.client_id
            secret = basic.secret
        else:
            auth_method = "client_secret_post" if "client_secret" in form else None
            client_id = form.get("client_id")
            secret = form.get("client_secret")
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
            auth_method=auth_method,
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
            return _error(
                reply.status, reply.error or "server_error", reply.error_description, extra
            )

        if problem is not None:
            return _error(400, "invalid_request", problem, extra)
        grant_type = form.get("grant_type")
        if grant_type != "client_credentials":
            return _error(
                400, "unsupported_grant_type", f"Unsupported grant type: {grant_type}", extra
            )
        expected = self.clients.get(client_id) if client_id is not None else None
        if (
            expected is None
            or secret is None
            or not hmac.compare_digest(secret.encode(), expected.encode())
        ):
            if basic is not None:
                extra = {**extra, "WWW-Authenticate": 'Basic realm="toolbridge-idp"'}
            return _error(401, "invalid_client", "Client authentication failed", extra)
        assert client_id is not None
        audience = form.get("audience", form.get("resource", self.audience))
        if audience != self.audience:
            return _error(
                403, "access_denied", f"Service not enabled within domain: {audience}", extra
            )
        return self._issue(reply, client_id, audience, form.get("scope") or DEFAULT_SCOPE, extra)

    def _issue(
        self, reply: Reply, client_id: str, audience: str, scope: str, headers: dict[str, str]
    ) -> Response:
        """Mint an Auth0-style M2M access token; jti makes every token distinct."""
        lifetime = reply.expires_in if reply.expires_in is not None else 3600
        if reply.jwt:
            now = int(time.time())
            claims = {
                "iss": f"{self.base_url}/",
                "sub": f"{client_id}@clients",
                "aud": audience,
                "iat": now,
                "exp": now + lifetime,
                "gty": "client-credentials",
                "azp": client_id,
                "scope": scope,
                "jti": uuid.uuid4().hex,
            }
            token = jwt.encode(
                claims, self._private_key, algorithm="RS256", headers={"kid": self._kid}
            )
        else:
            token = secrets.token_urlsafe(32)
        with self._lock:
            self._issued.append(token)
        payload: dict[str, Any] = {"access_token": token, "token_type": reply.token_type}
        if reply.expires_in is not None:
            payload["expires_in"] = reply.expires_in
        payload["scope"] = scope
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        return JSONResponse(payload, headers={**headers, **no_store})
