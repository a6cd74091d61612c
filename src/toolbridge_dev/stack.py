"""``toolbridge-mcp dev``: the whole system on one machine, for development only.

Starts the dev identity provider, the ToolBridge API on SQLite and the MCP server as child
processes, each configured only through its environment, as a deployment configures it, and
wired together with secrets generated for this run. The MCP server therefore fetches and
refreshes its tokens exactly as it would from Auth0. Children run in their own session so the
terminal's Ctrl-C reaches only this supervisor, which stops them in order (MCP server, API,
issuer) and waits for each; on Linux they also die with the supervisor if it is killed.

With ``--replicas N`` (a fleet, ADR 0005) it runs N MCP servers in stateless HTTP mode and
``--api-processes M`` API processes on free loopback ports, sharing Redis, behind an HAProxy
child that answers on the public MCP and API ports, round-robin and without sticky sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TextIO, cast

import httpx

from toolbridge_common.redis_urls import redacted_url, redis_client, redis_url_problem

HOST = "127.0.0.1"
CLIENT_ID = "toolbridge-dev-mcp"
TENANT_ID = "dev"
AUDIENCE = "https://api.toolbridge.local"
INSPECTOR_ORIGINS = ("http://localhost:6274", "http://127.0.0.1:6274")
"""Where the MCP Inspector's page runs (``npx @modelcontextprotocol/inspector``)."""
DEMO_USER = "alice"
"""Whose demo data ``--seed-demo`` creates in per-user mode (the user the hint mints for)."""
STOP_GRACE_SECONDS = 8.0
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REPLICA_HEADER = "X-Toolbridge-Replica"
"""Set by the fleet's load balancer on every response: the name of the replica that served
it (``mcp-2``, ``api-1``), so a developer sees requests spread."""
NO_HAPROXY = "haproxy not found: install it (apt-get install haproxy) or run without --replicas"
_PR_SET_PDEATHSIG = 1


class DevStackError(RuntimeError):
    """The stack cannot start or keep running; the message says what to change."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class DevOptions:
    """What ``toolbridge-mcp dev`` was asked for."""

    state_dir: Path = Path(".toolbridge")
    mcp_port: int = 8001
    api_port: int = 8081
    issuer_port: int = 8090
    token_lifetime: int = 120
    seed_demo: bool = False
    per_user: bool = False
    startup_timeout: float = 30.0
    log_level: str = "INFO"
    replicas: int | None = None
    """MCP servers behind the load balancer; ``None`` (and no ``api_processes``): no fleet."""
    api_processes: int | None = None
    """API processes behind the load balancer; ``None``: one, in a fleet."""
    redis_url: str = DEFAULT_REDIS_URL
    """The fleet's shared Redis (token cache, rate limits)."""
    database_url: str | None = None
    """The API's database; ``None``: the SQLite file in the state folder."""
    api_rate_limit: int | None = None
    """Per-user API requests per window (and burst); ``None``: the production limit."""

    @property
    def fleet(self) -> bool:
        """Replicas behind HAProxy (``--replicas`` or ``--api-processes`` given)."""
        return self.replicas is not None or self.api_processes is not None

    @property
    def mcp_url(self) -> str:
        return f"http://{HOST}:{self.mcp_port}/mcp"

    @property
    def issuer_url(self) -> str:
        return f"http://{HOST}:{self.issuer_port}/"


class Start(Enum):
    """When a component starts."""

    AT_ONCE = "at once"
    AFTER_MIGRATION = "after migration"
    """Once ``toolbridge-api migrate`` has run with its environment: a fleet's API processes,
    which would otherwise race to create the schema."""
    WHEN_READY = "when the others are ready"
    """The load balancer: its health checks then find every replica up from the start."""


@dataclass(frozen=True)
class Component:
    """One child process: how to start it, where it listens, how to tell it is ready."""

    name: str
    title: str
    command: tuple[str, ...]
    env: dict[str, str] = field(repr=False)
    port: int
    port_flag: str | None
    """The flag that moves ``port``; ``None`` for a free port the stack picked itself."""
    ready_url: str
    show_url: str
    note: str
    more_ports: tuple[tuple[int, str | None], ...] = ()
    """Further ports it listens on, each with its flag (the load balancer's)."""
    starts: Start = field(default_factory=lambda: Start.AT_ONCE)

    def ports(self) -> list[tuple[int, str | None]]:
        return [(self.port, self.port_flag), *self.more_ports]


