"""``toolbridge-dev-issuer`` as a user runs it: subprocesses with settings in their
environment, serving real HTTP on 127.0.0.1 and minting user tokens with the same key."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt

from tests.conftest import CLIENT_ID, CLIENT_SECRET, NASTY_SECRET
from tests.support.dev_issuer import (
    AUDIENCE,
    OTHER_AUDIENCE,
    IssuerProcess,
    cli_env,
    run_cli,
    track,
    verify,
)
from tests.support.jwks import leaked

CLIENTS_JSON = json.dumps({CLIENT_ID: CLIENT_SECRET, "other": NASTY_SECRET})
AUDIENCES_JSON = json.dumps([AUDIENCE, OTHER_AUDIENCE])


def test_serve_and_mint_share_the_persisted_key(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path / "state",
        TOOLBRIDGE_DEV_ISSUER_CLIENTS=CLIENTS_JSON,
        TOOLBRIDGE_DEV_ISSUER_AUDIENCES=AUDIENCES_JSON,
    )
    with IssuerProcess(tmp_path, env) as server:
        issuer_url = f"{server.url}/"
        jwks_url = f"{server.url}/.well-known/jwks.json"
        discovery = httpx.get(f"{server.url}/.well-known/oauth-authorization-server").json()
        assert discovery["issuer"] == issuer_url
        answer = httpx.post(
            discovery["token_endpoint"],
            data={"grant_type": "client_credentials"},
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
        assert answer.status_code == 200, answer.text
        client_token = track(answer.json()["access_token"])
        assert verify(client_token, jwks_url, issuer=issuer_url)["sub"] == f"{CLIENT_ID}@clients"
        refused = httpx.post(
            discovery["token_endpoint"],
            data={"grant_type": "client_credentials"},
            auth=(CLIENT_ID, NASTY_SECRET),
        )
        assert refused.status_code == 401

        minted = run_cli(
            tmp_path,
            env | {"TOOLBRIDGE_DEV_ISSUER_PORT": str(server.port)},
            "mint",
            "--sub",
            "alice",
        )
        assert minted.returncode == 0, minted.stderr
        user_token = track(minted.stdout.strip())
        assert minted.stdout == f"{user_token}\n"
        claims = verify(user_token, jwks_url, issuer=issuer_url)
        assert (claims["sub"], claims["aud"]) == ("alice", AUDIENCE)
        assert claims["exp"] - claims["iat"] == 3600
        assert "gty" not in claims
    (kid,) = {line.split(": key ")[1].split(",")[0] for line in server.output if ": key " in line}
    assert jwt.get_unverified_header(user_token)["kid"] == kid

    log = "\n".join(server.output)
    assert (
        f"Dev issuer (DEVELOPMENT ONLY) at {issuer_url}: key {kid}, 2 clients, tokens last 3600 s"
    ) in log
    assert f"Issued a token to client {CLIENT_ID} for {AUDIENCE}, valid 3600 s" in log
    assert f"Refused client authentication for client {CLIENT_ID}" in log
    assert not leaked(log, [CLIENT_SECRET, NASTY_SECRET, client_token, user_token])


def test_serve_without_clients_warns_how_to_register_one(tmp_path: Path) -> None:
    with IssuerProcess(tmp_path, cli_env(tmp_path / "state")) as server:
        assert httpx.get(f"{server.url}/.well-known/jwks.json").status_code == 200
    log = "\n".join(server.output)
    assert "No clients registered" in log
    assert 'TOOLBRIDGE_DEV_ISSUER_CLIENTS=\'{"my-client":"my-secret"}\'' in log


def test_mint_json_with_audience_lifetime_and_scope(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path / "state",
        TOOLBRIDGE_DEV_ISSUER_AUDIENCES=AUDIENCES_JSON,
        TOOLBRIDGE_DEV_ISSUER_ISSUER_URL="http://issuer.dev.local:8090/",
    )
    args = ["--sub", "bob", "--audience", OTHER_AUDIENCE, "--lifetime", "60", "--scope", "a b"]
    result = run_cli(tmp_path, env, "mint", *args, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    token = track(report["token"])
    assert (report["sub"], report["aud"]) == ("bob", OTHER_AUDIENCE)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "http://issuer.dev.local:8090/"
    assert claims["scope"] == "a b"
    assert claims["exp"] - claims["iat"] == 60
    assert report["expires_at"] == (
        datetime.fromtimestamp(claims["exp"], UTC).isoformat().replace("+00:00", "Z")
    )
    assert "Created signing key" in result.stderr


def test_mint_refuses_an_unregistered_audience(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path,
        cli_env(tmp_path / "state"),
        "mint",
        "--sub",
        "a",
        "--audience",
        "https://evil.example",
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: audience https://evil.example is not registered")
    assert "TOOLBRIDGE_DEV_ISSUER_AUDIENCES" in result.stderr


def test_corrupt_key_file_stops_mint_and_serve_naming_it(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    key_file = state_dir / "signing-key.pem"
    key_file.write_bytes(b"garbage")
    for command in (["mint", "--sub", "alice"], ["serve"]):
        result = run_cli(tmp_path, cli_env(state_dir), *command)
        assert result.returncode == 1
        assert result.stdout == ""
        assert f"Error: the signing key {key_file} is not an unencrypted RSA" in result.stderr
    assert key_file.read_bytes() == b"garbage"


def test_bad_settings_exit_2_naming_the_variable_not_the_secret(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path / "state",
        TOOLBRIDGE_DEV_ISSUER_HOST="0.0.0.0",
        TOOLBRIDGE_DEV_ISSUER_CLIENTS=CLIENTS_JSON,
    )
    result = run_cli(tmp_path, env, "serve")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: Invalid configuration:")
    assert "TOOLBRIDGE_DEV_ISSUER_ALLOW_REMOTE=true" in result.stderr

    env["TOOLBRIDGE_DEV_ISSUER_HOST"] = "127.0.0.1"
    env["TOOLBRIDGE_DEV_ISSUER_CLIENTS"] = CLIENTS_JSON[:-1]
    result = run_cli(tmp_path, env, "mint", "--sub", "alice")
    assert result.returncode == 2
    assert "TOOLBRIDGE_DEV_ISSUER_CLIENTS: not valid JSON" in result.stderr
    assert CLIENT_SECRET not in result.stderr
    assert not (tmp_path / "state").exists()


def test_module_entry_point_says_development_only(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "toolbridge_dev.issuer", "serve", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: toolbridge-dev-issuer serve" in result.stdout
    assert "DEVELOPMENT ONLY" in result.stdout
