"""What the MCP server's HTTP transports answer to, and where they may listen.

DNS rebinding: a web page on ``evil.example`` whose name is re-pointed at 127.0.0.1 talks to
a loopback MCP server as the page's own origin, and in service mode (client credentials or
a static token: no caller authentication) it would call every tool as the service identity.
The MCP transport spec says servers MUST validate ``Origin``; :class:`HostOriginGuard` does,
and ``Host`` too, on every route of every HTTP transport (streamable HTTP and SSE), before
anything else runs:

- ``Host`` must name this server: ``localhost``, ``127.0.0.1`` or ``[::1]`` at the bound port,
  the address the connection arrived at (a health checker connecting by IP), the host of
  ``TOOLBRIDGE_PUBLIC_URL``, or one of ``TOOLBRIDGE_ALLOWED_HOSTS``; else ``421``.
- ``Origin``, when sent (browsers do; other clients need not), must be this server's own
  origin (same as ``Host``, a loopback name at the bound port, the public URL's origin) or one
  of ``TOOLBRIDGE_ALLOWED_ORIGINS``; else ``403``.

FastMCP's own guard (``host_origin_protection``) is left off: it lets a page from any
loopback port through, answers a bare ``Misdirected Request`` naming no setting, and in its
default mode checks nothing on a non-loopback bind.

:func:`exposure_problem` refuses to listen beyond loopback in service mode unless the
operator opts in (``TOOLBRIDGE_ALLOW_UNAUTHENTICATED_NETWORK``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastmcp import FastMCP
from loguru import logger
from starlette.middleware import Middleware

from toolbridge_common.settings import is_loopback_host

if TYPE_CHECKING:
    from fastmcp.server.http import StarletteWithLifespan
    from starlette.types import ASGIApp, Receive, Scope, Send

    from toolbridge_mcp.config import Settings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SHOWN = 100


@dataclass(frozen=True, slots=True)
class _Address:
    host: str
    """Lower case, IPv6 without brackets; may be an fnmatch pattern (``*.example.com``)."""
    port: int | None
    """``None``: any port."""

    @classmethod
    def parse(cls, text: str, *, default_port: int | None = None) -> _Address | None:
        """``name``, ``name:port``, ``[v6]:port``; ``None`` if it is none of them."""
        text = text.strip()
        if not text or any(c in text for c in "/?#@\\ \t"):
            return None
        try:
            parts = urlsplit(f"//{text}")
            port = parts.port
        except ValueError:
            return None
        host = parts.hostname
        if not host:
            return None
        return cls(host.lower(), port if port is not None else default_port)

    def matches(self, host: str, port: int | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        return self.host == "*" or fnmatchcase(host, self.host)


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int | None

    @classmethod
    def parse(cls, text: str) -> _Origin | None:
        try:
            parts = urlsplit(text.strip())
            port = parts.port
        except ValueError:
            return None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
            return None
        return cls(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme])


def split_list(value: str | None) -> list[str]:
    """A setting's list: comma and/or whitespace separated."""
    return [item for item in (value or "").replace(",", " ").split() if item]


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """What :class:`HostOriginGuard` accepts besides loopback names at the bound port."""

    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    public_url: str | None = None
    default_port: int = 8001
    """The port to assume when the ASGI server does not say which it is bound to."""

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardConfig:
        hosts = split_list(settings.allowed_hosts)
        if not _is_unspecified(settings.host):
            hosts.append(settings.host if ":" not in settings.host else f"[{settings.host}]")
        return cls(
            allowed_hosts=tuple(hosts),
            allowed_origins=tuple(split_list(settings.allowed_origins)),
            public_url=settings.public_url,
            default_port=settings.port,
        )


class HostOriginGuard:
    """ASGI middleware refusing requests whose ``Host`` or ``Origin`` is not this server's
    (see the module docstring). WebSocket and lifespan scopes pass untouched (none served)."""

    def __init__(self, app: ASGIApp, config: GuardConfig) -> None:
        self.app = app
        self.config = config
        hosts = [_Address.parse(item) for item in config.allowed_hosts]
        self._hosts = [h for h in hosts if h is not None]
        self._any_origin = "*" in config.allowed_origins
        origins = [_Origin.parse(item) for item in config.allowed_origins]
        self._origins = {o for o in origins if o is not None}
        public = _Origin.parse(config.public_url) if config.public_url else None
        if public is not None:
            self._origins.add(public)
            self._hosts.append(_Address(public.host, None))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self.problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        logger.warning("Refused {} {}: {}", scope.get("method"), scope.get("path"), message)
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def problem(self, scope: Scope) -> tuple[int, str] | None:
        """``(status, message)`` for a request to refuse, ``None`` to let it through."""
        headers = _headers(scope["headers"])
        server = scope.get("server")
        bound_port = server[1] if server and server[1] else self.config.default_port
        scheme = str(scope.get("scheme", "http"))
        raw_host = headers.get("host", [""])
        host = _Address.parse(raw_host[0], default_port=_DEFAULT_PORTS.get(scheme))
        if len(raw_host) != 1 or host is None or not self._host_allowed(host, server, bound_port):
            shown = _show(raw_host[0] if raw_host else "")
            return (
                421,
                f"Host {shown} is not one this MCP server answers to (DNS rebinding "
                f"protection): it answers to localhost, 127.0.0.1 and [::1] at port "
                f"{bound_port}, the host of TOOLBRIDGE_PUBLIC_URL and TOOLBRIDGE_ALLOWED_HOSTS. "
                "If clients reach it by this name, add the name to TOOLBRIDGE_ALLOWED_HOSTS",
            )
        origins = headers.get("origin")
        if origins is None:
            return None  # not a browser
        origin = _Origin.parse(origins[0]) if len(origins) == 1 else None
        if origin is None or not self._origin_allowed(origin, host, bound_port):
            return (
                403,
                f"Origin {_show(origins[0])} may not call this MCP server (a web page of "
                "another site; DNS rebinding protection). Allowed: this server's own origin, "
                "TOOLBRIDGE_PUBLIC_URL and TOOLBRIDGE_ALLOWED_ORIGINS; add a browser client's "
                "origin there (e.g. http://localhost:6274 for the MCP Inspector)",
            )
        return None

    def _host_allowed(self, host: _Address, server: Any, bound_port: int) -> bool:
        if host.host in LOOPBACK_NAMES and host.port == bound_port:
            return True
        if server and server[0] and not _is_unspecified(server[0]):
            local = str(server[0]).lower()
            if host.host == local and host.port == bound_port:
                return True  # the address the connection arrived at: no name to rebind
        return any(allowed.matches(host.host, host.port) for allowed in self._hosts)

    def _origin_allowed(self, origin: _Origin, host: _Address, bound_port: int) -> bool:
        if self._any_origin or origin in self._origins:
            return True
        if origin.host == host.host and origin.port == host.port:
            return True  # same origin as the (allowed) Host
        return origin.host in LOOPBACK_NAMES and origin.port == bound_port


