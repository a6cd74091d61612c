"""``toolbridge-mcp token`` as a user runs it: a subprocess with settings in its environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET
from tests.support.idp import IdP, Reply

COMMAND = str(Path(sys.executable).parent / "toolbridge-mcp")


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
    return subprocess.run(  # noqa: S603 - our own console script
        [COMMAND, *args],
        env=base | env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def credentials(idp: IdP, **overrides: str) -> dict[str, str]:
    return {
        "TOOLBRIDGE_AUTH0_CLIENT_ID": CLIENT_ID,
        "TOOLBRIDGE_AUTH0_CLIENT_SECRET": CLIENT_SECRET,
        "TOOLBRIDGE_AUTH0_TOKEN_URL": idp.token_url,
        "TOOLBRIDGE_AUTH0_AUDIENCE": AUDIENCE,
    } | overrides


def test_token_describes_the_token_without_printing_it(tmp_path: Path, idp: IdP) -> None:
    result = run_cli(tmp_path, "token", **credentials(idp))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"Audience          {AUDIENCE}" in out
    assert f"Subject           {CLIENT_ID}@clients" in out
    assert "Scopes            read:notes write:notes" in out
    assert "Scopes requested  -" in out
    assert "Expires in        3600s" in out or "Expires in        3599s" in out
    assert "hidden (pass --show-token" in out
    assert len(idp.issued) == 1
    assert idp.issued[0] not in out + result.stderr
    assert CLIENT_SECRET not in out + result.stderr
    assert result.stderr == "", "the log only with --verbose"
    verbose = run_cli(tmp_path, "token", "--verbose", **credentials(idp))
    assert "Access token refreshed: valid for 3600s" in verbose.stderr


def test_token_warns_about_an_opaque_token_and_scopes_not_granted(tmp_path: Path, idp: IdP) -> None:
    """oidc-provider without a resource issues an opaque token: ``token`` passes, but the
    API would refuse every call, so it says which setting asks for a JWT; and a scope the
    identity provider dropped is named."""
    idp.set_default(Reply(jwt=False, granted_scope="read:notes"))
    env = credentials(idp, TOOLBRIDGE_AUTH0_SCOPE="read:notes write:notes")
    result = run_cli(tmp_path, "token", **env)
    assert result.returncode == 0, result.stderr
    assert "Scopes            read:notes\n" in result.stdout
    assert "Scopes requested  read:notes write:notes" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 2
    assert "not a JWT" in warnings[0]
    assert "TOOLBRIDGE_AUTH0_RESOURCE" in warnings[0]
    assert "TOOLBRIDGE_AUTH0_AUDIENCE" in warnings[0]
    assert "did not grant write:notes" in warnings[1]
    report = json.loads(run_cli(tmp_path, "token", "--json", **env).stdout)
    assert len(report["warnings"]) == 2


def test_token_json_with_show_token(tmp_path: Path, idp: IdP) -> None:
    result = run_cli(tmp_path, "token", "--json", "--show-token", **credentials(idp))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["access_token"] == idp.issued[0]
    assert report["subject"] == f"{CLIENT_ID}@clients"
    assert report["format"] == "JWT"
    assert report["token_endpoint"] == idp.token_url


def test_token_describes_an_opaque_token_from_the_response(tmp_path: Path, idp: IdP) -> None:
    """Not every IdP issues JWTs: for an opaque token the scopes come from the token
    response and the audience from the settings."""
    idp.set_default(Reply(jwt=False))
    result = run_cli(tmp_path, "token", "--json", **credentials(idp))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "opaque (not a JWT)"
    assert report["scopes"] == "read:notes write:notes"
    assert report["audience"] == AUDIENCE
    assert report["subject"] == "-"
    assert "access_token" not in report


def test_token_failure_exits_non_zero_with_the_setting_to_fix(tmp_path: Path, idp: IdP) -> None:
    env = credentials(idp, TOOLBRIDGE_AUTH0_CLIENT_SECRET="wrong-secret")
    result = run_cli(tmp_path, "token", **env)
    assert result.returncode == 1
    assert result.stderr.count("invalid_client") == 1, "the error is printed once"
    assert "TOOLBRIDGE_AUTH0_CLIENT_SECRET" in result.stderr
    assert "wrong-secret" not in result.stdout + result.stderr


def test_token_json_is_json_on_failure_too(tmp_path: Path, idp: IdP) -> None:
    env = credentials(idp, TOOLBRIDGE_AUTH0_CLIENT_SECRET="wrong-secret")
    result = run_cli(tmp_path, "token", "--json", **env)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["exit_code"] == 1
    assert "invalid_client" in report["error"]
    assert result.stderr == ""
    bad = run_cli(tmp_path, "token", "--json", TOOLBRIDGE_AUTH0_CLIENT_ID=CLIENT_ID)
    assert bad.returncode == 2
    assert "TOOLBRIDGE_AUTH0_CLIENT_SECRET" in json.loads(bad.stdout)["error"]


def test_token_with_idp_down_reports_unavailable(tmp_path: Path, idp: IdP) -> None:
    idp.set_default(Reply(status=503))
    env = credentials(idp, TOOLBRIDGE_TOKEN_REQUEST_DEADLINE_SECONDS="3")
    result = run_cli(tmp_path, "token", **env)
    assert result.returncode == 1
    assert "HTTP 503" in result.stderr
    assert "unavailable" in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TOOLBRIDGE_AUTH0_CLIENT_ID": CLIENT_ID}, "TOOLBRIDGE_AUTH0_CLIENT_SECRET"),
        ({}, "no client credentials configured"),
    ],
)
def test_token_with_bad_settings_exits_2(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    result = run_cli(tmp_path, "token", **env)
    assert result.returncode == 2
    assert expected in result.stderr


def test_serve_flags_are_settings_the_oauth_checks_see(tmp_path: Path) -> None:
    """``--host 0.0.0.0`` must trip the same public-URL check as TOOLBRIDGE_HOST=0.0.0.0."""
    result = run_cli(
        tmp_path,
        "serve",
        "--host",
        "0.0.0.0",
        TOOLBRIDGE_OAUTH_ISSUER="https://issuer.example.com/",
        TOOLBRIDGE_OAUTH_EXCHANGE_AUDIENCE=AUDIENCE,
    )
    assert result.returncode == 2, result.stderr
    assert "TOOLBRIDGE_PUBLIC_URL" in result.stderr
