"""``toolbridge-mcp dev`` as a user runs it: one command, three real processes, real tokens.

The command runs as a subprocess with short-lived tokens; a real MCP client talks to it over
streamable HTTP while the MCP server refreshes its token several times, then SIGINT or SIGTERM
must leave no process behind and every port free.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from fastmcp import Client

from tests.support.mcp_calls import result_text
from toolbridge_dev import stack as devstack
from toolbridge_dev.stack import DevOptions, call_on_stop_signals, connect_instructions

COMMAND = str(Path(sys.executable).parent / "toolbridge-mcp")
README_COMMAND = str(Path(__file__).parents[2] / "scripts" / "dev.sh")
REFRESHED = "Access token refreshed: valid for"
JWT = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class DevCommand:
    """``toolbridge-mcp dev`` on free ports; every output line is kept in ``lines``."""

    def __init__(
        self,
        cwd: Path,
        *args: str,
        env: dict[str, str] | None = None,
        command: tuple[str, ...] = (COMMAND, "dev"),
    ) -> None:
        self.mcp_port, self.api_port, self.issuer_port = _free_ports(3)
        self.cwd = cwd
        self.args = [
            *command,
            "--port",
            str(self.mcp_port),
            "--api-port",
            str(self.api_port),
            "--issuer-port",
            str(self.issuer_port),
            *args,
        ]
        base = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
        self.env = base | (env or {})
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process: subprocess.Popen[str] | None = None

    @property
    def ports(self) -> list[int]:
        return [self.mcp_port, self.api_port, self.issuer_port]

    @property
    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.mcp_port}/mcp"

    def start(self) -> Self:
        self.process = subprocess.Popen(  # noqa: S603 - our own console script
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True, name="dev-output").start()
        return self

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> None:
        """Until ``predicate(lines)`` holds; fails with the output if the command exits."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.lines):
                assert self.process is not None
                if self.process.poll() is not None and not predicate(self.lines):
                    self._changed.wait(0.5)  # the reader may still hold the last lines
                    if predicate(self.lines):
                        return
                    pytest.fail(f"dev exited ({self.process.returncode}):\n{self.text_unlocked}")
                if time.monotonic() > deadline:
                    pytest.fail(f"timed out waiting; output so far:\n{self.text_unlocked}")
                self._changed.wait(0.2)

    @property
    def text_unlocked(self) -> str:
        return "\n".join(self.lines)

    def wait_up(self) -> None:
        self.wait_for(lambda lines: any("ToolBridge dev stack is up" in line for line in lines))

    def count(self, needle: str) -> int:
        with self._changed:
            return sum(needle in line for line in self.lines)

    def pids(self) -> list[int]:
        """The children's pids, from the progress lines."""
        found = [int(m.group(1)) for m in re.finditer(r"pid (\d+)", self.text)]
        assert len(found) == 3, self.text
        return found

    def stop(self, signum: signal.Signals = signal.SIGINT, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def dev_command(tmp_path: Path) -> Iterator[list[DevCommand]]:
    started: list[DevCommand] = []
    yield started
    for command in started:
        command.kill()


def _child_secrets(pids: list[int]) -> list[str]:
    """The secrets the dev command generated, read from its children's environments."""
    found: list[str] = []
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for entry in environ:
            name, _, value = entry.decode().partition("=")
            if name.endswith("_SECRET"):
                found.append(value)
            elif name == "TOOLBRIDGE_DEV_ISSUER_CLIENTS":
                found.extend(json.loads(value).values())
    return found


async def _ok(client: Client[Any], tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert not result.is_error, f"{tool} failed: {result_text(result)}"
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def _crud_round(client: Client[Any], round_no: int) -> None:
    """Create, list, update and delete one note and one task."""
    note = await _ok(client, "create_note", title=f"note {round_no}", content="draft")
    listed = await _ok(client, "list_notes", limit=1000)
    assert note["uid"] in {item["uid"] for item in listed["items"]}
    updated = await _ok(client, "update_note", uid=note["uid"], title=f"note {round_no}!")
    assert updated["version"] == note["version"] + 1
    assert updated["payload"]["title"] == f"note {round_no}!"
    await _ok(client, "delete_note", uid=note["uid"])

    task = await _ok(client, "create_task", title=f"task {round_no}", priority="high")
    tasks = await _ok(client, "list_tasks", limit=1000)
    assert task["uid"] in {item["uid"] for item in tasks["items"]}
    done = await _ok(
        client, "update_task", uid=task["uid"], title=f"task {round_no}", status="completed"
    )
    assert done["payload"]["status"] == "completed"
    await _ok(client, "delete_task", uid=task["uid"])


async def test_dev_serves_tools_across_token_refreshes_and_stops_cleanly(
    tmp_path: Path, dev_command: list[DevCommand]
) -> None:
    # A real Auth0 setup in the caller's shell and .env must not leak into the dev stack.
    (tmp_path / ".env").write_text("TOOLBRIDGE_OAUTH_ISSUER=https://not-this.example/\n")
    shell = {
        "TOOLBRIDGE_AUTH0_DOMAIN": "tenant.example.com",
        "TOOLBRIDGE_JWT_TOKEN": "stale",
        "TOOLBRIDGE_OAUTH_AUDIENCE": "https://not-this.example",
    }
    dev = DevCommand(tmp_path, "--token-lifetime", "3", env=shell).start()
    dev_command.append(dev)
    dev.wait_up()
    pids = dev.pids()
    secrets = _child_secrets(pids)
    assert len(secrets) >= 3  # client secret (issuer + MCP) and tenant secret (API + MCP)

    refreshes_before = dev.count(REFRESHED)
    rounds = 0
    async with Client(dev.mcp_url) as client:
        while dev.count(REFRESHED) - refreshes_before < 3 or rounds < 3:
            rounds += 1
            await _crud_round(client, rounds)
        health = await _ok(client, "health_check")
    assert health["status"] == "ok"
    assert health["auth_mode"] == "auth0"

    refresh_lines = [line for line in dev.lines if REFRESHED in line]
    assert all(line.startswith("mcp    | ") for line in refresh_lines)
    assert all("valid for 3s" in line for line in refresh_lines), refresh_lines
    assert any("MCP server ready" in line and dev.mcp_url in line for line in dev.lines)

    assert dev.stop(signal.SIGINT) == 0
    assert "Stopped: MCP server, API, dev issuer" in dev.text
    stopping = dev.lines[dev.lines.index("Stopping the dev stack ...") :]
    said = [line.split(" | ", 1)[0].strip() for line in stopping if " | " in line]
    assert said == sorted(said, key=["mcp", "api", "issuer"].index), "stopped out of order"
    assert [pid for pid in pids if _alive(pid)] == []
    assert all(_port_is_free(port) for port in dev.ports)
    output = dev.text
    assert not [s for s in secrets if s in output], "a generated secret reached the output"
    assert not JWT.search(output), "an access token reached the output"
    assert (tmp_path / ".toolbridge" / "api.db").exists()
    assert (tmp_path / ".toolbridge" / "issuer" / "signing-key.pem").exists()


async def test_demo_data_once_and_kept_across_restarts_and_sigterm_stops(
    tmp_path: Path, dev_command: list[DevCommand]
) -> None:
    state = tmp_path / "state"
    # The README's command: bootstraps, then execs the supervisor, so SIGTERM reaches it.
    readme = (README_COMMAND,)
    first = DevCommand(tmp_path, "--seed-demo", "--state-dir", str(state), command=readme)
    first.start()
    dev_command.append(first)
    first.wait_up()
    assert "Demo data: added 3 notes and 3 tasks" in first.text
    async with Client(first.mcp_url) as client:
        notes = await _ok(client, "list_notes")
        tasks = await _ok(client, "list_tasks")
    assert sorted(n["payload"]["title"] for n in notes["items"]) == [
        "Shopping",
        "Token refresh",
        "Welcome to ToolBridge",
    ]
    assert len(tasks["items"]) == 3
    pids = first.pids()
    assert first.stop(signal.SIGTERM) == 0
    assert [pid for pid in pids if _alive(pid)] == []

    second = DevCommand(tmp_path, "--seed-demo", "--state-dir", str(state)).start()
    dev_command.append(second)
    second.wait_up()
    assert "Demo data: notes already present, none added" in second.text
    async with Client(second.mcp_url) as client:
        again = await _ok(client, "list_notes")
    assert {n["uid"] for n in again["items"]} == {n["uid"] for n in notes["items"]}
    assert second.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("flag", ["--port", "--api-port", "--issuer-port"])
def test_a_taken_port_is_named_with_the_flag_to_change(
    tmp_path: Path, flag: str, dev_command: list[DevCommand]
) -> None:
    dev = DevCommand(tmp_path)
    taken = {"--port": dev.mcp_port, "--api-port": dev.api_port, "--issuer-port": dev.issuer_port}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken[flag]))
        holder.listen()
        dev.start()
        dev_command.append(dev)
        assert dev.wait() == 2
    assert f"port {taken[flag]}" in dev.text
    assert f"pass {flag} <free port>" in dev.text
    assert "pid " not in dev.text  # nothing was started
    assert not (tmp_path / ".toolbridge").exists()