class GuardedFastMCP(FastMCP[Any]):
    """FastMCP whose every HTTP app (``http_app``, and so ``run``/``run_http_async`` on
    either HTTP transport) has :class:`HostOriginGuard` in front of every route, and whose
    streamable-HTTP apps are stateless when ``stateless_http`` (``TOOLBRIDGE_STATELESS_HTTP``;
    FastMCP's own ``FASTMCP_STATELESS_HTTP`` still turns it on too)."""

    def __init__(
        self, *args: Any, guard: GuardConfig, stateless_http: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.stateless_http = stateless_http

    def http_app(self, *args: Any, **kwargs: Any) -> StarletteWithLifespan:
        if len(args) > 1:
            raise TypeError("pass http_app's arguments after path by keyword")
        if self.stateless_http and kwargs.get("transport", "http") != "sse":
            kwargs["stateless_http"] = True
        middleware = list(kwargs.pop("middleware", None) or [])
        guard = Middleware(HostOriginGuard, config=self.guard)
        kwargs["middleware"] = [guard, *middleware]
        return super().http_app(*args, **kwargs)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        if key in ("host", "origin"):
            found.setdefault(key, []).append(value.decode("latin-1"))
    return found


def _show(value: str) -> str:
    """An attacker's header, safe to log and echo: printable, short, quoted."""
    text = "".join(c if c.isprintable() else "?" for c in value[:_SHOWN])
    return repr(text + ("..." if len(value) > _SHOWN else ""))


def _is_unspecified(host: str) -> bool:
    host = host.strip("[]")
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


# --- where the server may listen -----------------------------------------------------------


def exposure_problem(settings: Settings) -> str | None:
    """Why the HTTP transports must not listen on ``settings.host``, or ``None``.

    Beyond loopback, anyone who can reach the port could call every tool as the service
    identity unless callers authenticate: the per-user modes make them (each caller's own
    token), service mode (client credentials, a static token) does not."""
    if is_loopback_host(settings.host.strip("[]")) or settings.allow_unauthenticated_network:
        return None
    mode = settings.outbound_mode()
    if mode.per_user:
        return None
    return (
        f"TOOLBRIDGE_HOST={settings.host} would let anyone who can reach port {settings.port} "
        f"call every tool as this server's service identity: in {mode.name} mode MCP callers "
        "are not authenticated. Listen on 127.0.0.1 (the default) behind an authenticating "
        "proxy, turn on per-user mode (TOOLBRIDGE_OAUTH_ISSUER), or accept the risk with "
        "TOOLBRIDGE_ALLOW_UNAUTHENTICATED_NETWORK=true"
    )


def exposure_warning(settings: Settings) -> str | None:
    """The startup warning when the operator has accepted that risk."""
    if is_loopback_host(settings.host.strip("[]")) or settings.outbound_mode().per_user:
        return None
    return (
        f"Listening on {settings.host}:{settings.port} WITHOUT authenticating MCP callers "
        f"({settings.outbound_mode().name} mode, TOOLBRIDGE_ALLOW_UNAUTHENTICATED_NETWORK=true): "
        "anyone who can reach this port can read, change and delete this tenant's data as the "
        "service identity. Restrict who can reach it (firewall, private network, "
        "authenticating proxy)"
    )


# --- what a client may make the server hold ------------------------------------------------


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings for the HTTP transports, with limits on what a client may make the
    server hold. uvicorn's default parser (httptools, when installed) buffers headers of any
    size: a 64 MB header grew the server by tens of MB it never gave back. h11 refuses a
    request line plus headers beyond ``TOOLBRIDGE_MAX_HEADER_BYTES`` as its buffer passes
    that size (which also bounds the header count) and closes the connection; at most
    ``TOOLBRIDGE_MAX_CONCURRENT_CONNECTIONS`` connections and requests at once (503 beyond);
    idle keep-alive connections close after 5 s. Bodies are limited by the MCP SDK (4 MiB,
    413) on both transports."""
    return {
        "log_config": None,  # uvicorn's lines go through our log format
        "http": "h11",
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "limit_concurrency": settings.max_concurrent_connections,
        "timeout_keep_alive": 5,
        "server_header": False,
        "proxy_headers": False,
    }
