"""``toolbridge-mcp check`` as a user runs it: a subprocess with settings in its environment,
against the real API and the fake IdP on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import jwt

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET
from tests.support.api import ApiServer
from tests.support.idp import IdP, Reply
from tests.support.mcp_calls import mint_token
from tests.support.mcp_server import (
    SECRETS,
    TENANT_ID,
    TENANT_SECRET,
    ServerFactory,
    cli_command,
    mcp_settings,
    server_env,
)
from toolbridge_mcp.check import exit_code, run_checks

STEPS = ["settings", "token", "api", "session", "notes"]


class Checked:
    """One run of ``check``: exit code, and the checklist line of each step."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.code = result.returncode
        self.output = result.stdout + result.stderr
        self.lines = {
            line.split()[1]: line
            for line in result.stdout.splitlines()
            if line[:2] in ("✓ ", "✗ ", "- ", "! ")
        }

    def mark(self, step: str) -> str:
        return self.lines[step][0]

    def assert_no_secrets(self, idp: IdP, *more: str) -> None:
        leaked = [s for s in (*SECRETS, *idp.issued, *more) if s in self.output]
        assert not leaked, f"{len(leaked)} secret(s) or token(s) in the output"


def run_check(tmp_path: Path, *args: str, **env: str) -> Checked:
    result = subprocess.run(  # noqa: S603 - our own console script
        [*cli_command(), "check", *args],
        env=server_env(**env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Checked(result)


def settings_env(api_url: str, idp: IdP | None = None, **overrides: str) -> dict[str, str]:
    env = {
        "TOOLBRIDGE_GO_API_BASE_URL": api_url,
        "TOOLBRIDGE_TENANT_ID": TENANT_ID,
        "TOOLBRIDGE_TENANT_HEADER_SECRET": TENANT_SECRET,
    }
    if idp is not None:
        env |= {
            "TOOLBRIDGE_AUTH0_CLIENT_ID": CLIENT_ID,
            "TOOLBRIDGE_AUTH0_CLIENT_SECRET": CLIENT_SECRET,
            "TOOLBRIDGE_AUTH0_TOKEN_URL": idp.token_url,
            "TOOLBRIDGE_AUTH0_AUDIENCE": AUDIENCE,
        }
    return env | overrides


def free_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once closed


def test_every_step_passes(tmp_path: Path, api: ApiServer, idp: IdP) -> None:
    checked = run_check(tmp_path, **settings_env(api.url, idp))
    assert checked.code == 0, checked.output
    assert list(checked.lines) == STEPS
    assert all(checked.mark(step) == "✓" for step in STEPS)
    assert f"tenant {TENANT_ID}" in checked.lines["settings"]
    assert idp.token_url in checked.lines["token"]
    assert "expires in" in checked.lines["token"]
    assert "listed one page of notes" in checked.lines["notes"]
    assert len(idp.issued) == 1
    assert api.counter.paths == [
        ("GET", "/healthz"),
        ("POST", "/v1/sync/sessions"),
        ("GET", "/v1/notes"),
    ]
    checked.assert_no_secrets(idp)


def test_bad_client_secret_names_the_setting(tmp_path: Path, api: ApiServer, idp: IdP) -> None:
    wrong = "not-the-client-secret"
    checked = run_check(
        tmp_path, "--json", **settings_env(api.url, idp, TOOLBRIDGE_AUTH0_CLIENT_SECRET=wrong)
    )
    assert checked.code == 1
    report = {step["step"]: step for step in json.loads(checked.output)}
    assert list(report) == STEPS
    token = report["token"]
    assert token["status"] == "fail"
    assert "invalid_client" in token["detail"]
    assert "TOOLBRIDGE_AUTH0_CLIENT_SECRET" in token["detail"]
    assert report["api"]["status"] == "pass"
    assert report["session"]["status"] == report["notes"]["status"] == "skip"
    assert api.counter.paths == [("GET", "/healthz")]  # nothing sent without a token
    checked.assert_no_secrets(idp, wrong)


def test_api_down_names_the_api_url_setting(tmp_path: Path, api: ApiServer, idp: IdP) -> None:
    url = free_url()
    checked = run_check(tmp_path, **settings_env(url, idp))
    assert checked.code == 1
    assert checked.mark("token") == "✓"
    assert checked.mark("api") == "✗"
    assert f"unavailable at {url}" in checked.lines["api"]
    assert "TOOLBRIDGE_GO_API_BASE_URL" in checked.lines["api"]
    assert checked.mark("session") == "-"
    checked.assert_no_secrets(idp)


async def test_unreachable_identity_provider_names_the_endpoint_setting(api: ApiServer) -> None:
    url = free_url()
    settings = mcp_settings(
        api.url,
        None,
        "passthrough",
        auth0_client_id=CLIENT_ID,
        auth0_client_secret=CLIENT_SECRET,
        auth0_token_url=f"{url}/oauth/token",
        auth0_audience=AUDIENCE,
        token_request_deadline_seconds=1,
    )
    results = await run_checks(settings)
    token = results[1]
    assert token.status == "fail"
    assert f"{url}/oauth/token" in token.detail
    assert "TOOLBRIDGE_AUTH0_TOKEN_URL" in token.detail
    assert exit_code(results) == 1


def test_wrong_tenant_secret_names_the_tenant_settings(
    tmp_path: Path, api: ApiServer, idp: IdP
) -> None:
    wrong = "not-the-tenant-secret"
    checked = run_check(
        tmp_path, **settings_env(api.url, idp, TOOLBRIDGE_TENANT_HEADER_SECRET=wrong)
    )
    assert checked.code == 1
    assert checked.mark("api") == "✓"
    assert checked.mark("session") == "✗"
    assert "TOOLBRIDGE_TENANT_HEADER_SECRET" in checked.lines["session"]
    assert checked.mark("notes") == "-"
    checked.assert_no_secrets(idp, wrong)


def test_bad_settings_exit_2_naming_the_variables(tmp_path: Path, api: ApiServer) -> None:
    checked = run_check(
        tmp_path,
        **settings_env(
            api.url, TOOLBRIDGE_AUTH0_CLIENT_ID=CLIENT_ID, TOOLBRIDGE_AUTH0_CLIENT_SECRET="s3cret"
        ),
    )
    assert checked.code == 2
    assert checked.mark("settings") == "✗"
    assert "TOOLBRIDGE_AUTH0_TOKEN_URL" in checked.output
    assert "TOOLBRIDGE_AUTH0_ISSUER" in checked.output
    assert "s3cret" not in checked.output
    assert not api.counter.paths


async def test_static_token_is_checked_and_called_deprecated(api: ApiServer, idp: IdP) -> None:
    token = mint_token(idp)
    results = await run_checks(mcp_settings(api.url, None, "static", jwt_token=token))
    assert [r.status for r in results] == ["pass"] * 5
    assert "deprecated" in results[1].detail
    assert "expires in" in results[1].detail
    assert token not in " ".join(r.line() for r in results)


async def test_expired_static_token_fails_without_calling_the_api(api: ApiServer) -> None:
    expired = jwt.encode({"sub": "someone", "exp": int(time.time()) - 60}, "k" * 32)
    results = await run_checks(mcp_settings(api.url, None, "static", jwt_token=expired))
    assert exit_code(results) == 1
    token = results[1]
    assert token.status == "fail"
    assert "TOOLBRIDGE_JWT_TOKEN expired at" in token.detail
    assert [r.status for r in results[3:]] == ["skip", "skip"]
    assert api.counter.paths == [("GET", "/healthz")]
    assert expired not in " ".join(r.line() for r in results)


async def test_static_token_with_an_impossible_expiry_is_not_a_crash(api: ApiServer) -> None:
    odd = jwt.encode({"sub": "someone", "exp": 10**20}, "k" * 32)
    results = await run_checks(mcp_settings(api.url, None, "static", jwt_token=odd))
    assert results[1].status == "pass"
    assert "expiry unknown" in results[1].detail


async def test_per_user_mode_says_what_to_set(api: ApiServer) -> None:
    results = await run_checks(mcp_settings(api.url, None, "passthrough"))
    assert exit_code(results) == 1
    token = results[1]
    assert token.line().startswith("- token")
    assert "per-user mode" in token.detail
    assert "TOOLBRIDGE_AUTH0_CLIENT_ID" in token.detail
    assert "TOOLBRIDGE_JWT_TOKEN" in token.detail
    assert results[2].status == "pass"
    assert [r.status for r in results[3:]] == ["skip", "skip"]


async def test_a_base_url_that_is_not_the_api_fails_the_session_naming_the_setting(
    idp: IdP, start_mcp: ServerFactory
) -> None:
    """Another service with a /healthz (here an MCP server) passes the api step; the session
    step must then say the URL is wrong, not that an item was not found."""
    elsewhere = start_mcp()
    results = await run_checks(mcp_settings(elsewhere.base_url, idp))
    assert [r.status for r in results] == ["pass", "pass", "pass", "fail", "skip"]
    session = results[3].detail
    assert "not found" not in session
    assert "TOOLBRIDGE_GO_API_BASE_URL" in session


async def test_an_opaque_token_is_a_warning_naming_the_settings_and_the_api_confirms(
    api: ApiServer, idp: IdP
) -> None:
    """oidc-provider without a resource: a token, but an opaque one. The token step warns,
    naming TOOLBRIDGE_AUTH0_RESOURCE and TOOLBRIDGE_AUTH0_AUDIENCE; the session step then
    shows the API refusing it."""
    idp.set_default(Reply(jwt=False))
    results = await run_checks(mcp_settings(api.url, idp))
    token = results[1]
    assert token.status == "warn"
    assert token.line().startswith("! token")
    assert "not a JWT" in token.detail
    assert "TOOLBRIDGE_AUTH0_RESOURCE" in token.detail
    assert "TOOLBRIDGE_AUTH0_AUDIENCE" in token.detail
    assert results[3].status == "fail"
    assert "not a well-formed JWT" in results[3].detail
    assert exit_code(results) == 1


async def test_scopes_granted_and_asked_are_reported(api: ApiServer, idp: IdP) -> None:
    idp.set_default(Reply(granted_scope="read:notes"))
    results = await run_checks(mcp_settings(api.url, idp, auth0_scope="read:notes write:notes"))
    token = results[1]
    assert token.status == "warn"
    assert "scopes granted: read:notes (asked: read:notes write:notes)" in token.detail
    assert "did not grant write:notes" in token.detail
    assert "TOOLBRIDGE_AUTH0_SCOPE" in token.detail
    assert [r.status for r in results[2:]] == ["pass"] * 3
    assert exit_code(results) == 0, "a warning alone does not fail the check"
