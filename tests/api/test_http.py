"""The API over real HTTP: in a server thread (``ApiServer``) with tokens from the fake IdP,
and as ``toolbridge-api serve`` in a child process configured only by environment."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET, NASTY_SECRET
from tests.support.api import ApiProcess, ApiServer
from tests.support.idp import IdP
from tests.support.jwks import JWKSServer
from toolbridge_api.cli import app as cli
from toolbridge_api.security import tenant_signature
from toolbridge_common import contract

TENANT_SECRET = "tenant-secret-for-http-tests-0123456789"


def idp_token(idp: IdP, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> str:
    return idp.fetch_token(client_id, secret, AUDIENCE)


@pytest.fixture
def api_server(idp: IdP, database_url: str) -> Iterator[ApiServer]:
    """The API over real HTTP on each database, trusting the fake IdP's tokens."""
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
        assert done.json()["payload"]["status"] == "completed"
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
        assert mismatch.headers["X-RateLimit-Burst"] == "1000000"

        assert api_server.expire_sessions() == 1
        expired = client.get("/v1/tasks", headers={**sync, "X-Sync-Epoch": "2"})
        assert expired.status_code == 428


def test_the_originals_wipe_flow_over_real_http(idp: IdP, database_url: str) -> None:
    """The original README's and scripts' flow, as they call it (X-Debug-Sub, no token):
    session, push, pull; wipe with the confirmation; the old session is gone (428), a new
    session brings the new epoch, and the old epoch is refused (409)."""
    with (
        ApiServer(
            idp.base_url + "/.well-known/jwks.json",
            idp.base_url + "/",
            AUDIENCE,
            database_url=database_url,
            debug_sub_enabled=True,
        ) as server,
        httpx.Client(base_url=server.url, headers={"X-Debug-Sub": "smoke-test-user"}) as client,
    ):
        session = client.post("/v1/sync/sessions")
        assert session.status_code == 201
        assert session.headers["X-Sync-Epoch"] == "1"
        old = {"X-Sync-Session": session.json()["id"], "X-Sync-Epoch": "1"}
        note = str(uuid.uuid4())
        item = {
            "uid": note,
            "title": "Smoke Test Note",
            "content": "This is a smoke test",
            "updatedTs": "2025-11-03T10:00:00Z",
            "sync": {"version": 1, "isDeleted": False},
        }
        pushed = client.post("/v1/sync/notes/push", json={"items": [item]}, headers=old)
        assert pushed.status_code == 200, pushed.text
        assert pushed.json()[0]["version"] == 1
        pulled = client.get("/v1/sync/notes/pull", params={"limit": 100}, headers=old).json()
        assert [upsert["uid"] for upsert in pulled["upserts"]] == [note]

        refused = client.post("/v1/sync/wipe", json={}, headers=old)
        assert refused.status_code == 400
        assert 'send {"confirm": "WIPE"}' in refused.json()["error"]
        wiped = client.post("/v1/sync/wipe", json={"confirm": "WIPE"}, headers=old)
        assert wiped.status_code == 200, wiped.text
        assert wiped.json() == {"epoch": 2, "deleted": {**_NONE_DELETED, "note": 1}}

        gone = client.get("/v1/sync/notes/pull", headers=old)
        assert gone.status_code == 428
        assert "POST /v1/sync/sessions" in gone.json()["error"]
        assert client.get("/v1/sync/state", headers=old).status_code == 428

        renewed = client.post("/v1/sync/sessions")
        assert renewed.json()["epoch"] == 2
        assert renewed.headers["X-Sync-Epoch"] == "2"
        stale = {"X-Sync-Session": renewed.json()["id"], "X-Sync-Epoch": "1"}
        mismatch = client.get("/v1/sync/notes/pull", headers=stale)
        assert mismatch.status_code == 409
        body = mismatch.json()
        assert (body["error"], body["epoch"]) == ("epoch_mismatch", 2)
        assert body["correlation_id"] == mismatch.headers["X-Correlation-ID"]
        assert mismatch.headers["X-Sync-Epoch"] == "2"
        push_stale = client.post("/v1/sync/notes/push", json={"items": [item]}, headers=stale)
        assert push_stale.status_code == 409

        current = {**stale, "X-Sync-Epoch": "2"}
        empty = client.get("/v1/sync/notes/pull", headers=current)
        assert empty.json() == {"upserts": [], "deletes": []}
        state = client.get("/v1/sync/state", headers=current).json()
        assert (state["epoch"], state["lastWipeBy"]) == (2, "smoke-test-user")
        assert datetime.fromisoformat(state["lastWipeAt"]) <= datetime.now(UTC)


