"""Sessions, epochs, wipe, state, info, health and the error envelope, on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.conftest import SQLITE_ONLY, Api, User
from toolbridge_api.db.schema import create_engine
from toolbridge_api.db.store import Store
from toolbridge_api.db.sync_state import SyncState
from toolbridge_api.middleware import BodyLimitMiddleware
from toolbridge_api.security import Principal
from toolbridge_common import contract

pytestmark = pytest.mark.usefixtures("backend")

WIPE = {"confirm": "WIPE"}
TABLES = sorted(entity.table for entity in contract.ENTITIES)


def _store(api: Api) -> Store:
    store: Store = api.app.state.store
    return store


def _sync_state(api: Api) -> SyncState:
    sync_state: SyncState = api.app.state.sync_state
    return sync_state


async def _wipe(user: User, body: Any = WIPE, **headers: str) -> httpx.Response:
    """``POST /v1/sync/wipe`` with the user's token and session (not their epoch)."""
    sent = {**user.headers, "X-Sync-Session": user.session_id, **headers}
    return await user.http.post("/v1/sync/wipe", json=body, headers=sent)


async def _state(user: User, **headers: str) -> httpx.Response:
    sent = {**user.headers, "X-Sync-Session": user.session_id, **headers}
    return await user.http.get("/v1/sync/state", headers=sent)


async def test_session_create_get_delete(api: Api) -> None:
    alice = await api.user()
    before = datetime.now(UTC)
    response = await alice.http.post("/v1/sync/sessions", headers=alice.headers)
    assert response.status_code == 201
    body = response.json()
    assert list(body) == ["id", "userId", "createdAt", "expiresAt", "epoch"]
    assert body["userId"] == "auth0|alice"
    assert body["epoch"] == 1
    assert response.headers["X-Sync-Epoch"] == "1"
    created = datetime.fromisoformat(body["createdAt"])
    assert before - timedelta(seconds=1) <= created <= datetime.now(UTC)
    ttl = datetime.fromisoformat(body["expiresAt"]) - created
    assert ttl.total_seconds() == contract.SESSION_TTL_SECONDS == 1800

    got = await alice.http.get(f"/v1/sync/sessions/{body['id']}", headers=alice.headers)
    assert got.status_code == 200
    assert got.json() == body

    gone = await alice.http.delete(f"/v1/sync/sessions/{body['id']}", headers=alice.headers)
    assert gone.status_code == 204
    assert gone.content == b""
    again = await alice.http.get(f"/v1/sync/sessions/{body['id']}", headers=alice.headers)
    assert again.status_code == 404
    twice = await alice.http.delete(f"/v1/sync/sessions/{body['id']}", headers=alice.headers)
    assert twice.status_code == 404