@dataclass(frozen=True)
class FleetLayout:
    """Where the fleet's processes listen: free loopback ports, picked once per start."""

    api_ports: tuple[int, ...]
    mcp_ports: tuple[int, ...]
    stats_port: int

    @classmethod
    def pick(cls, options: DevOptions) -> FleetLayout:
        ports = free_ports((options.api_processes or 1) + (options.replicas or 1) + 1)
        apis = options.api_processes or 1
        return cls(tuple(ports[:apis]), tuple(ports[apis:-1]), ports[-1])

    @property
    def stats_url(self) -> str:
        return f"http://{HOST}:{self.stats_port}/stats"


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free now (all held open until each is known)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _python(module: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", module, *args)


def _base_env() -> dict[str, str]:
    """The caller's environment without any ``TOOLBRIDGE_*`` setting, so a real Auth0
    configuration in the shell cannot half-configure the dev stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def plan(
    options: DevOptions, state_dir: Path, layout: FleetLayout | None = None
) -> list[Component]:
    """The components in start order, wired with fresh secrets for this run: the issuer, the
    API and the MCP server; in a fleet (``layout``) the API processes, the MCP replicas and
    the load balancer in front of both."""
    client_secret = secrets.token_urlsafe(32)
    tenant_secret = secrets.token_hex(32)
    issuer = f"http://{HOST}:{options.issuer_port}"
    api = f"http://{HOST}:{options.api_port}"
    base = _base_env()
    issuer_component = Component(
        name="issuer",
        title="dev issuer",
        command=_python("toolbridge_dev.issuer", "serve"),
        env=base
        | {
            "TOOLBRIDGE_DEV_ISSUER_HOST": HOST,
            "TOOLBRIDGE_DEV_ISSUER_PORT": str(options.issuer_port),
            "TOOLBRIDGE_DEV_ISSUER_STATE_DIR": str(state_dir / "issuer"),
            "TOOLBRIDGE_DEV_ISSUER_TOKEN_LIFETIME_SECONDS": str(options.token_lifetime),
            "TOOLBRIDGE_DEV_ISSUER_AUDIENCES": json.dumps(_audiences(options)),
            "TOOLBRIDGE_DEV_ISSUER_CLIENTS": json.dumps({CLIENT_ID: client_secret}),
            "TOOLBRIDGE_DEV_ISSUER_LOG_LEVEL": options.log_level,
        },
        port=options.issuer_port,
        port_flag="--issuer-port",
        ready_url=f"{issuer}/.well-known/openid-configuration",
        show_url=f"{issuer}/",
        note=f"tokens last {options.token_lifetime} s",
    )
    api_env = base | {
        "TOOLBRIDGE_API_HOST": HOST,
        "TOOLBRIDGE_API_DATABASE_URL": _database_url(options, state_dir),
        "TOOLBRIDGE_API_JWKS_URL": f"{issuer}/.well-known/jwks.json",
        "TOOLBRIDGE_API_ISSUER": f"{issuer}/",
        "TOOLBRIDGE_API_AUDIENCE": AUDIENCE,
        "TOOLBRIDGE_API_TENANT_SECRET": tenant_secret,
        "TOOLBRIDGE_API_LOG_LEVEL": options.log_level,
    }
    if options.per_user:
        api_env |= _exchange_env(options, state_dir)
    if options.api_rate_limit is not None:
        limit = str(options.api_rate_limit)
        api_env |= {
            "TOOLBRIDGE_API_RATE_LIMIT_REQUESTS": limit,
            "TOOLBRIDGE_API_RATE_LIMIT_BURST": limit,
        }
    mcp_env = base | {
        "TOOLBRIDGE_HOST": HOST,
        "TOOLBRIDGE_GO_API_BASE_URL": api,
        "TOOLBRIDGE_TENANT_ID": TENANT_ID,
        "TOOLBRIDGE_TENANT_HEADER_SECRET": tenant_secret,
        "TOOLBRIDGE_LOG_LEVEL": options.log_level,
        # The MCP Inspector's page calls the server from its own origin.
        "TOOLBRIDGE_ALLOWED_ORIGINS": " ".join(INSPECTOR_ORIGINS),
    }
    mcp_env |= (
        _per_user_env(options, issuer) if options.per_user else _client_env(issuer, client_secret)
    )
    mcp_note = (
        "streamable HTTP, users sign in at the dev issuer"
        if options.per_user
        else "streamable HTTP, first token fetched"
    )
    database_note = (
        f"SQLite {state_dir / 'api.db'}"
        if options.database_url is None
        else f"database {redacted_url(options.database_url)}"
    )
    if layout is None:
        return [
            issuer_component,
            Component(
                name="api",
                title="API",
                command=_python("toolbridge_api", "serve"),
                env=api_env | {"TOOLBRIDGE_API_PORT": str(options.api_port)},
                port=options.api_port,
                port_flag="--api-port",
                ready_url=f"{api}/healthz",
                show_url=api,
                note=f"{database_note}, docs at {api}/docs",
            ),
            Component(
                name="mcp",
                title="MCP server",
                command=_python("toolbridge_mcp.cli", "serve"),
                env=mcp_env | {"TOOLBRIDGE_PORT": str(options.mcp_port)},
                port=options.mcp_port,
                port_flag="--port",
                ready_url=f"http://{HOST}:{options.mcp_port}/healthz",
                show_url=options.mcp_url,
                note=mcp_note,
            ),
        ]
    shared = {"TOOLBRIDGE_REDIS_URL": options.redis_url}
    apis = [
        Component(
            name=f"api-{number}",
            title=f"API {number}",
            command=_python("toolbridge_api", "serve"),
            env=api_env | shared | {"TOOLBRIDGE_API_PORT": str(port)},
            port=port,
            port_flag=None,
            ready_url=f"http://{HOST}:{port}/healthz",
            show_url=f"http://{HOST}:{port}",
            note=database_note,
            starts=Start.AFTER_MIGRATION,
        )
        for number, port in enumerate(layout.api_ports, 1)
    ]
    replica_env = mcp_env | shared | _replica_env(options)
    replicas = [
        Component(
            name=f"mcp-{number}",
            title=f"MCP server {number}",
            command=_python("toolbridge_mcp.cli", "serve"),
            env=replica_env | {"TOOLBRIDGE_PORT": str(port)},
            port=port,
            port_flag=None,
            ready_url=f"http://{HOST}:{port}/healthz",
            show_url=f"http://{HOST}:{port}/mcp",
            note=f"stateless {mcp_note}",
        )
        for number, port in enumerate(layout.mcp_ports, 1)
    ]
    haproxy = shutil.which("haproxy") or "haproxy"
    balancer = Component(
        name="lb",
        title="load balancer",
        command=(haproxy, "-db", "-f", str(state_dir / "haproxy.cfg")),
        env=base,
        port=options.mcp_port,
        port_flag="--port",
        more_ports=((options.api_port, "--api-port"), (layout.stats_port, None)),
        ready_url=f"http://{HOST}:{options.mcp_port}/healthz",
        show_url=options.mcp_url,
        note=f"HAProxy, round-robin over {len(replicas)} MCP servers and {len(apis)} API "
        f"processes (API at {api}), stats at {layout.stats_url}",
        starts=Start.WHEN_READY,
    )
    return [issuer_component, *apis, *replicas, balancer]


def _database_url(options: DevOptions, state_dir: Path) -> str:
    return options.database_url or f"sqlite+aiosqlite:///{state_dir / 'api.db'}"


def _replica_env(options: DevOptions) -> dict[str, str]:
    """An MCP replica behind the balancer: stateless HTTP, so any replica answers any request
    (ADR 0005), and it answers to the balancer's address, which clients use."""
    public = f"http://{HOST}:{options.mcp_port}"
    return {
        "TOOLBRIDGE_STATELESS_HTTP": "true",
        "TOOLBRIDGE_PUBLIC_URL": public,
        "TOOLBRIDGE_ALLOWED_HOSTS": f"localhost:{options.mcp_port}",
    }


def haproxy_config(options: DevOptions, layout: FleetLayout) -> str:
    """HAProxy in front of the fleet: every request to the next healthy replica (round-robin,
    no stickiness), each replica checked at its ``/healthz`` every second, timeouts long
    enough for a tool call's event stream, the serving replica's name in a response header,
    and a stats page (``;csv`` for counters)."""
    mcp = "\n".join(
        f"    server mcp-{n} {HOST}:{port}" for n, port in enumerate(layout.mcp_ports, 1)
    )
    api = "\n".join(
        f"    server api-{n} {HOST}:{port}" for n, port in enumerate(layout.api_ports, 1)
    )
    return f"""\
# Written by `toolbridge-mcp dev --replicas` at every start (DEVELOPMENT ONLY); edits are lost.
global
    maxconn 4096

defaults
    mode http
    option http-server-close
    option redispatch
    retries 2
    timeout connect 2s
    timeout http-request 10s
    timeout http-keep-alive 30s
    # A tool call's response may be an event stream that stays open while the call runs.
    timeout client 10m
    timeout server 10m
    timeout tunnel 1h
    default-server check inter 1s fall 2 rise 1

frontend mcp
    bind {HOST}:{options.mcp_port}
    default_backend mcp

backend mcp
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host {HOST}:{options.mcp_port}
    http-check expect status 200
    http-response set-header {REPLICA_HEADER} %s
{mcp}

frontend api
    bind {HOST}:{options.api_port}
    default_backend api

backend api
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host {HOST}:{options.api_port}
    http-check expect status 200
    http-response set-header {REPLICA_HEADER} %s
{api}

listen stats
    bind {HOST}:{layout.stats_port}
    stats enable
    stats uri /stats
    stats refresh 5s
"""


async def check_redis(url: str) -> None:
    """Fail before starting anything if the fleet's Redis does not answer a PING."""
    from redis.exceptions import RedisError

    shown = redacted_url(url)
    problem = redis_url_problem(url)
    if problem is not None:
        raise DevStackError(f"--redis-url {shown} {problem}", exit_code=2)
    client = redis_client(url, timeout=2)
    try:
        await cast("Awaitable[bool]", client.ping())  # typed sync-or-async
    except (RedisError, OSError) as exc:
        raise DevStackError(
            f"Redis is not reachable at {shown} ({exc}): the fleet shares tokens and rate "
            "limits there. Start it (redis-server) or pass --redis-url",
            exit_code=2,
        ) from None
    finally:
        await client.aclose()


def _client_env(issuer: str, client_secret: str) -> dict[str, str]:
    """The MCP server acts as one service identity, its tokens from the dev issuer."""
    return {
        "TOOLBRIDGE_AUTH0_CLIENT_ID": CLIENT_ID,
        "TOOLBRIDGE_AUTH0_CLIENT_SECRET": client_secret,
        "TOOLBRIDGE_AUTH0_TOKEN_URL": f"{issuer}/oauth/token",
        "TOOLBRIDGE_AUTH0_AUDIENCE": AUDIENCE,
    }


def _audiences(options: DevOptions) -> list[str]:
    """What the issuer issues tokens for: in per-user mode the MCP server's resource URL first
    (the audience of a sign-in that names no ``resource``), and the API's."""
    return [options.mcp_url, AUDIENCE] if options.per_user else [AUDIENCE]


def _per_user_env(options: DevOptions, issuer: str) -> dict[str, str]:
    """Each MCP client signs its user in at the dev issuer and sends a token for the MCP
    server's own URL; the MCP server exchanges it at the API for an API token (RFC 8693)."""
    return {
        "TOOLBRIDGE_OAUTH_ISSUER": f"{issuer}/",
        # Named, not discovered: the issuer may still be starting when the server is built.
        "TOOLBRIDGE_OAUTH_JWKS_URL": f"{issuer}/.well-known/jwks.json",
        "TOOLBRIDGE_OAUTH_EXCHANGE_AUDIENCE": AUDIENCE,
        "TOOLBRIDGE_PUBLIC_URL": options.mcp_url.removesuffix("/mcp"),
    }


def _exchange_env(options: DevOptions, state_dir: Path) -> dict[str, str]:
    """The API exchanges tokens for the MCP server's URL for its own, signed with a key kept
    in the state folder (created on its first start)."""
    return {
        "TOOLBRIDGE_API_EXCHANGE_SUBJECT_AUDIENCE": options.mcp_url,
        "TOOLBRIDGE_API_EXCHANGE_SIGNING_KEY_FILE": str(state_dir / "api-signing-key.pem"),
    }


def check_ports(components: list[Component]) -> None:
    """Fail before starting anything if a port is taken, naming the flag that moves it."""
    seen: dict[int, tuple[Component, str | None]] = {}
    for component in components:
        for port, flag in component.ports():
            other, other_flag = seen.setdefault(port, (component, flag))
            if other is not component or other_flag != flag:
                raise DevStackError(
                    f"the {other.title} and the {component.title} are both set to port "
                    f"{port}: give them different ports ({other_flag}, {flag})",
                    exit_code=2,
                )
        problem = port_problem(component)
        if problem is not None:
            raise problem


def port_problem(component: Component) -> DevStackError | None:
    """The error to report if one of ``component``'s ports cannot be bound now, naming the
    flag that moves it."""
    for port, flag in component.ports():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As uvicorn binds: a port in TIME_WAIT is free, one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, port))
            except OSError as exc:
                reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"({exc})"
                remedy = (
                    f"pass {flag} <free port>"
                    if flag
                    else "start again (the stack picks another free port)"
                )
                return DevStackError(
                    f"port {port} for the {component.title} on {HOST} {reason}: stop "
                    f"what uses it or {remedy}",
                    exit_code=2,
                )
    return None


