"""Rate limiting over real HTTP, on both databases: a token bucket per user in each route
group ("rest": entity routes, "sync": push/pull, "auth": sessions, wipe, state), the
X-RateLimit-* headers on every response that passed the limiter, 429 with Retry-After."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.api import ApiServer
from tests.support.jwks import JWKSServer
from toolbridge_api.security import tenant_signature

REQUESTS, WINDOW, BURST = 1, 600, 4
"""One request per 10 minutes: nothing measurable refills while a test runs."""
AUTH_REQUESTS, AUTH_BURST = 2, 3
TENANT_SECRET = "tenant-secret-for-rate-limit-tests"

Factory = Callable[..., ApiServer]


@pytest.fixture
def make_server(api_jwks: JWKSServer, database_url: str) -> Iterator[Factory]:
    servers: list[ApiServer] = []

    def factory(**settings: Any) -> ApiServer:
        fields: dict[str, Any] = {
            "rate_limit_requests": REQUESTS,
            "rate_limit_window_seconds": WINDOW,
            "rate_limit_burst": BURST,
            "auth_rate_limit_requests": AUTH_REQUESTS,
            "auth_rate_limit_window_seconds": WINDOW,
            "auth_rate_limit_burst": AUTH_BURST,
            **settings,
        }
        server = ApiServer(
            api_jwks.jwks_url,
            api_jwks.issuer,
            api_jwks.audience,
            database_url=database_url,
            **fields,
        ).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


class Client:
    """One user over HTTP: token, and (after ``session()``) session and epoch headers."""

    def __init__(self, server: ApiServer, jwks: JWKSServer, user: str | None = None) -> None:
        self.http = httpx.Client(base_url=server.url)
        self.auth = {"Authorization": f"Bearer {jwks.mint(sub=user or _user())}"}
        self.sync: dict[str, str] = {}

    def session(self) -> httpx.Response:
        response = self.http.post("/v1/sync/sessions", headers=self.auth)
        if response.status_code == 201:
            body = response.json()
            self.sync = {"X-Sync-Session": body["id"], "X-Sync-Epoch": str(body["epoch"])}
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.auth, **self.sync, **kwargs.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kwargs)


def _user() -> str:
    return f"auth0|{uuid.uuid4().hex[:12]}"


def limit_headers(response: httpx.Response) -> dict[str, str]:
    return {
        name: response.headers[name]
        for name in (
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "X-RateLimit-Burst",
        )
        if name in response.headers
    }


def assert_reset_within(response: httpx.Response, before: float, seconds: float) -> None:
    """``X-RateLimit-Reset`` is Unix time when the bucket is full again, rounded up."""
    reset = int(response.headers["X-RateLimit-Reset"])
    assert math.floor(before + seconds) <= reset <= math.ceil(time.time() + seconds)


def test_headers_count_down_then_429_with_retry_after(
    make_server: Factory, api_jwks: JWKSServer
) -> None:
    server = make_server()
    alice = Client(server, api_jwks)
    assert alice.session().status_code == 201
    before = time.time()
    for remaining in range(BURST - 1, -1, -1):
        response = alice.call("GET", "/v1/notes")
        assert response.status_code == 200, response.text
        assert limit_headers(response) | {"X-RateLimit-Reset": "-"} == {
            "X-RateLimit-Limit": str(REQUESTS),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": "-",
            "X-RateLimit-Burst": str(BURST),
        }
        used = BURST - remaining
        assert_reset_within(response, before, used * WINDOW / REQUESTS)

    limited = alice.call("GET", "/v1/notes", headers={"X-Correlation-ID": "c-429"})
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/json"
    body = limited.json()
    assert body == {
        "error": f"rate limit exceeded ({REQUESTS} requests per {WINDOW} s, burst {BURST}); "
        f"retry after {WINDOW} s",
        "correlation_id": "c-429",
    }
    assert limited.headers["Retry-After"] == str(WINDOW)
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["X-RateLimit-Limit"] == str(REQUESTS)
    assert limited.headers["X-RateLimit-Burst"] == str(BURST)
    assert_reset_within(limited, before, BURST * WINDOW / REQUESTS)
    assert alice.call("POST", "/v1/notes", json={"a": 1}).status_code == 429, "nothing written"


def test_at_the_default_rate_retry_after_is_one_second(
    make_server: Factory, api_jwks: JWKSServer
) -> None:
    """600 per 60 s refills one request every 0.1 s: Retry-After is the integer 1, never 0."""
    server = make_server(rate_limit_requests=600, rate_limit_window_seconds=60, rate_limit_burst=3)
    alice = Client(server, api_jwks)
    alice.session()
    statuses = [alice.call("GET", "/v1/notes").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = alice.call("GET", "/v1/notes")
    if limited.status_code == 200:  # a slow machine refilled a token: drain it
        limited = alice.call("GET", "/v1/notes")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert "retry after 1 s" in limited.json()["error"]


def test_groups_have_separate_buckets(make_server: Factory, api_jwks: JWKSServer) -> None:
    server = make_server()
    alice = Client(server, api_jwks)
    first = alice.session()
    assert limit_headers(first)["X-RateLimit-Limit"] == str(AUTH_REQUESTS)
    assert limit_headers(first)["X-RateLimit-Burst"] == str(AUTH_BURST)
    assert limit_headers(first)["X-RateLimit-Remaining"] == str(AUTH_BURST - 1)

    rest = [alice.call("GET", "/v1/notes").status_code for _ in range(BURST + 1)]
    assert rest == [200] * BURST + [429]
    pulls = [alice.call("GET", "/v1/sync/notes/pull") for _ in range(BURST + 1)]
    assert [pull.status_code for pull in pulls] == [200] * BURST + [429], "own bucket"
    assert [pull.headers["X-RateLimit-Remaining"] for pull in pulls] == ["3", "2", "1", "0", "0"]
    push = alice.call("POST", "/v1/sync/notes/push", json={"items": []})
    assert push.status_code == 429, "push and pull share the sync bucket"

    state = alice.call("GET", "/v1/sync/state")
    assert state.status_code == 200, "sessions, wipe and state are the auth group"
    assert limit_headers(state) == {
        "X-RateLimit-Limit": str(AUTH_REQUESTS),
        "X-RateLimit-Remaining": str(AUTH_BURST - 2),
        "X-RateLimit-Reset": state.headers["X-RateLimit-Reset"],
        "X-RateLimit-Burst": str(AUTH_BURST),
    }
    wipe = alice.call("POST", "/v1/sync/wipe", json={"confirm": "nope"})
    assert (wipe.status_code, wipe.headers["X-RateLimit-Remaining"]) == (400, "0")
    assert alice.session().status_code == 429, "the auth bucket is spent"
    assert alice.call("GET", "/v1/sync/state").status_code == 429

    bob = Client(server, api_jwks)
    assert bob.session().status_code == 201, "other users have their own buckets"
    assert bob.call("GET", "/v1/notes").status_code == 200


def test_downstream_errors_carry_the_headers_and_spend_a_request(
    make_server: Factory, api_jwks: JWKSServer
) -> None:
    server = make_server()
    user = _user()
    alice = Client(server, api_jwks, user)
    alice.session()
    server.bump_epoch(user)
    mismatch = alice.call("GET", "/v1/notes")
    assert mismatch.status_code == 409
    assert mismatch.headers["X-Sync-Epoch"] == "2"
    assert limit_headers(mismatch)["X-RateLimit-Remaining"] == str(BURST - 1)
    missing = alice.call("GET", f"/v1/notes/{uuid.uuid4()}", headers={"X-Sync-Epoch": "2"})
    assert missing.status_code == 404
    assert limit_headers(missing)["X-RateLimit-Remaining"] == str(BURST - 2)
    bad = alice.call("GET", "/v1/notes/not-a-uuid", headers={"X-Sync-Epoch": "2"})
    assert bad.status_code == 400
    assert limit_headers(bad)["X-RateLimit-Remaining"] == str(BURST - 3)

    refused = alice.call("GET", "/v1/notes", headers={"X-Sync-Session": str(uuid.uuid4())})
    assert refused.status_code == 428
    assert limit_headers(refused) == {}, "a refused session spends nothing"
    unauthenticated = alice.http.get("/v1/notes", headers=alice.sync)
    assert unauthenticated.status_code == 401
    assert limit_headers(unauthenticated) == {}
    last = alice.call("GET", "/v1/notes", headers={"X-Sync-Epoch": "2"})
    assert (last.status_code, last.headers["X-RateLimit-Remaining"]) == (200, "0")


def test_open_routes_are_not_limited(make_server: Factory, api_jwks: JWKSServer) -> None:
    server = make_server()
    with httpx.Client(base_url=server.url) as http:
        for _ in range(BURST + 2):
            for path in ("/healthz", "/v1/sync/info"):
                response = http.get(path)
                assert response.status_code == 200
                assert limit_headers(response) == {}


def _tenant(tenant: str) -> dict[str, str]:
    stamp = str(int(time.time() * 1000))
    return {
        "X-TB-Tenant-ID": tenant,
        "X-TB-Timestamp": stamp,
        "X-TB-Signature": tenant_signature(TENANT_SECRET, tenant, stamp),
    }


def test_signed_tenants_have_their_own_buckets(make_server: Factory, api_jwks: JWKSServer) -> None:
    server = make_server(tenant_secret=TENANT_SECRET)
    user = _user()
    acme, other = Client(server, api_jwks, user), Client(server, api_jwks, user)
    statuses = [
        acme.call("POST", "/v1/sync/sessions", headers=_tenant("acme")).status_code
        for _ in range(AUTH_BURST + 1)
    ]
    assert statuses == [201] * AUTH_BURST + [429]
    created = other.call("POST", "/v1/sync/sessions", headers=_tenant("other"))
    assert created.status_code == 201, "(tenant, user) is the key once tenants are signed"


def test_made_up_tenants_share_the_users_bucket(make_server: Factory, api_jwks: JWKSServer) -> None:
    """Without a tenant secret the tenant header is the caller's free choice: a new one per
    request must not buy a fresh budget."""
    server = make_server()
    alice = Client(server, api_jwks)
    statuses = [
        alice.call(
            "POST", "/v1/sync/sessions", headers={"X-TB-Tenant-ID": f"made-up-{n}"}
        ).status_code
        for n in range(AUTH_BURST + 1)
    ]
    assert statuses == [201] * AUTH_BURST + [429]