@pytest.mark.parametrize("session_id", [str(uuid.uuid4()), "not-a-uuid", "x" * 300])
async def test_unknown_sessions_are_404(api: Api, session_id: str) -> None:
    alice = await api.user()
    for method in ("GET", "DELETE"):
        response = await alice.http.request(
            method, f"/v1/sync/sessions/{session_id}", headers=alice.headers
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"].startswith("no such live session")


async def test_deleted_session_can_no_longer_be_used(api: Api) -> None:
    alice = await api.user()
    await alice.http.delete(f"/v1/sync/sessions/{alice.session_id}", headers=alice.headers)
    response = await alice.request("GET", "/v1/notes")
    assert response.status_code == 428


async def test_another_users_session_is_403_and_left_alone(api: Api) -> None:
    alice = await api.user("auth0|alice")
    mallory = await api.user("auth0|mallory")
    same_user_other_tenant = await api.user("auth0|alice", tenant_id="acme")
    path = f"/v1/sync/sessions/{alice.session_id}"
    for intruder in (mallory, same_user_other_tenant):
        for method in ("GET", "DELETE"):
            response = await intruder.http.request(method, path, headers=intruder.headers)
            assert response.status_code == 403, (method, response.text)
            assert response.json()["error"] == "this session belongs to another user"
    assert (await alice.http.get(path, headers=alice.headers)).status_code == 200
    assert (await alice.request("GET", "/v1/notes")).status_code == 200


async def test_using_someone_elses_session_is_403(api: Api) -> None:
    alice = await api.user("auth0|alice")
    mallory = await api.user("auth0|mallory")
    await alice.create("notes", {"secret": 1})
    stolen = {"X-Sync-Session": alice.session_id}
    response = await mallory.request("GET", "/v1/notes", headers=stolen)
    assert response.status_code == 403
    assert response.json()["error"] == "X-Sync-Session belongs to another user"
    assert "X-RateLimit-Limit" not in response.headers, "refused before the rate limit"
    for route in (_wipe(mallory, **stolen), _state(mallory, **stolen)):
        assert (await route).status_code == 403
    other_tenant = await api.user("auth0|alice", tenant_id="acme")
    cross = await other_tenant.request("GET", "/v1/notes", headers=stolen)
    assert cross.status_code == 403
    assert (await alice.request("GET", "/v1/notes")).json()["items"] != []


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({"X-Sync-Session": ""}, "missing X-Sync-Session header"),
        ({"X-Sync-Session": "  "}, "missing X-Sync-Session header"),
        ({"X-Sync-Session": str(uuid.uuid4())}, "X-Sync-Session is unknown or expired"),
        ({"X-Sync-Session": "not-a-session"}, "X-Sync-Session is unknown or expired"),
    ],
)
async def test_a_session_is_required_on_entity_routes_wipe_and_state(
    api: Api, headers: dict[str, str], hint: str
) -> None:
    alice = await api.user()
    await alice.create("notes", {"kept": True})
    calls = [
        alice.request("GET", "/v1/notes", headers=headers),
        alice.request("POST", "/v1/notes", json={"a": 1}, headers=headers),
        alice.request("GET", "/v1/sync/notes/pull", headers=headers),
        _wipe(alice, **headers),
        _state(alice, **headers),
    ]
    for call in calls:
        response = await call
        assert response.status_code == 428, response.text
        assert response.json()["error"].startswith(hint)
        assert "POST /v1/sync/sessions" in response.json()["error"]
        assert "X-RateLimit-Limit" not in response.headers, "refused before the rate limit"
    assert len((await alice.request("GET", "/v1/notes")).json()["items"]) == 1


async def test_no_session_header_at_all_is_428(api: Api) -> None:
    alice = await api.user()
    response = await alice.http.get("/v1/notes", headers=alice.headers)
    assert response.status_code == 428
    assert response.json()["error"].startswith("missing X-Sync-Session header")
    state = await alice.http.get("/v1/sync/state", headers=alice.headers)
    assert state.status_code == 428
    wipe = await alice.http.post("/v1/sync/wipe", json=WIPE, headers=alice.headers)
    assert wipe.status_code == 428


async def test_expired_session_is_428(api: Api) -> None:
    alice = await api.user()
    assert (await alice.request("GET", "/v1/notes")).status_code == 200
    await _sync_state(api).expire_sessions(Principal("default", "auth0|alice"))
    response = await alice.request("GET", "/v1/notes")
    assert response.status_code == 428
    assert "expired" in response.json()["error"]
    assert (await _state(alice)).status_code == 428
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
    response = await alice.request(
        "POST", "/v1/notes", json={"a": 1}, headers={"X-Correlation-ID": "c-409"}
    )
    assert response.status_code == 409
    assert response.json() == {"error": "epoch_mismatch", "epoch": 2, "correlation_id": "c-409"}
    assert response.headers["X-Sync-Epoch"] == "2"
    assert response.headers["X-Correlation-ID"] == "c-409"
    assert (await alice.request("GET", "/v1/notes")).status_code == 409
    assert (await alice.request("GET", "/v1/sync/notes/pull")).status_code == 409
    current = await alice.request("GET", "/v1/notes", headers={"X-Sync-Epoch": "2"})
    assert current.status_code == 200
    assert current.json()["items"] == []