def call_on_stop_signals(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> Callable[[], None]:
    """Have Ctrl-C, SIGTERM and (where it exists) SIGHUP call ``callback`` on ``loop``;
    returns what undoes that. SIGHUP is the closed terminal: the children, in their own
    sessions, never see it, so without this they would outlive the window on macOS. An
    ignored SIGHUP (``nohup``) stays ignored.

    Windows event loops lack ``add_signal_handler``; there a plain signal handler hands the
    signal to the loop instead, so the stack still starts and stops in order.
    """
    signums = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        signums.append(signal.SIGHUP)
    try:
        for signum in signums:
            loop.add_signal_handler(signum, callback)
    except NotImplementedError:
        previous = {
            signum: signal.signal(signum, lambda *_: loop.call_soon_threadsafe(callback))
            for signum in signums
        }

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    def remove() -> None:
        for signum in signums:
            loop.remove_signal_handler(signum)

    return remove


def _death_signal_setter() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that has the child get SIGTERM if the supervisor dies without
    cleaning up (SIGKILL). ``prctl`` is looked up here, before forking, so the child only
    calls it (no library loading between fork and exec while other threads exist)."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_death_signal() -> None:  # pragma: no cover - runs in the forked child
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_death_signal


def _ready(response: httpx.Response) -> bool:
    """200, and not a health report saying ``degraded`` (the MCP server without a token)."""
    if response.status_code != 200:
        return False
    try:
        body: Any = response.json()
    except ValueError:
        return False
    return not isinstance(body, dict) or body.get("status", "ok") == "ok"


class _Child:
    """A started component: its process, and the tail of its output for error reports."""

    def __init__(self, component: Component, process: asyncio.subprocess.Process) -> None:
        self.component = component
        self.process = process
        self.tail: deque[str] = deque(maxlen=15)
        self.pump: asyncio.Task[None] | None = None
        self.started = time.monotonic()

    def failure(self, what: str) -> DevStackError:
        lines = "\n".join(f"    {line}" for line in self.tail) or "    (no output)"
        return DevStackError(
            f"the {self.component.title} {what}; its last lines:\n{lines}", exit_code=1
        )


class DevStack:
    """Runs the components until Ctrl-C, SIGTERM or SIGHUP, or until one of them fails."""

    def __init__(self, options: DevOptions, out: TextIO | None = None) -> None:
        self.options = options
        self.out = out or sys.stdout
        self.state_dir = options.state_dir.expanduser().resolve()
        self.layout = FleetLayout.pick(options) if options.fleet else None
        self.components = plan(options, self.state_dir, self.layout)
        self._children: list[_Child] = []
        self._ready = 0
        self._stop = asyncio.Event()

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def run(self) -> int:
        """Start, serve, stop; the exit code is 0 after a requested stop."""
        check_ports(self.components)
        if self.layout is not None:
            if shutil.which("haproxy") is None:
                raise DevStackError(NO_HAPROXY, exit_code=2)
            await check_redis(self.options.redis_url)
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DevStackError(
                f"cannot use {self.state_dir} as the state folder ({exc.strerror or exc}): "
                "pass --state-dir <a folder you can write to>",
                exit_code=2,
            ) from None
        if self.layout is not None:
            config = self.state_dir / "haproxy.cfg"
            config.write_text(haproxy_config(self.options, self.layout))
        restore_signals = call_on_stop_signals(asyncio.get_running_loop(), self._stop.set)
        self.say(f"Starting the ToolBridge dev stack (development only), state in {self.state_dir}")
        try:
            async with httpx.AsyncClient(timeout=2.0) as http:
                if not await self._start_all(http):
                    return 0
            if self.options.seed_demo:
                try:
                    self.say(await seed_demo(self.options.mcp_url, self._demo_token()))
                except Exception as exc:
                    raise DevStackError(f"demo data could not be created: {exc}") from None
            self.say(connect_instructions(self.options, self.state_dir, self.layout))
            await self._supervise()
            return 0
        finally:
            await self._shutdown()
            restore_signals()

    async def _start_all(self, http: httpx.AsyncClient) -> bool:
        """Start every component at once and wait until all are ready (False: a stop was
        requested first). Nothing needs another to start: the API reads the issuer's keys on
        its first request, and the MCP server, slower to import than the issuer, retries its
        first token until the issuer answers. Together they are up in about 9 s instead of
        13 s one after another (2 cores). A fleet's API processes start once the schema is
        migrated (one migration, not one per process racing on the database file), and its
        load balancer once every replica is ready."""

        def starting(when: Start) -> list[Component]:
            return [c for c in self.components if c.starts is when]

        waits: list[asyncio.Task[bool]] = []

        async def start(components: list[Component]) -> None:
            for component in components:
                child = await self._start(component)
                waits.append(asyncio.create_task(self._wait_ready(child, http)))

        try:
            await start(starting(Start.AT_ONCE))
            if migrated := starting(Start.AFTER_MIGRATION):
                if not await self._unless_stopped(self._migrate(migrated[0])):
                    return False
                await start(migrated)
            if not all(await asyncio.gather(*waits)):
                return False
            await start(starting(Start.WHEN_READY))
            return all(await asyncio.gather(*waits))
        finally:
            for wait in waits:
                wait.cancel()

    async def _unless_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work``; False (``work`` cancelled) if a stop is requested first."""
        task = asyncio.create_task(work)
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            return False
        await task  # its failure, if any
        return True

    async def _migrate(self, api: Component) -> None:
        """``toolbridge-api migrate`` with the API processes' settings, to completion."""
        process = await asyncio.create_subprocess_exec(
            *_python("toolbridge_api", "migrate"),
            env=api.env,
            cwd=self.state_dir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_death_signal_setter(),
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self.options.startup_timeout)
        except TimeoutError:
            await _terminate(process)
            raise DevStackError(
                f"the API's database migration did not finish within "
                f"{self.options.startup_timeout:g} s"
            ) from None
        finally:
            if process.returncode is None:
                await _terminate(process)
        lines = output.decode(errors="replace").splitlines()
        for line in lines:
            self.say(f"{'api':<6} | {line}")
        if process.returncode != 0:
            shown = "\n".join(f"    {line}" for line in lines[-15:]) or "    (no output)"
            raise DevStackError(
                f"the API's database migration failed with code {process.returncode}; its "
                f"last lines:\n{shown}"
            )

    async def _start(self, component: Component) -> _Child:
        process = await asyncio.create_subprocess_exec(
            *component.command,
            env=component.env,
            cwd=self.state_dir,  # away from the caller's .env, which must not leak in
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_death_signal_setter(),
        )
        child = _Child(component, process)
        child.pump = asyncio.create_task(self._pump(child))
        self._children.append(child)
        return child

    async def _pump(self, child: _Child) -> None:
        """Copy the child's log lines to our output, prefixed with its name."""
        stream = child.process.stdout
        assert stream is not None
        prefix = f"{child.component.name:<6} | "
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            child.tail.append(text)
            self.say(prefix + text)

    async def _wait_ready(self, child: _Child, http: httpx.AsyncClient) -> bool:
        """True once ready; False if a stop was requested first; raises if it fails."""
        started = child.started
        deadline = started + self.options.startup_timeout
        while not self._stop.is_set():
            if child.process.returncode is not None:
                await self._drained(child)
                # Taken since check_ports looked: say which flag moves it, as check_ports does.
                raise port_problem(child.component) or child.failure(
                    f"exited with code {child.process.returncode} while starting"
                )
            with contextlib.suppress(httpx.HTTPError):
                if _ready(await http.get(child.component.ready_url)):
                    self._announce(child, time.monotonic() - started)
                    return True
            if time.monotonic() > deadline:
                raise child.failure(
                    f"was not ready at {child.component.ready_url} within "
                    f"{self.options.startup_timeout:g} s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.1)
        return False

    def _demo_token(self) -> str | None:
        """Per-user mode: a short token for :data:`DEMO_USER`, signed with the issuer's key."""
        if not self.options.per_user:
            return None
        from toolbridge_dev.issuer.keys import load_or_create_signing_key
        from toolbridge_dev.issuer.tokens import mint_user_token

        key = load_or_create_signing_key(self.state_dir / "issuer")
        minted = mint_user_token(
            key,
            issuer=self.options.issuer_url,
            subject=DEMO_USER,
            audience=self.options.mcp_url,
            lifetime_seconds=300,
        )
        return minted.token

    def _announce(self, child: _Child, seconds: float) -> None:
        self._ready += 1
        component = child.component
        self.say(
            f"[{self._ready}/{len(self.components)}] {component.title:<10} ready  "
            f"{component.show_url}  ({component.note}; pid {child.process.pid}, {seconds:.1f} s)"
        )

    async def _supervise(self) -> None:
        """Wait for a stop request; a child that exits on its own stops the stack."""
        stop = asyncio.create_task(self._stop.wait())
        exits = {asyncio.create_task(c.process.wait()): c for c in self._children}
        try:
            done, _ = await asyncio.wait({stop, *exits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stop, *exits):
                task.cancel()
        if stop in done:
            return
        child = next(exits[task] for task in done if task in exits)
        await self._drained(child)
        raise child.failure(f"exited unexpectedly with code {child.process.returncode}")

    async def _drained(self, child: _Child) -> None:
        if child.pump is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.pump), 2.0)

    async def _shutdown(self) -> None:
        """Stop the children in reverse plan order: the load balancer first, the MCP servers
        before the API they call, the issuer last."""
        if not self._children:
            return
        self.say("Stopping the dev stack ...")
        self._children.sort(key=lambda child: self.components.index(child.component))
        for child in reversed(self._children):
            await _terminate(child.process)
            await self._drained(child)
        self.say("Stopped: " + ", ".join(c.component.title for c in reversed(self._children)))
        self._children.clear()


async def _terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after the grace period; always reaps the process."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    await process.wait()


DEMO_NOTES = (
    ("Welcome to ToolBridge", "Ask your assistant to list, edit or pin these notes.", ["demo"]),
    ("Token refresh", "The MCP server renews its access token by itself; see the log.", ["demo"]),
    ("Shopping", "Coffee, oat milk, bread", ["demo", "home"]),
)
DEMO_TASKS = (
    ("Try the MCP Inspector", "Connect it to the dev MCP server URL.", "high"),
    ("Point the server at Auth0", "See the README: same server, real tenant.", "medium"),
    ("Read the benchmarks", "docs/benchmarks.md", "low"),
)


async def seed_demo(mcp_url: str, token: str | None = None) -> str:
    """A few notes and tasks, created through the MCP server's own tools (as ``token``'s user
    in per-user mode); left alone when there are notes already, so restarts add no copies."""
    from fastmcp import Client

    async with Client(mcp_url, auth=token) as client:

        async def call(tool: str, **arguments: Any) -> dict[str, Any]:
            result = await client.call_tool(tool, arguments)
            content = result.structured_content
            assert isinstance(content, dict)
            return content

        existing = await call("list_notes", limit=1)
        if existing.get("items"):
            return "Demo data: notes already present, none added"
        for title, content, tags in DEMO_NOTES:
            await call("create_note", title=title, content=content, tags=tags)
        for title, description, priority in DEMO_TASKS:
            await call("create_task", title=title, description=description, priority=priority)
    return f"Demo data: added {len(DEMO_NOTES)} notes and {len(DEMO_TASKS)} tasks"


def connect_instructions(
    options: DevOptions, state_dir: Path, layout: FleetLayout | None = None
) -> str:
    """What to do next: the URL, the MCP Inspector, Claude Desktop and Claude Code; in
    per-user mode, how they sign their users in, and a token command for scripts; in a
    fleet, what runs behind the balancer."""
    url = options.mcp_url
    lines = ["", f"ToolBridge dev stack is up. MCP server (streamable HTTP): {url}", ""]
    if layout is not None:
        lines += [
            f"  Fleet: HAProxy sends each request to the next of {len(layout.mcp_ports)} MCP "
            f"servers (stateless HTTP) and {len(layout.api_ports)} API processes, no sticky "
            f"sessions; the {REPLICA_HEADER} response header names the one that answered.",
            f"  Shared: Redis {redacted_url(options.redis_url)}, database "
            f"{redacted_url(_database_url(options, state_dir))}. "
            f"Balancer stats: {layout.stats_url}",
            "",
        ]
    desktop = {
        "mcpServers": {"toolbridge-dev": {"command": "npx", "args": ["-y", "mcp-remote", url]}}
    }
    if options.per_user:
        lines += [
            "  Per-user mode: MCP clients sign their users in at the dev issuer "
            f"({options.issuer_url}authorize: DEVELOPMENT ONLY, no passwords, alice, bob or any "
            "name)" + (f"; the demo data belongs to {DEMO_USER}." if options.seed_demo else "."),
            "  The MCP server exchanges each user's token for an API token; users see only "
            "their own data.",
            "  MCP Inspector:  npx @modelcontextprotocol/inspector",
            f"                  Transport 'Streamable HTTP', URL {url}, Connect: it opens the "
            "sign-in page",
            "                  (or Auth Settings > Quick OAuth Flow to watch each step)",
            "  Claude Desktop: add to claude_desktop_config.json (mcp-remote opens the sign-in "
            "page):",
            f"                  {json.dumps(desktop)}",
            f"  Claude Code:    claude mcp add --transport http toolbridge-dev {url}",
            "                  then /mcp > toolbridge-dev > Authenticate",
            "  Scripts:        TOKEN=$(" + mint_command(options, state_dir) + ")",
            "                  and send Authorization: Bearer $TOKEN",
            "",
            f"Sign-ins last {options.token_lifetime} s and are refreshed by the clients; the "
            "MCP server keeps each user's API token and exchanges a new one ahead of expiry. "
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)
    lines += [
        "  MCP Inspector:  npx @modelcontextprotocol/inspector",
        f"                  then Transport 'Streamable HTTP', URL {url}",
        "  Claude Desktop: add to claude_desktop_config.json:",
        f"                  {json.dumps(desktop)}",
        f"  Claude Code:    claude mcp add --transport http toolbridge-dev {url}",
        "",
        f"Access tokens last {options.token_lifetime} s; the MCP server refreshes them ahead of "
        "expiry (log lines 'Access token refreshed'). Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def mint_command(options: DevOptions, state_dir: Path, user: str = DEMO_USER) -> str:
    """The shell command that mints ``user``'s token for this stack's MCP server, quoted,
    pasteable from any folder: this installation's ``toolbridge-dev-issuer`` with the stack's
    key folder (the settings as ``NAME=value`` words the shell takes as assignments)."""
    program = Path(sys.executable).parent / "toolbridge-dev-issuer"
    settings = {
        "TOOLBRIDGE_DEV_ISSUER_STATE_DIR": str(state_dir / "issuer"),
        "TOOLBRIDGE_DEV_ISSUER_AUDIENCES": json.dumps(_audiences(options)),
    }
    if options.issuer_port != DevOptions.issuer_port:
        settings["TOOLBRIDGE_DEV_ISSUER_PORT"] = str(options.issuer_port)
    assignments = [f"{name}={shlex.quote(value)}" for name, value in settings.items()]
    return " ".join([*assignments, shlex.join([str(program), "mint", "--sub", user])])


def run(options: DevOptions, out: TextIO | None = None) -> int:
    """Run the stack in this thread until stopped; returns the process exit code."""
    stack = DevStack(options, out)
    try:
        return asyncio.run(stack.run())
    except DevStackError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
