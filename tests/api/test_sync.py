"""Sessions, epochs, wipe, state, info, health and the error envelope, on both databases."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.api.conftest import SQLITE_ONLY, Api
from toolbridge_api.db.schema import create_engine
from toolbridge_api.db.store import Store
from toolbridge_api.db.sync_state import SyncState
from toolbridge_api.entities import ENTITY_NAMES
from toolbridge_api.middleware import BodyLimitMiddleware
from toolbridge_api.routes import health
from toolbridge_api.security import Principal

pytestmark = pytest.mark.usefixtures("backend")


def _store(api: Api) -> Store:
    store: Store = api.app.state.store
    return store


def _sync_state(api: Api) -> SyncState:
    sync_state: SyncState = api.app.state.sync_state
    return sync_state


async def test_session_create_get_delete(api: Api) -> None:
    alice = await api.user()
    response = await alice.http.post("/v1/sync/sessions", headers=alice.headers)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "userId", "createdAt", "expiresAt", "epoch"}
    assert body["userId"] == "auth0|alice"
    assert body["epoch"] == 1
    assert response.headers["X-Sync-Epoch"] == "1"
    ttl = datetime.fromisoformat(body["expiresAt"]) - datetime.fromisoformat(body["createdAt"])
    assert ttl.total_seconds() == 1800

    got = await alice.http.get(f"/v1/sync/sessions/{body['id']}", headers=alice.headers)
    assert got.status_code == 200
    assert got.json() == body

    gone = await alice.http.delete(f"/v1/sync/sessions/{body['id']}", headers=alice.headers)
    assert gone.status_code == 204
    again = await alice.http.get(f"/v1/sync/sessions/{body['id']}", headers=alice.headers)
    assert again.status_code == 404
    twice = await alice.http.delete(f"/v1/sync/sessions/{body['id']}", headers=alice.headers)
    assert twice.status_code == 404


async def test_deleted_session_can_no_longer_be_used(api: Api) -> None:
    alice = await api.user()
    await alice.http.delete(f"/v1/sync/sessions/{alice.session_id}", headers=alice.headers)
    response = await alice.request("GET", "/v1/notes")
    assert response.status_code == 428


async def test_other_users_sessions_are_invisible(api: Api) -> None:
    alice = await api.user("auth0|alice")
    mallory = await api.user("auth0|mallory")
    path = f"/v1/sync/sessions/{alice.session_id}"
    assert (await mallory.http.get(path, headers=mallory.headers)).status_code == 404
    assert (await mallory.http.delete(path, headers=mallory.headers)).status_code == 404
    assert (await alice.http.get(path, headers=alice.headers)).status_code == 200


async def test_using_someone_elses_session_is_403(api: Api) -> None:
    alice = await api.user("auth0|alice")
    mallory = await api.user("auth0|mallory")
    await alice.create("notes", {"secret": 1})
    response = await mallory.request(
        "GET", "/v1/notes", headers={"X-Sync-Session": alice.session_id}
    )
    assert response.status_code == 403
    assert "another user" in response.json()["error"]
    other_tenant = await api.user("auth0|alice", tenant_id="acme")
    cross = await other_tenant.request(
        "GET", "/v1/notes", headers={"X-Sync-Session": alice.session_id}
    )
    assert cross.status_code == 403


@pytest.mark.parametrize(
    ("headers", "status", "hint"),
    [
        ({"X-Sync-Session": ""}, 428, "missing X-Sync-Session"),
        ({"X-Sync-Session": str(uuid.uuid4())}, 428, "unknown or expired"),
        ({"X-Sync-Epoch": ""}, 428, "missing X-Sync-Epoch"),
        ({"X-Sync-Epoch": "one"}, 400, "X-Sync-Epoch must be"),
        # Latin-1 "²": str.isdigit() says yes, int() says no; it once was a 500.
        ({"X-Sync-Epoch": b"\xb2"}, 400, "X-Sync-Epoch must be"),
    ],
)
async def test_session_and_epoch_preconditions(
    api: Api, headers: dict[str, str | bytes], status: int, hint: str
) -> None:
    alice = await api.user()
    for method, path, body in (("GET", "/v1/notes", None), ("POST", "/v1/notes", {"a": 1})):
        response = await alice.request(method, path, json=body, headers=headers)
        assert response.status_code == status
        assert hint in response.json()["error"]
    assert await _sync_state(api).state(Principal("default", "auth0|alice")) == {}


async def test_expired_session_is_428(api: Api) -> None:
    alice = await api.user()
    assert (await alice.request("GET", "/v1/notes")).status_code == 200
    await _sync_state(api).expire_sessions(Principal("default", "auth0|alice"))
    response = await alice.request("GET", "/v1/notes")
    assert response.status_code == 428
    assert "expired" in response.json()["error"]
    got = await alice.http.get(f"/v1/sync/sessions/{alice.session_id}", headers=alice.headers)
    assert got.status_code == 404


async def test_new_sessions_purge_the_callers_expired_ones(api: Api) -> None:
    alice = await api.user("auth0|alice")
    bob = await api.user("auth0|bob")
    store = _sync_state(api)
    await store.expire_sessions()
    expired_alice, expired_bob = alice.session_id, bob.session_id
    await alice.start_session()
    other_device = alice.session_id
    await alice.start_session()
    assert await store.check_session(expired_alice) is None
    assert await store.check_session(expired_bob) is not None
    assert await store.check_session(other_device) is not None, "live sessions stay"
    assert await store.check_session(alice.session_id) is not None


async def test_epoch_mismatch_is_409_with_the_current_epoch(api: Api) -> None:
    alice = await api.user()
    await _sync_state(api).bump_epoch(Principal("default", "auth0|alice"))
    response = await alice.request("POST", "/v1/notes", json={"a": 1})
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "epoch_mismatch"
    assert body["epoch"] == 2
    assert body["correlation_id"]
    ahead = await alice.request("GET", "/v1/notes", headers={"X-Sync-Epoch": "3"})
    assert ahead.status_code == 409
    assert (await alice.request("GET", "/v1/notes", headers={"X-Sync-Epoch": "2"})).json() == {
        "items": [],
        "nextCursor": None,
    }


async def test_wipe_deletes_the_callers_items_and_bumps_the_epoch(api: Api) -> None:
    alice = await api.user("auth0|alice")
    bob = await api.user("auth0|bob")
    for entity in ENTITY_NAMES:
        await alice.create(entity, {"x": 1})
    bobs = await bob.create("notes", {"bob": True})

    response = await alice.http.post("/v1/sync/wipe", headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == {"epoch": 2, "deleted": len(ENTITY_NAMES)}
    assert response.headers["X-Sync-Epoch"] == "2"

    stale = await alice.request("GET", "/v1/notes")
    assert stale.status_code == 409
    session = await alice.start_session()
    assert session["epoch"] == 2
    for entity in ENTITY_NAMES:
        listed = await alice.request("GET", f"/v1/{entity}", params={"includeDeleted": "true"})
        assert listed.json()["items"] == []
    assert (await bob.request("GET", f"/v1/notes/{bobs['uid']}")).json() == bobs


async def test_state_counts_items_per_entity(api: Api) -> None:
    alice = await api.user()
    first = await alice.create("notes", {})
    await alice.create("notes", {})
    await alice.request("PUT", f"/v1/notes/{first['uid']}", json={"v": 2})
    await alice.request("DELETE", f"/v1/notes/{first['uid']}")
    await alice.create("tasks", {})
    response = await alice.http.get("/v1/sync/state", headers=alice.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["epoch"] == 1
    assert body["userId"] == "auth0|alice"
    assert set(body["entities"]) == set(ENTITY_NAMES)
    notes = body["entities"]["notes"]
    assert (notes["count"], notes["deleted"], notes["latestVersion"]) == (1, 1, 3)
    assert notes["latestUpdatedAt"] is not None
    assert body["entities"]["tasks"]["count"] == 1
    assert body["entities"]["chats"] == {
        "count": 0,
        "deleted": 0,
        "latestVersion": 0,
        "latestUpdatedAt": None,
    }


@SQLITE_ONLY
async def test_info_is_open_and_describes_the_server(api: Api) -> None:
    response = await api.http.get("/v1/sync/info")
    assert response.status_code == 200
    body = response.json()
    assert body["entities"]["notes"] == ["pin", "unpin", "archive", "unarchive"]
    assert body["entities"]["chat_messages"] == ["mark_read", "mark_delivered"]
    assert body["limits"]["listMaxLimit"] == 1000
    assert body["limits"]["maxBodyBytes"] == 1024 * 1024
    assert body["tenantHeadersRequired"] is False


@SQLITE_ONLY
async def test_info_does_not_read_package_metadata_per_request(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []

    def counting_version(name: str) -> str:
        reads.append(name)
        return "9.9.9"

    monkeypatch.setattr(health, "version", counting_version)
    for _ in range(3):
        assert (await api.http.get("/v1/sync/info")).status_code == 200
    assert len(reads) <= 1


async def test_healthz_is_open_and_checks_the_database(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = await api.http.get("/healthz")
    assert (ok.status_code, ok.json()) == (200, {"status": "ok", "database": "ok"})

    async def broken() -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(_store(api), "ping", broken)
    down = await api.http.get("/healthz")
    assert down.status_code == 503
    assert down.json()["error"] == "database unavailable"


@SQLITE_ONLY
async def test_an_unreachable_database_is_a_503_on_data_routes(api: Api) -> None:
    alice = await api.user()
    store = _store(api)
    working = store.engine
    store.engine = create_engine("postgresql+asyncpg://postgres:hunter2@127.0.0.1:1/none")
    try:
        for method, path in (("GET", "/v1/notes"), ("GET", "/v1/sync/state")):
            response = await alice.request(method, path, headers={"X-Correlation-ID": "c-503"})
            assert response.status_code == 503, response.text
            assert response.json() == {
                "error": "database unavailable; retry later",
                "correlation_id": "c-503",
            }
    finally:
        await store.engine.dispose()
        store.engine = working


@SQLITE_ONLY
@pytest.mark.parametrize(
    "path", ["/v1/notes", "/v1/sync/sessions", "/v1/sync/state", "/v1/sync/wipe"]
)
async def test_v1_routes_need_a_token(api: Api, path: str) -> None:
    method = "GET" if path in ("/v1/notes", "/v1/sync/state") else "POST"
    response = await api.http.request(method, path)
    assert response.status_code == 401
    assert response.json()["error"]


@SQLITE_ONLY
async def test_correlation_id_is_echoed_or_generated(api: Api) -> None:
    echoed = await api.http.get("/v1/nope", headers={"X-Correlation-ID": "req-42.a:b"})
    assert echoed.status_code == 404
    assert echoed.headers["X-Correlation-ID"] == "req-42.a:b"
    assert echoed.json() == {"error": "no such route", "correlation_id": "req-42.a:b"}

    generated = await api.http.get("/healthz")
    assert len(generated.headers["X-Correlation-ID"]) == 32

    for insane in ("a b", "x" * 200, "<script>"):
        replaced = await api.http.get("/healthz", headers={"X-Correlation-ID": insane})
        assert replaced.headers["X-Correlation-ID"] != insane
        assert len(replaced.headers["X-Correlation-ID"]) == 32


@SQLITE_ONLY
async def test_wrong_method_is_405_in_the_error_shape(api: Api) -> None:
    response = await api.http.put("/healthz")
    assert response.status_code == 405
    assert set(response.json()) == {"error", "correlation_id"}
    assert response.headers["Allow"] == "GET"


@SQLITE_ONLY
async def test_405_allow_lists_every_method_of_the_path(api: Api) -> None:
    response = await api.http.put(f"/v1/sync/sessions/{uuid.uuid4()}")
    assert response.status_code == 405
    assert response.headers["Allow"] == "DELETE, GET"
    item_path = await api.http.post(f"/v1/notes/{uuid.uuid4()}")
    assert item_path.headers["Allow"] == "DELETE, GET, PATCH, PUT"


@SQLITE_ONLY
async def test_unexpected_errors_are_a_bare_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await api.user()

    async def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("internal detail: dsn=postgresql://admin:hunter2@db")

    monkeypatch.setattr(_store(api), "list_items", explode)
    # The 500 handler answers, then Starlette re-raises for the server to log the traceback.
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        alice.http = http
        response = await alice.request("GET", "/v1/notes", headers={"X-Correlation-ID": "c-500"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error", "correlation_id": "c-500"}
    assert response.headers["X-Correlation-ID"] == "c-500"
    assert "hunter2" not in response.text


@SQLITE_ONLY
async def test_a_body_cut_short_by_a_disconnect_runs_nothing() -> None:
    called: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope["path"])

    messages = iter(
        [
            {"type": "http.request", "body": b'{"a": 1}', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = BodyLimitMiddleware(app, max_body_bytes=1024)
    scope = {"type": "http", "method": "POST", "path": "/v1/notes", "headers": []}
    await middleware(scope, receive, send)
    assert called == []
    assert sent == []