def test_same_port_twice_is_refused(tmp_path: Path) -> None:
    port = _free_ports(1)[0]
    done = subprocess.run(  # noqa: S603 - our own console script
        [COMMAND, "dev", "--port", str(port), "--api-port", str(port)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"both set to port {port}" in done.stderr
    assert "(--api-port, --port)" in done.stderr


def test_a_component_that_fails_to_start_stops_the_stack_and_shows_why(
    tmp_path: Path, dev_command: list[DevCommand]
) -> None:
    key = tmp_path / ".toolbridge" / "issuer" / "signing-key.pem"
    key.parent.mkdir(parents=True)
    key.write_text("not a key")
    dev = DevCommand(tmp_path).start()
    dev_command.append(dev)
    assert dev.wait() == 1
    assert "the dev issuer exited with code" in dev.text
    assert "signing-key.pem" in dev.text
    assert "MCP server ready" not in dev.text
    assert "Stopped: MCP server, API, dev issuer" in dev.text
    assert key.read_text() == "not a key"
    assert all(_port_is_free(port) for port in dev.ports)


async def test_per_user_mode_serves_each_user_their_own_data(
    tmp_path: Path, dev_command: list[DevCommand]
) -> None:
    dev = DevCommand(tmp_path, "--per-user", "--seed-demo").start()
    dev_command.append(dev)
    dev.wait_up()
    assert "Demo data: added 3 notes and 3 tasks" in dev.text
    # The printed hint, pasted in another folder as a user would (bob instead of alice).
    hint = next(line for line in dev.lines if "TOKEN=$(" in line)
    mint = hint.split("TOKEN=$(", 1)[1].rsplit(")", 1)[0]
    assert mint.endswith(" --sub alice")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def token_for(user: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
        done = subprocess.run(  # noqa: S603 - the hint the dev command printed
            ["bash", "-c", mint.removesuffix("alice") + user],  # noqa: S607
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    async with Client(dev.mcp_url, auth=token_for("bob")) as bob:
        assert (await _ok(bob, "list_notes"))["items"] == []
        mine = await _ok(bob, "create_note", title="bob's")
    async with Client(dev.mcp_url, auth=token_for("alice")) as alice:
        titles = {n["payload"]["title"] for n in (await _ok(alice, "list_notes"))["items"]}
    assert "Welcome to ToolBridge" in titles
    assert mine["payload"]["title"] not in titles

    async with httpx.AsyncClient() as http:
        anonymous = await http.post(dev.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert anonymous.status_code == 401
    assert "resource_metadata=" in anonymous.headers["www-authenticate"]
    assert dev.stop() == 0


@pytest.mark.parametrize("state_dir", ["a-file", "a-file/below"], ids=["file", "below a file"])
def test_an_unusable_state_dir_is_named_with_the_flag(
    tmp_path: Path, state_dir: str, dev_command: list[DevCommand]
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    dev = DevCommand(tmp_path, "--state-dir", state_dir).start()
    dev_command.append(dev)
    assert dev.wait() == 2
    assert f"cannot use {tmp_path / state_dir} as the state folder" in dev.text
    assert "pass --state-dir <a folder you can write to>" in dev.text
    assert "Traceback" not in dev.text
    assert "pid " not in dev.text  # nothing was started


@pytest.mark.parametrize("lifetime", ["0", str(30 * 24 * 3600 + 1)])
def test_a_token_lifetime_the_issuer_refuses_is_named_before_starting(
    tmp_path: Path, lifetime: str
) -> None:
    done = subprocess.run(  # noqa: S603 - our own console script
        [COMMAND, "dev", "--token-lifetime", lifetime],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--token-lifetime" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_the_printed_mint_command_keeps_a_state_dir_with_spaces_whole(tmp_path: Path) -> None:
    state_dir = tmp_path / "my state's"
    text = connect_instructions(DevOptions(per_user=True, issuer_port=9999), state_dir)
    hint = next(line for line in text.splitlines() if "TOKEN=$(" in line)
    command = hint.split("TOKEN=$(", 1)[1].rsplit(")", 1)[0]
    assert shlex.split(command) == [
        f"TOOLBRIDGE_DEV_ISSUER_STATE_DIR={state_dir / 'issuer'}",
        'TOOLBRIDGE_DEV_ISSUER_AUDIENCES=["http://127.0.0.1:8001/mcp", '
        '"https://api.toolbridge.local"]',
        "TOOLBRIDGE_DEV_ISSUER_PORT=9999",
        str(Path(sys.executable).parent / "toolbridge-dev-issuer"),
        "mint",
        "--sub",
        "alice",
    ]


async def test_stop_signals_reach_the_loop_where_it_has_no_signal_handlers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows event loops raise NotImplementedError from add_signal_handler (simulated)."""
    loop = asyncio.get_running_loop()

    def unsupported(*args: object) -> None:
        raise NotImplementedError

    monkeypatch.setattr(loop, "add_signal_handler", unsupported)
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in before:
        stopped = asyncio.Event()
        restore = call_on_stop_signals(loop, stopped.set)
        try:
            signal.raise_signal(signum)
            await asyncio.wait_for(stopped.wait(), 10)
        finally:
            restore()
    assert {signum: signal.getsignal(signum) for signum in before} == before


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a reaper (orphans are reaped by whoever adopts them)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="the children's death signal is Linux only")
def test_children_stop_when_the_supervisor_is_killed(
    tmp_path: Path, dev_command: list[DevCommand]
) -> None:
    dev = DevCommand(tmp_path).start()
    dev_command.append(dev)
    dev.wait_up()
    pids = dev.pids()
    try:
        # Each child leads its own session, so a terminal's Ctrl-C reaches only the supervisor.
        assert [os.getsid(pid) for pid in pids] == pids
        dev.kill()  # SIGKILL: no chance to stop them itself
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in pids if _running(pid)] == []
        assert all(_port_is_free(port) for port in dev.ports)
    finally:
        for pid in filter(_running, pids):  # a failure here must not leave them running
            os.kill(pid, signal.SIGKILL)


def test_a_port_taken_after_the_check_is_named_with_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another program binds the issuer's port between the check and the issuer's own bind
    (the race forced by skipping the check)."""
    monkeypatch.setattr(devstack, "check_ports", lambda components: None)
    mcp_port, api_port, issuer_port = _free_ports(3)
    options = DevOptions(
        state_dir=tmp_path / "state", mcp_port=mcp_port, api_port=api_port, issuer_port=issuer_port
    )
    out = io.StringIO()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", issuer_port))
        holder.listen()
        assert devstack.run(options, out) == 2
    error = capsys.readouterr().err
    assert f"port {issuer_port} for the dev issuer on 127.0.0.1 is already in use" in error
    assert "pass --issuer-port <free port>" in error
    assert "Stopped: MCP server, API, dev issuer" in out.getvalue()
    assert all(_port_is_free(port) for port in (mcp_port, api_port, issuer_port))


def test_a_closed_terminal_sighup_stops_everything_cleanly(
    tmp_path: Path, dev_command: list[DevCommand]
) -> None:
    dev = DevCommand(tmp_path).start()
    dev_command.append(dev)
    dev.wait_up()
    pids = dev.pids()
    assert dev.stop(signal.SIGHUP) == 0
    assert "Stopped: MCP server, API, dev issuer" in dev.text
    assert [pid for pid in pids if _alive(pid)] == []
    assert all(_port_is_free(port) for port in dev.ports)


async def test_an_ignored_sighup_stays_ignored() -> None:
    """Under ``nohup`` a closed terminal must not stop the stack."""
    loop = asyncio.get_running_loop()
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        restore = call_on_stop_signals(loop, lambda: None)
        try:
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        finally:
            restore()
    finally:
        signal.signal(signal.SIGHUP, previous)


async def test_an_mcp_server_without_a_token_is_not_reported_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its /healthz answers 200 "degraded" while the issuer refuses it (a wrong secret, injected):
    the stack must fail to start rather than print connect instructions."""
    wired = devstack._client_env
    monkeypatch.setattr(devstack, "_client_env", lambda issuer, secret: wired(issuer, "wrong"))
    mcp_port, api_port, issuer_port = _free_ports(3)
    options = DevOptions(
        state_dir=tmp_path / "state",
        mcp_port=mcp_port,
        api_port=api_port,
        issuer_port=issuer_port,
        startup_timeout=10,
    )
    out = io.StringIO()
    with pytest.raises(devstack.DevStackError) as caught:
        await asyncio.wait_for(devstack.DevStack(options, out).run(), 60)
    healthz = f"http://127.0.0.1:{mcp_port}/healthz"
    assert f"the MCP server was not ready at {healthz} within 10 s" in str(caught.value)
    assert "ToolBridge dev stack is up" not in out.getvalue()
    assert "Stopped: MCP server, API, dev issuer" in out.getvalue()
