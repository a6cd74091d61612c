"""``toolbridge-mcp dev``: the whole system on one machine, for development only.

Starts the dev identity provider, the ToolBridge API on SQLite and the MCP server as child
processes, each configured only through its environment, as a deployment configures it, and
wired together with secrets generated for this run. The MCP server therefore fetches and
refreshes its tokens exactly as it would from Auth0. Children run in their own session so the
terminal's Ctrl-C reaches only this supervisor, which stops them in order (MCP server, API,
issuer) and waits for each; on Linux they also die with the supervisor if it is killed.
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
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

HOST = "127.0.0.1"
CLIENT_ID = "toolbridge-dev-mcp"
TENANT_ID = "dev"
AUDIENCE = "https://api.toolbridge.local"
INSPECTOR_ORIGINS = ("http://localhost:6274", "http://127.0.0.1:6274")
"""Where the MCP Inspector's page runs (``npx @modelcontextprotocol/inspector``)."""
DEMO_USER = "alice"
"""Whose demo data ``--seed-demo`` creates in per-user mode (the user the hint mints for)."""
STOP_GRACE_SECONDS = 8.0
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

    @property
    def mcp_url(self) -> str:
        return f"http://{HOST}:{self.mcp_port}/mcp"

    @property
    def issuer_url(self) -> str:
        return f"http://{HOST}:{self.issuer_port}/"


@dataclass(frozen=True)
class Component:
    """One child process: how to start it, where it listens, how to tell it is ready."""

    name: str
    title: str
    module: str
    env: dict[str, str] = field(repr=False)
    port: int
    port_flag: str
    ready_url: str
    show_url: str
    note: str


def _base_env() -> dict[str, str]:
    """The caller's environment without any ``TOOLBRIDGE_*`` setting, so a real Auth0
    configuration in the shell cannot half-configure the dev stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def plan(options: DevOptions, state_dir: Path) -> list[Component]:
    """The three components in start order, wired with fresh secrets for this run."""
    client_secret = secrets.token_urlsafe(32)
    tenant_secret = secrets.token_hex(32)
    issuer = f"http://{HOST}:{options.issuer_port}"
    api = f"http://{HOST}:{options.api_port}"
    base = _base_env()
    return [
        Component(
            name="issuer",
            title="dev issuer",
            module="toolbridge_dev.issuer",
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
        ),
        Component(
            name="api",
            title="API",
            module="toolbridge_api",
            env=base
            | {
                "TOOLBRIDGE_API_HOST": HOST,
                "TOOLBRIDGE_API_PORT": str(options.api_port),
                "TOOLBRIDGE_API_DATABASE_URL": f"sqlite+aiosqlite:///{state_dir / 'api.db'}",
                "TOOLBRIDGE_API_JWKS_URL": f"{issuer}/.well-known/jwks.json",
                "TOOLBRIDGE_API_ISSUER": f"{issuer}/",
                "TOOLBRIDGE_API_AUDIENCE": AUDIENCE,
                "TOOLBRIDGE_API_TENANT_SECRET": tenant_secret,
                "TOOLBRIDGE_API_LOG_LEVEL": options.log_level,
            }
            | (_exchange_env(options, state_dir) if options.per_user else {}),
            port=options.api_port,
            port_flag="--api-port",
            ready_url=f"{api}/healthz",
            show_url=api,
            note=f"SQLite {state_dir / 'api.db'}, docs at {api}/docs",
        ),
        Component(
            name="mcp",
            title="MCP server",
            module="toolbridge_mcp.cli",
            env=base
            | {
                "TOOLBRIDGE_HOST": HOST,
                "TOOLBRIDGE_PORT": str(options.mcp_port),
                "TOOLBRIDGE_GO_API_BASE_URL": api,
                "TOOLBRIDGE_TENANT_ID": TENANT_ID,
                "TOOLBRIDGE_TENANT_HEADER_SECRET": tenant_secret,
                "TOOLBRIDGE_LOG_LEVEL": options.log_level,
                # The MCP Inspector's page calls the server from its own origin.
                "TOOLBRIDGE_ALLOWED_ORIGINS": " ".join(INSPECTOR_ORIGINS),
            }
            | (
                _per_user_env(options, issuer)
                if options.per_user
                else _client_env(issuer, client_secret)
            ),
            port=options.mcp_port,
            port_flag="--port",
            ready_url=f"http://{HOST}:{options.mcp_port}/healthz",
            show_url=options.mcp_url,
            note=(
                "streamable HTTP, users sign in at the dev issuer"
                if options.per_user
                else "streamable HTTP, first token fetched"
            ),
        ),
    ]


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
    seen: dict[int, Component] = {}
    for component in components:
        other = seen.setdefault(component.port, component)
        if other is not component:
            raise DevStackError(
                f"the {other.title} and the {component.title} are both set to port "
                f"{component.port}: give them different ports ({other.port_flag}, "
                f"{component.port_flag})",
                exit_code=2,
            )
        problem = port_problem(component)
        if problem is not None:
            raise problem


def port_problem(component: Component) -> DevStackError | None:
    """The error to report if ``component``'s port cannot be bound now, naming its flag."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port in TIME_WAIT is free, one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, component.port))
        except OSError as exc:
            reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"({exc})"
            return DevStackError(
                f"port {component.port} for the {component.title} on {HOST} {reason}: stop "
                f"what uses it or pass {component.port_flag} <free port>",
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
        self.components = plan(options, self.state_dir)
        self._children: list[_Child] = []
        self._ready = 0
        self._stop = asyncio.Event()

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def run(self) -> int:
        """Start, serve, stop; the exit code is 0 after a requested stop."""
        check_ports(self.components)
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DevStackError(
                f"cannot use {self.state_dir} as the state folder ({exc.strerror or exc}): "
                "pass --state-dir <a folder you can write to>",
                exit_code=2,
            ) from None
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
            self.say(connect_instructions(self.options, self.state_dir))
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
        13 s one after another (2 cores)."""
        children = [await self._start(component) for component in self.components]
        waits = [asyncio.create_task(self._wait_ready(child, http)) for child in children]
        try:
            return all(await asyncio.gather(*waits))
        finally:
            for wait in waits:
                wait.cancel()

    async def _start(self, component: Component) -> _Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            component.module,
            "serve",
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
        started = time.monotonic()
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
        """Stop the children newest first: the MCP server before the API it calls."""
        if not self._children:
            return
        self.say("Stopping the dev stack ...")
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


def connect_instructions(options: DevOptions, state_dir: Path) -> str:
    """What to do next: the URL, the MCP Inspector, Claude Desktop and Claude Code; in
    per-user mode, how they sign their users in, and a token command for scripts."""
    url = options.mcp_url
    lines = ["", f"ToolBridge dev stack is up. MCP server (streamable HTTP): {url}", ""]
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
