"""The API over real HTTP: in a server thread (``ApiServer``) with tokens from the fake IdP,
and as ``toolbridge-api serve`` in a child process configured only by environment."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.api.conftest import require_postgres
from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET
from tests.support.api import ApiProcess, ApiServer
from tests.support.idp import IdP
from tests.support.jwks import JWKSServer
from toolbridge_api.cli import app as cli
from toolbridge_api.security import tenant_signature

TENANT_SECRET = "tenant-secret-for-http-tests-0123456789"


def idp_token(idp: IdP) -> str:
    response = httpx.post(
        idp.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "audience": AUDIENCE,
        },
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


@pytest.fixture(params=["sqlite", "postgres"])
def api_server(request: pytest.FixtureRequest, idp: IdP) -> Iterator[ApiServer]:
    database_url = None
    if request.param == "postgres":
        require_postgres()
        database_url = request.getfixturevalue("pg_database")
        from tests.api.conftest import _empty_tables
        from tests.support.api import run_blocking

        run_blocking(_empty_tables(database_url))
    with ApiServer(
        idp.base_url + "/.well-known/jwks.json",
        idp.base_url + "/",
        AUDIENCE,
        database_url=database_url,
    ) as server:
        yield server


def test_sync_flow_over_real_http(api_server: ApiServer, idp: IdP) -> None:
    auth = {"Authorization": f"Bearer {idp_token(idp)}"}
    with httpx.Client(base_url=api_server.url, headers=auth) as client:
        session = client.post("/v1/sync/sessions")
        assert session.status_code == 201
        assert session.json()["userId"] == f"{CLIENT_ID}@clients"
        sync = {"X-Sync-Session": session.json()["id"], "X-Sync-Epoch": "1"}
        api_server.reset_counters()

        created = client.post("/v1/tasks", json={"title": "ship"}, headers=sync)
        assert created.status_code == 201
        uid = created.json()["uid"]
        done = client.post(f"/v1/tasks/{uid}/process", json={"action": "complete"}, headers=sync)
        assert done.json()["payload"]["status"] == "done"
        stale = client.put(f"/v1/tasks/{uid}", json={}, headers={**sync, "If-Match": "1"})
        assert stale.status_code == 412
        listed = client.get("/v1/tasks", headers=sync)
        assert [item["uid"] for item in listed.json()["items"]] == [uid]
        assert api_server.requests == 4
        assert api_server.connections == 1

        api_server.bump_epoch(f"{CLIENT_ID}@clients")
        mismatch = client.get("/v1/tasks", headers=sync)
        assert (mismatch.status_code, mismatch.json()["epoch"]) == (409, 2)
        assert mismatch.headers["X-Sync-Epoch"] == "2"

        assert api_server.expire_sessions() == 1
        expired = client.get("/v1/tasks", headers={**sync, "X-Sync-Epoch": "2"})
        assert expired.status_code == 428


def test_oversize_streamed_body_is_413_over_real_http(api_server: ApiServer, idp: IdP) -> None:
    auth = {"Authorization": f"Bearer {idp_token(idp)}"}
    with httpx.Client(base_url=api_server.url, headers=auth) as client:
        session = client.post("/v1/sync/sessions").json()
        sync = {"X-Sync-Session": session["id"], "X-Sync-Epoch": str(session["epoch"])}

        def chunks() -> Iterator[bytes]:
            yield b'{"blob": "'
            for _ in range(64):
                yield b"x" * 32768
            yield b'"}'

        response = client.post(
            "/v1/notes",
            content=chunks(),
            headers={**sync, "Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["correlation_id"] == response.headers["X-Correlation-ID"]
        malformed = client.post(
            "/v1/notes", content=b'{"a": ', headers={**sync, "Content-Type": "application/json"}
        )
        assert malformed.status_code == 400
        assert "not valid JSON" in malformed.json()["error"]
        assert client.get("/v1/notes", headers=sync).json()["items"] == []


def _tenant_headers(tenant_id: str) -> dict[str, str]:
    now_ms = int(time.time() * 1000)
    return {
        "X-TB-Tenant-ID": tenant_id,
        "X-TB-Timestamp": str(now_ms),
        "X-TB-Signature": tenant_signature(TENANT_SECRET, tenant_id, now_ms),
    }


def test_serve_from_environment_with_tenant_headers(tmp_path: Path, api_jwks: JWKSServer) -> None:
    env = {
        "TOOLBRIDGE_API_JWKS_URL": api_jwks.jwks_url,
        "TOOLBRIDGE_API_ISSUER": api_jwks.issuer,
        "TOOLBRIDGE_API_AUDIENCE": AUDIENCE,
        "TOOLBRIDGE_API_TENANT_SECRET": TENANT_SECRET,
    }
    token = api_jwks.mint(sub="auth0|carol")
    with ApiProcess(env, cwd=tmp_path) as api, httpx.Client(base_url=api.url) as client:
        assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
        assert client.get("/v1/sync/info").json()["tenantHeadersRequired"] is True
        schema = client.get("/openapi.json").json()
        assert "/v1/chat_messages/{uid}/process" in schema["paths"]
        assert client.get("/docs").status_code == 200

        auth = {"Authorization": f"Bearer {token}"}
        unsigned = client.post("/v1/sync/sessions", headers={**auth, "X-TB-Tenant-ID": "acme"})
        assert unsigned.status_code in (401, 403)
        signed = client.post("/v1/sync/sessions", headers={**auth, **_tenant_headers("acme")})
        assert signed.status_code == 201
        sync = {"X-Sync-Session": signed.json()["id"], "X-Sync-Epoch": "1"}
        note = client.post(
            "/v1/notes", json={"t": 1}, headers={**auth, **_tenant_headers("acme"), **sync}
        )
        assert note.status_code == 201
    database = tmp_path / ".toolbridge" / "api.db"
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows: list[Any] = conn.execute("SELECT tenant_id, user_id FROM entity_rows").fetchall()
    assert rows == [("acme", "auth0|carol")]
    log = "\n".join(api.output)
    assert TENANT_SECRET not in log
    assert token not in log


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TOOLBRIDGE_API_HS256_SECRET": "super-secret-value-that-must-not-leak-0123"}, "AUDIENCE"),
        ({"TOOLBRIDGE_API_DEBUG_SUB_ENABLED": "1", "TOOLBRIDGE_API_PORT": "x"}, "PORT"),
        ({}, "AUTH0_DOMAIN"),
    ],
)
def test_serve_refuses_bad_configuration_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("TOOLBRIDGE_")]:
        monkeypatch.delenv(name)
    result = CliRunner().invoke(cli, ["serve"], env=env)
    assert result.exit_code == 2
    assert f"TOOLBRIDGE_API_{variable}" in result.output
    assert "super-secret-value" not in result.output