@pytest.mark.parametrize("sent", [None, "", "one", "1.0", "0x2", b"\xb2", "-1", "0"])
async def test_a_missing_or_unreadable_epoch_counts_as_0(
    api: Api, sent: str | bytes | None
) -> None:
    """As the original reads X-Sync-Epoch (Atoi; failure is 0), every client is at least at
    epoch 1, so these are all behind the server: 409, never 400 or 428."""
    alice = await api.user()
    headers: dict[str, Any] = {**alice.headers, "X-Sync-Session": alice.session_id}
    if sent is not None:
        headers["X-Sync-Epoch"] = sent
    for method, path, body in (("GET", "/v1/notes", None), ("POST", "/v1/notes", {"a": 1})):
        response = await alice.http.request(method, path, json=body, headers=headers)
        assert response.status_code == 409, (sent, response.text)
        assert response.json()["epoch"] == 1
        assert response.headers["X-Sync-Epoch"] == "1"
    listed = await alice.request("GET", "/v1/notes")
    assert listed.json()["items"] == [], "nothing was written"


async def test_a_client_ahead_of_the_server_is_let_through(api: Api) -> None:
    alice = await api.user()
    for ahead in ("2", "+5", " 3 ", "999999999999999999"):
        response = await alice.request("GET", "/v1/notes", headers={"X-Sync-Epoch": ahead})
        assert response.status_code == 200, (ahead, response.text)
    huge = await alice.request("GET", "/v1/notes", headers={"X-Sync-Epoch": "9" * 19})
    assert huge.status_code == 409, "beyond an int64 the original's Atoi fails too: 0"


async def test_wipe_and_state_check_no_epoch(api: Api) -> None:
    alice = await api.user()
    await _sync_state(api).bump_epoch(Principal("default", "auth0|alice"))
    assert (await alice.request("GET", "/v1/notes")).status_code == 409
    state = await _state(alice, **{"X-Sync-Epoch": "1"})
    assert (state.status_code, state.json()) == (200, {"epoch": 2})
    wiped = await _wipe(alice, **{"X-Sync-Epoch": "1"})
    assert wiped.status_code == 200
    assert wiped.json()["epoch"] == 3


