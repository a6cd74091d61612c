"""The security layer through the real API over HTTP: refused tokens, tenant headers, rate
limit and debug mode as a client sees them (status, error envelope, headers)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LogCapture
from tests.support.api import ApiServer
from tests.support.jwks import JWKSServer, SigningKey, leaked, tamper
from toolbridge_api.security import tenant_signature

TENANT_SECRET = "tenant-secret-for-security-http-tests"
BURST = 5
ROUTE = "/v1/sync/sessions"
"""POST: needs exactly authentication (no session); 201 once the caller is let in."""


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JWKSServer]:
    with JWKSServer() as server:
        yield server


@pytest.fixture
def jwks(jwks_server: JWKSServer) -> Iterator[JWKSServer]:
    yield jwks_server
    jwks_server.release()


@pytest.fixture(scope="module")
def api(jwks_server: JWKSServer) -> Iterator[ApiServer]:
    with ApiServer(
        jwks_server.jwks_url,
        jwks_server.issuer,
        jwks_server.audience,
        tenant_secret=TENANT_SECRET,
        auth_rate_limit_requests=1,
        auth_rate_limit_window_seconds=60,
        auth_rate_limit_burst=BURST,
    ) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_leaks(logs: LogCapture, jwks: JWKSServer) -> Iterator[None]:
    yield
    found = leaked(logs.text(), [*jwks.issued, TENANT_SECRET])
    assert not found, f"{len(found)} token(s) or secret(s) appeared in the logs"


def tenant_headers(tenant: str = "acme", *, secret: str = TENANT_SECRET) -> dict[str, str]:
    timestamp = str(int(time.time() * 1000))
    return {
        "X-TB-Tenant-ID": tenant,
        "X-TB-Timestamp": timestamp,
        "X-TB-Signature": tenant_signature(secret, tenant, timestamp),
    }


def call(api: ApiServer, token: str | None, **headers: str) -> httpx.Response:
    sent = tenant_headers() | headers
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return httpx.post(api.url + ROUTE, headers=sent)


def refusal(response: httpx.Response, status: int, token: str | None = None) -> str:
    """The error message of a refusal, after checking the contract's envelope."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "correlation_id"}
    assert response.headers["X-Correlation-ID"] == body["correlation_id"]
    if token is not None:
        assert not leaked(response.text, [token])
    message: str = body["error"]
    return message


def user() -> str:
    return f"auth0|{uuid.uuid4().hex[:12]}"


def test_valid_token_and_tenant(api: ApiServer, jwks: JWKSServer) -> None:
    response = call(api, jwks.mint(sub=user()))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("expired", "access token has expired"),
        ("not_yet_valid", "access token is not valid yet (nbf or iat in the future)"),
        ("wrong_audience", "access token audience does not include"),
        ("wrong_issuer", "access token issuer is not"),
        ("alg_none", "access token algorithm none is not accepted"),
        ("hs256_with_public_key", "access token algorithm HS256 is not accepted"),
        ("unknown_kid", "access token kid does not match any signing key"),
        ("bad_signature", "access token signature is invalid"),
        ("missing_sub", "access token has no sub claim"),
    ],
)
def test_each_rejected_token_is_401(
    api: ApiServer, jwks: JWKSServer, variant: str, message: str
) -> None:
    now = time.time()
    token = {
        "expired": lambda: jwks.mint(now=now - 3600),
        "not_yet_valid": lambda: jwks.mint(nbf=int(now + 600)),
        "wrong_audience": lambda: jwks.mint(audience="https://other.example"),
        "wrong_issuer": lambda: jwks.mint(issuer="https://evil.example/"),
        "alg_none": lambda: jwks.mint(alg="none"),
        "hs256_with_public_key": lambda: jwks.mint(alg="HS256", key=jwks.key.public_pem),
        "unknown_kid": lambda: jwks.mint(key=SigningKey.generate()),
        "bad_signature": lambda: jwks.track(tamper(jwks.mint())),
        "missing_sub": lambda: jwks.mint(sub=None),
    }[variant]()
    response = call(api, token)
    assert refusal(response, 401, token).startswith(message)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "missing Authorization header"),
        ("Basic dXNlcjpwYXNz", "Authorization must use the Bearer scheme"),
        ("Bearer a.b.c d.e.f", "Authorization: Bearer must be followed by exactly one token"),
    ],
)
def test_missing_or_malformed_authorization(
    api: ApiServer, authorization: str | None, message: str
) -> None:
    headers = tenant_headers()
    if authorization is not None:
        headers["Authorization"] = authorization
    response = httpx.post(api.url + ROUTE, headers=headers)
    assert refusal(response, 401).startswith(message)


def test_tenant_headers_over_http(api: ApiServer, jwks: JWKSServer) -> None:
    token = jwks.mint(sub=user())
    missing = httpx.post(api.url + ROUTE, headers={"Authorization": f"Bearer {token}"})
    assert refusal(missing, 401, token).startswith("missing X-TB-Tenant-ID header")
    forged = call(api, token, **tenant_headers(secret="guessed"))
    assert refusal(forged, 401, token).startswith("X-TB-Signature does not match")
    stale = tenant_headers()
    stale["X-TB-Timestamp"] = str(int(stale["X-TB-Timestamp"]) - 301_000)
    assert "too old" in refusal(call(api, token, **stale), 401, token)


def test_debug_sub_is_refused_when_off(api: ApiServer) -> None:
    response = call(api, None, **{"X-Debug-Sub": "alice"})
    assert refusal(response, 401).startswith("X-Debug-Sub is refused: debug mode is off")


def test_rate_limit_is_429_with_retry_after(api: ApiServer, jwks: JWKSServer) -> None:
    token = jwks.mint(sub=user())
    statuses = [call(api, token).status_code for _ in range(BURST)]
    assert statuses == [201] * BURST
    limited = call(api, token)
    assert refusal(limited, 429, token) == (
        f"rate limit exceeded (1 requests per 60 s, burst {BURST}); retry after 60 s"
    )
    assert limited.headers["Retry-After"] == "60", "one request per minute refills"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert call(api, jwks.mint(sub=user())).status_code == 201, "other users are unaffected"


def test_debug_mode_and_jwks_outage(jwks: JWKSServer) -> None:
    """A server whose JWKS is down answers 503 with Retry-After; debug mode still works."""
    with JWKSServer() as broken:
        broken.fail(503)
        with ApiServer(
            broken.jwks_url, broken.issuer, broken.audience, debug_sub_enabled=True
        ) as api:
            token = broken.mint()
            response = httpx.post(api.url + ROUTE, headers={"Authorization": f"Bearer {token}"})
            message = refusal(response, 503, token)
            assert "signing keys of the identity provider are unavailable" in message
            assert int(response.headers["Retry-After"]) >= 1
            debug = httpx.post(api.url + ROUTE, headers={"X-Debug-Sub": "alice"})
            assert debug.status_code == 201, debug.text
            assert not leaked(response.text, broken.issued)