def test_every_entity_feature_once_over_real_http(api_server: ApiServer, idp: IdP) -> None:
    owner = {"Authorization": f"Bearer {idp_token(idp)}"}
    other = {"Authorization": f"Bearer {idp_token(idp, 'nasty-client', NASTY_SECRET)}"}
    with httpx.Client(base_url=api_server.url) as client:
        sync = _sync_headers(client, owner)
        uids = [
            client.post("/v1/notes", json={"i": i}, headers=sync).json()["uid"] for i in range(3)
        ]
        patched = client.patch(f"/v1/notes/{uids[0]}", json={"i": None, "t": 1}, headers=sync)
        assert {k: patched.json()["payload"][k] for k in ("i", "t")} == {"i": None, "t": 1}
        archived = client.post(f"/v1/notes/{uids[0]}/archive", headers=sync)
        assert archived.json()["payload"]["status"] == "archived"
        assert client.delete(f"/v1/notes/{uids[1]}", headers=sync).status_code == 200
        assert client.get(f"/v1/notes/{uids[1]}", headers=sync).status_code == 410
        first = client.get("/v1/notes", params={"limit": 1}, headers=sync).json()
        rest = client.get(
            "/v1/notes",
            params={"cursor": first["nextCursor"], "includeDeleted": "true"},
            headers=sync,
        ).json()
        # (updated time, uid) order: the untouched note, then the archived, then the deleted.
        order = [uids[2], uids[0], uids[1]]
        assert [i["uid"] for i in first["items"] + rest["items"]] == order
        state = client.get("/v1/sync/state", headers=sync)
        assert (state.status_code, state.json()) == (200, {"epoch": 1})

        intruder = _sync_headers(client, other)
        assert client.get(f"/v1/notes/{uids[0]}", headers=intruder).status_code == 404
        assert client.put(f"/v1/notes/{uids[0]}", json={}, headers=intruder).status_code == 404
        assert client.get("/v1/notes", headers=intruder).json()["items"] == []
        assert (
            client.get(
                "/v1/notes", headers={**intruder, **{"X-Sync-Session": sync["X-Sync-Session"]}}
            ).status_code
            == 403
        )

        wiped = client.post("/v1/sync/wipe", json={"confirm": "WIPE"}, headers=sync).json()
        assert wiped == {"epoch": 2, "deleted": {**_NONE_DELETED, "note": 3}}
        assert client.get("/v1/notes", headers=sync).status_code == 428
        assert client.get("/v1/notes", headers=intruder).status_code == 200, "only the owner's"


_NONE_DELETED = {entity.table: 0 for entity in contract.ENTITIES}


def _sync_headers(client: httpx.Client, auth: dict[str, str]) -> dict[str, str]:
    session = client.post("/v1/sync/sessions", headers=auth).json()
    return {**auth, "X-Sync-Session": session["id"], "X-Sync-Epoch": str(session["epoch"])}


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
    now_ms = str(int(time.time() * 1000))
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
        assert client.get("/healthz").json() == {
            "status": "ok",
            "database": "ok",
            "rate_limit": {"backend": "memory", "shared": False},
        }
        info = client.get("/v1/sync/info").json()
        assert info == contract.info(datetime.fromisoformat(info["serverTime"]))
        schema = client.get("/openapi.json").json()
        assert "/v1/chat_messages/{uid}/process" in schema["paths"]
        assert client.get("/docs").status_code == 200

        auth = {"Authorization": f"Bearer {token}"}
        unsigned = client.post("/v1/sync/sessions", headers={**auth, "X-TB-Tenant-ID": "acme"})
        assert unsigned.status_code == 401
        forged = {**_tenant_headers("acme"), "X-TB-Signature": "0" * 64}
        wrong = client.post("/v1/sync/sessions", headers={**auth, **forged})
        assert wrong.status_code == 401, "every tenant-header failure is a 401"
        assert wrong.json()["error"].startswith("X-TB-Signature does not match")
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


def test_processes_sharing_a_database_share_sessions_and_epochs(
    idp: IdP, database_url: str
) -> None:
    """Two API servers on one database, as behind a load balancer."""
    jwks, issuer = idp.base_url + "/.well-known/jwks.json", idp.base_url + "/"
    auth = {"Authorization": f"Bearer {idp_token(idp)}"}
    with (
        ApiServer(jwks, issuer, AUDIENCE, database_url=database_url) as first,
        ApiServer(jwks, issuer, AUDIENCE, database_url=database_url) as second,
        httpx.Client(headers=auth) as client,
    ):
        session = client.post(f"{first.url}/v1/sync/sessions").json()
        sync = {"X-Sync-Session": session["id"], "X-Sync-Epoch": str(session["epoch"])}
        created = client.post(f"{second.url}/v1/notes", json={"n": 1}, headers=sync)
        assert created.status_code == 201
        got = client.get(f"{first.url}/v1/notes/{created.json()['uid']}", headers=sync)
        assert got.json() == created.json()

        wiped = client.post(f"{second.url}/v1/sync/wipe", json={"confirm": "WIPE"}, headers=sync)
        assert wiped.json()["epoch"] == 2
        assert client.get(f"{first.url}/v1/notes", headers=sync).status_code == 428
        fresh = client.post(f"{first.url}/v1/sync/sessions").json()
        assert fresh["epoch"] == 2
        renewed = {"X-Sync-Session": fresh["id"], "X-Sync-Epoch": "1"}
        assert client.get(f"{second.url}/v1/notes", headers=renewed).status_code == 409
        renewed["X-Sync-Epoch"] = "2"
        assert client.get(f"{second.url}/v1/notes", headers=renewed).status_code == 200
        client.delete(f"{second.url}/v1/sync/sessions/{fresh['id']}")
        gone = client.get(f"{first.url}/v1/notes", headers=renewed)
        assert gone.status_code == 428