async def test_wipe_deletes_the_callers_items_ends_their_sessions_and_bumps_the_epoch(
    api: Api,
) -> None:
    alice = await api.user("auth0|alice")
    other_device = await api.user("auth0|alice")
    bob = await api.user("auth0|bob")
    for entity in ("notes", "notes", "tasks", "chats", "task_lists"):
        await alice.create(entity, {"x": 1})
    deleted = await alice.create("notes", {"gone": True})
    await alice.request("DELETE", f"/v1/notes/{deleted['uid']}")
    bobs = await bob.create("notes", {"bob": True})

    response = await _wipe(alice, {"confirm": "WIPE", "mode": "anything"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["epoch", "deleted"]
    assert body["epoch"] == 2
    assert list(body["deleted"]) == TABLES
    assert body["deleted"] == {
        "chat": 1,
        "chat_message": 0,
        "comment": 0,
        "note": 3,
        "task": 1,
        "task_list": 1,
        "task_list_category": 0,
    }
    assert response.headers["X-Sync-Epoch"] == "2"

    for user in (alice, other_device):
        stale = await user.request("GET", "/v1/notes")
        assert stale.status_code == 428, "every session of the wiping user ended"
        assert (await _state(user)).status_code == 428
    session = await alice.start_session()
    assert session["epoch"] == 2
    for entity in contract.ENTITY_NAMES:
        listed = await alice.request("GET", f"/v1/{entity}", params={"includeDeleted": "true"})
        assert listed.json()["items"] == []
    assert (await bob.request("GET", f"/v1/notes/{bobs['uid']}")).json() == bobs
    assert (await _state(bob)).json() == {"epoch": 1}


async def test_wipe_without_items_still_bumps_the_epoch(api: Api) -> None:
    alice = await api.user()
    response = await _wipe(alice)
    assert response.json() == {"epoch": 2, "deleted": dict.fromkeys(TABLES, 0)}
    await alice.start_session()
    assert (await _wipe(alice)).json()["epoch"] == 3


@pytest.mark.parametrize(
    ("content", "hint"),
    [
        (b"", "request body is not JSON"),
        (b"{", "request body is not JSON"),
        (b"\xff", "request body is not JSON"),
        (b"{}", "confirmation required"),
        (b'{"confirm": "wipe"}', "confirmation required"),
        (b'{"confirm": "WIPE "}', "confirmation required"),
        (b'{"confirm": true}', "confirmation required"),
        (b'["WIPE"]', "confirmation required"),
        (b'"WIPE"', "confirmation required"),
        (b"null", "confirmation required"),
    ],
)
async def test_wipe_needs_the_confirmation(api: Api, content: bytes, hint: str) -> None:
    alice = await api.user()
    note = await alice.create("notes", {"kept": True})
    headers = {
        **alice.headers,
        "X-Sync-Session": alice.session_id,
        "Content-Type": "application/json",
    }
    response = await alice.http.post("/v1/sync/wipe", content=content, headers=headers)
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert message.startswith(hint)
    assert 'send {"confirm": "WIPE"}' in message
    assert (await alice.request("GET", f"/v1/notes/{note['uid']}")).status_code == 200
    assert (await _state(alice)).json() == {"epoch": 1}


async def test_state_is_the_epoch_and_the_last_wipe(api: Api) -> None:
    alice = await api.user("auth0|alice")
    response = await _state(alice)
    assert response.status_code == 200
    assert response.json() == {"epoch": 1}, "no wipe yet: the keys are absent"

    before = datetime.now(UTC)
    await _wipe(alice)
    await alice.start_session()
    body = (await _state(alice)).json()
    assert list(body) == ["epoch", "lastWipeAt", "lastWipeBy"]
    assert body["epoch"] == 2
    assert body["lastWipeBy"] == "auth0|alice"
    wiped_at = datetime.fromisoformat(body["lastWipeAt"])
    assert body["lastWipeAt"].endswith("Z")
    assert before - timedelta(seconds=1) <= wiped_at <= datetime.now(UTC)

    acme = await api.user("auth0|alice", tenant_id="acme")
    assert (await _state(acme)).json() == {"epoch": 1}, "per tenant"


async def test_bumping_the_epoch_leaves_the_last_wipe(api: Api) -> None:
    alice = await api.user()
    await _wipe(alice)
    await alice.start_session()
    wiped = (await _state(alice)).json()
    await _sync_state(api).bump_epoch(Principal("default", "auth0|alice"))
    assert (await _state(alice)).json() == {**wiped, "epoch": 3}


@SQLITE_ONLY
async def test_info_is_open_and_is_the_contracts(api: Api) -> None:
    before = datetime.now(UTC)
    response = await api.http.get("/v1/sync/info")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    server_time = datetime.fromisoformat(body["serverTime"])
    assert before <= server_time <= datetime.now(UTC)
    assert body == contract.info(server_time)
    assert list(body) == [
        "apiVersion",
        "serverTime",
        "entities",
        "locking",
        "minClientVersion",
        "rateLimit",
        "hints",
    ]
    assert body["apiVersion"] == "1.1"
    assert list(body["entities"]) == sorted(contract.ENTITY_NAMES)
    assert body["entities"]["notes"] == {"maxLimit": 1000, "push": True, "pull": True}
    assert body["locking"] == {"supported": True, "mode": "session"}
    assert body["rateLimit"] == {"windowSeconds": 60, "maxRequests": 600, "burst": 120}
    assert body["hints"] == {"recommendedBatch": 500, "backoffMsOn429": 1500}
    assert "X-RateLimit-Limit" not in response.headers, "open routes are not rate limited"


async def test_healthz_is_open_and_checks_the_database(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = await api.http.get("/healthz")
    assert (ok.status_code, ok.json()) == (
        200,
        {"status": "ok", "database": "ok", "rate_limit": {"backend": "memory", "shared": False}},
    )

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
                "database": "unavailable",
                "correlation_id": "c-503",
            }
            assert response.headers["Retry-After"] == "2"
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
        return next(messages)  # type: ignore[arg-type]

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = BodyLimitMiddleware(app, max_body_bytes=1024)
    scope = {"type": "http", "method": "POST", "path": "/v1/notes", "headers": []}
    await middleware(scope, receive, send)  # type: ignore[arg-type]
    assert called == []
    assert sent == []
