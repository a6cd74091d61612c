"""``POST /auth/token-exchange`` (RFC 8693): a user's token for the MCP server becomes a
short-lived API token for the same user, signed with the API's own key, published at the API's
JWKS and accepted by the API next to the identity provider's tokens. The original's JSON shape
and the standard form body; RFC 6749 §5.2 errors; the "auth" rate limit; the key file."""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.api.conftest import SQLITE_ONLY, Api
from tests.support.jwks import AUDIENCE, JWKSServer, SigningKey
from toolbridge_api.config import ApiSettings, load_api_settings
from toolbridge_common.settings import ConfigError
from toolbridge_common.signing_keys import SigningKey as ApiKey

pytestmark = SQLITE_ONLY

MCP_AUDIENCE = "https://mcp.toolbridge.test/mcp"
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
PATH = "/auth/token-exchange"
OWN_ISSUER = "toolbridge-api"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-key") / "keys" / "api-signing-key.pem"


@pytest.fixture
async def exchanging(make_api: Callable[..., Any], key_file: Path) -> Api:
    """The API with token exchange on for the MCP server's audience."""
    made: Api = await make_api(
        exchange_subject_audience=MCP_AUDIENCE, exchange_signing_key_file=key_file
    )
    return made


def user_token(jwks: JWKSServer, sub: str = "auth0|alice", **claims: Any) -> str:
    """What a user's MCP client holds: a token of the IdP for the MCP server."""
    claims.setdefault("audience", MCP_AUDIENCE)
    return jwks.mint(sub=sub, **claims)


def form(subject: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": GRANT,
        "subject_token": subject,
        "subject_token_type": ACCESS,
        "audience": AUDIENCE,
    } | extra


async def exchange(api: Api, subject: str, **extra: str) -> httpx.Response:
    return await api.http.post(PATH, data=form(subject, **extra))


async def exchanged(api: Api, subject: str) -> str:
    response = await exchange(api, subject)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return api.jwks.track(token)


async def test_a_users_token_for_the_mcp_server_becomes_an_api_token(exchanging: Api) -> None:
    subject = user_token(exchanging.jwks, lifetime=3600)
    before = int(time.time())
    response = await exchange(exchanging, subject)
    assert response.status_code == 200, response.text
    body = response.json()
    exchanging.jwks.track(body["access_token"])
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in"}
    assert body["issued_token_type"] == ACCESS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert response.headers["cache-control"] == "no-store"

    keys = (await exchanging.http.get("/.well-known/jwks.json")).json()["keys"]
    (jwk,) = keys
    assert {jwk["kty"], jwk["alg"], jwk["use"]} == {"RSA", "RS256", "sig"}
    header = jwt.get_unverified_header(body["access_token"])
    assert header["kid"] == jwk["kid"]
    assert header["alg"] == "RS256"
    claims = jwt.decode(
        body["access_token"],
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=OWN_ISSUER,
    )
    assert claims["sub"] == "auth0|alice"
    assert before <= claims["iat"] <= claims["exp"] - 600 + 1
    assert set(claims) >= {"iss", "aud", "sub", "exp", "iat", "jti"}
    assert subject not in body["access_token"]


async def test_the_api_accepts_its_own_token_as_the_same_user(exchanging: Api) -> None:
    """Items written with the exchanged token are the user's, as with the IdP's own token."""
    alice = await exchanging.user("auth0|alice")
    note = await alice.create("notes", {"title": "written with the IdP's token"})
    token = await exchanged(exchanging, user_token(exchanging.jwks))
    headers = {"Authorization": f"Bearer {token}"}
    session = await exchanging.http.post("/v1/sync/sessions", headers=headers)
    assert session.status_code == 201, session.text
    sync = {"X-Sync-Session": session.json()["id"], "X-Sync-Epoch": str(session.json()["epoch"])}
    seen = await exchanging.http.get(f"/v1/notes/{note['uid']}", headers=headers | sync)
    assert seen.status_code == 200, seen.text
    assert seen.json()["payload"]["title"] == "written with the IdP's token"


async def test_the_originals_json_request_with_the_token_in_authorization(
    exchanging: Api,
) -> None:
    subject = user_token(exchanging.jwks)
    response = await exchanging.http.post(
        PATH,
        json={"grant_type": GRANT, "audience": AUDIENCE},
        headers={"Authorization": f"Bearer {subject}"},
    )
    assert response.status_code == 200, response.text
    exchanging.jwks.track(response.json()["access_token"])
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "auth0|alice"


async def test_resource_names_the_api_too(exchanging: Api) -> None:
    body = form(user_token(exchanging.jwks))
    del body["audience"]
    response = await exchanging.http.post(PATH, data=body | {"resource": f"{AUDIENCE}/"})
    assert response.status_code == 200, response.text
    exchanging.jwks.track(response.json()["access_token"])


async def test_an_api_token_never_outlives_the_exchanged_token(exchanging: Api) -> None:
    subject = user_token(exchanging.jwks, lifetime=90)
    response = await exchange(exchanging, subject)
    assert response.status_code == 200
    exchanging.jwks.track(response.json()["access_token"])
    assert 85 <= response.json()["expires_in"] <= 90
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["exp"] == jwt.decode(subject, options={"verify_signature": False})["exp"]


@pytest.mark.parametrize(
    ("kind", "error", "said"),
    [
        ("the API's audience", "invalid_request", f"audience does not include {MCP_AUDIENCE}"),
        ("expired", "invalid_request", "expired"),
        ("another issuer", "invalid_request", "issuer is not"),
        ("another key", "invalid_request", "kid does not match"),
        ("an API token", "invalid_request", "kid does not match"),
        ("not a JWT", "invalid_request", "not a well-formed JWT"),
    ],
)
async def test_tokens_that_are_not_a_users_token_for_the_mcp_server_are_refused(
    exchanging: Api, kind: str, error: str, said: str
) -> None:
    jwks = exchanging.jwks
    subject = {
        "the API's audience": lambda: jwks.mint(sub="auth0|alice"),
        "expired": lambda: user_token(jwks, lifetime=-120),
        "another issuer": lambda: user_token(jwks, issuer="https://other.example/"),
        "another key": lambda: user_token(jwks, key=SigningKey.generate()),
        "not a JWT": lambda: "opaque-value",
    }.get(kind)
    token = subject() if subject is not None else await exchanged(exchanging, user_token(jwks))  # type: ignore[no-untyped-call]
    response = await exchange(exchanging, token)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == error
    assert said in body["error_description"]
    assert body["correlation_id"] == response.headers["x-correlation-id"]
    assert token not in response.text


async def test_a_refused_authorization_token_is_a_401_with_a_challenge(exchanging: Api) -> None:
    token = exchanging.jwks.mint(sub="auth0|alice")  # for the API, not the MCP server
    response = await exchanging.http.post(
        PATH,
        json={"grant_type": GRANT, "audience": AUDIENCE},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize(
    ("change", "status", "error", "said"),
    [
        ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type", GRANT),
        ({"audience": ""}, 400, "invalid_request", "Missing audience"),
        ({"audience": "https://other-api.test"}, 400, "invalid_target", AUDIENCE),
        ({"resource": "https://other-api.test"}, 400, "invalid_target", AUDIENCE),
        ({"subject_token_type": ""}, 400, "invalid_request", "subject_token_type is required"),
        ({"subject_token_type": "urn:x:saml"}, 400, "invalid_request", "subject_token_type"),
        ({"subject_token": ""}, 400, "invalid_request", "missing subject_token"),
        (
            {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
            400,
            "invalid_request",
            "only access tokens",
        ),
        ({"actor_token": "x", "actor_token_type": ACCESS}, 400, "invalid_request", "actor_token"),
    ],
)
async def test_malformed_requests_get_rfc_6749_errors(
    exchanging: Api, change: dict[str, str], status: int, error: str, said: str
) -> None:
    response = await exchanging.http.post(PATH, data=form(user_token(exchanging.jwks)) | change)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert said in response.json()["error_description"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'["grant_type"]', "application/json"),
        (b"grant_type=x", "text/plain"),
        (b"\xff\xfe=1", "application/x-www-form-urlencoded"),
    ],
)
async def test_an_unreadable_body_is_invalid_request(
    exchanging: Api, content: bytes, content_type: str
) -> None:
    response = await exchanging.http.post(
        PATH, content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "Invalid request body" in response.json()["error_description"]


async def test_repeated_and_conflicting_parameters_are_refused(exchanging: Api) -> None:
    subject = user_token(exchanging.jwks)
    repeated = await exchanging.http.post(
        PATH,
        content=f"grant_type={GRANT}&audience=a&audience=b&subject_token={subject}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert repeated.json()["error_description"] == "audience is given more than once"
    other = user_token(exchanging.jwks, sub="auth0|bob")
    conflicting = await exchanging.http.post(
        PATH, data=form(subject), headers={"Authorization": f"Bearer {other}"}
    )
    assert conflicting.status_code == 400
    assert "different tokens" in conflicting.json()["error_description"]


async def test_client_credentials_are_not_required_and_ignored(exchanging: Api) -> None:
    response = await exchanging.http.post(
        PATH,
        data=form(user_token(exchanging.jwks), client_id="mcp", client_secret="anything"),
    )
    assert response.status_code == 200
    exchanging.jwks.track(response.json()["access_token"])


async def test_tenant_headers_are_not_needed_to_exchange(
    make_api: Callable[..., Any], key_file: Path
) -> None:
    api: Api = await make_api(
        exchange_subject_audience=MCP_AUDIENCE,
        exchange_signing_key_file=key_file,
        tenant_secret="tenant-secret-0123456789",
    )
    response = await exchange(api, user_token(api.jwks))
    assert response.status_code == 200, response.text
    api.jwks.track(response.json()["access_token"])


@pytest.mark.parametrize("forgery", ["another key", "HS256", "wrong audience", "expired"])
async def test_forged_or_stale_own_tokens_are_refused_at_every_route(
    exchanging: Api, forgery: str
) -> None:
    """A token claiming the API's issuer is checked with the API's key only."""
    jwks = exchanging.jwks
    claims = {"issuer": OWN_ISSUER, "sub": "auth0|alice"}
    token = {
        # the IdP's key, the API's issuer
        "another key": lambda: jwks.mint(**claims),  # type: ignore[arg-type]
        "HS256": lambda: jwks.mint(key="k" * 32, alg="HS256", **claims),  # type: ignore[arg-type]
        "wrong audience": lambda: _own_token(exchanging, aud=MCP_AUDIENCE),
        "expired": lambda: _own_token(exchanging, exp=int(time.time()) - 120),
    }[forgery]()
    response = await exchanging.http.post(
        "/v1/sync/sessions", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401, response.text


def _own_token(api: Api, **claims: Any) -> str:
    """A token signed with the API's own key, claims overridden."""
    settings: ApiSettings = api.app.state.settings
    key = ApiKey.from_pem(settings.exchange_signing_key_file.read_bytes(), source="test key")
    now = int(time.time())
    body = {"iss": OWN_ISSUER, "aud": AUDIENCE, "sub": "auth0|alice", "iat": now, "exp": now + 60}
    return api.jwks.track(key.sign(body | claims))


async def test_the_idps_tokens_keep_working_next_to_the_apis_own(exchanging: Api) -> None:
    alice = await exchanging.user("auth0|someone")
    assert alice.session_id


async def test_exchanges_are_in_the_auth_rate_limit_group(
    make_api: Callable[..., Any], key_file: Path
) -> None:
    api: Api = await make_api(
        exchange_subject_audience=MCP_AUDIENCE,
        exchange_signing_key_file=key_file,
        auth_rate_limit_requests=1,
        auth_rate_limit_window_seconds=60,
        auth_rate_limit_burst=2,
    )
    subject = user_token(api.jwks)
    answers = [await exchange(api, subject) for _ in range(3)]
    for answer in answers[:2]:
        assert answer.status_code == 200
        api.jwks.track(answer.json()["access_token"])
        assert answer.headers["x-ratelimit-burst"] == "2"
    assert answers[2].status_code == 429
    assert "retry-after" in answers[2].headers
    bob = await exchange(api, user_token(api.jwks, sub="auth0|bob"))  # a bucket per user
    assert bob.status_code == 200
    api.jwks.track(bob.json()["access_token"])


async def test_without_the_setting_there_is_no_exchange_and_no_key(
    api: Api, tmp_path: Path
) -> None:
    response = await exchange(api, user_token(api.jwks))
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    assert "TOOLBRIDGE_API_EXCHANGE_SUBJECT_AUDIENCE" in response.json()["error_description"]
    assert (await api.http.get("/.well-known/jwks.json")).json() == {"keys": []}


async def test_the_key_file_is_created_private_once_and_kept(
    make_api: Callable[..., Any], tmp_path: Path
) -> None:
    path = tmp_path / "state" / "api-key.pem"
    first: Api = await make_api(
        exchange_subject_audience=MCP_AUDIENCE, exchange_signing_key_file=path
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kid = (await first.http.get("/.well-known/jwks.json")).json()["keys"][0]["kid"]
    token = await exchanged(first, user_token(first.jwks))
    second: Api = await make_api(
        exchange_subject_audience=MCP_AUDIENCE,
        exchange_signing_key_file=path,
        session_ttl_seconds=999,  # another app: a restart
    )
    assert (await second.http.get("/.well-known/jwks.json")).json()["keys"][0]["kid"] == kid
    still = await second.http.post(
        "/v1/sync/sessions", headers={"Authorization": f"Bearer {token}"}
    )
    assert still.status_code == 201


async def test_the_key_can_come_from_a_setting(
    make_api: Callable[..., Any], tmp_path: Path
) -> None:
    key = ApiKey.generate()
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    api: Api = await make_api(
        exchange_subject_audience=MCP_AUDIENCE,
        exchange_signing_key=pem,
        exchange_signing_key_file=tmp_path / "unused.pem",
    )
    assert (await api.http.get("/.well-known/jwks.json")).json()["keys"][0]["kid"] == key.kid
    assert not (tmp_path / "unused.pem").exists()


def settings_error(**fields: Any) -> str:
    base = {
        "jwks_url": "https://idp.test/jwks",
        "issuer": "https://idp.test/",
        "audience": AUDIENCE,
    }
    with pytest.raises(ConfigError) as caught:
        load_api_settings(ApiSettings, _env_file=None, **(base | fields))
    return str(caught.value)


def test_settings_that_would_confuse_the_two_audiences_or_issuers_are_refused(
    database_url: str,  # the module's one-backend parametrisation; no database is used
) -> None:
    assert "must be the MCP server's audience" in settings_error(
        exchange_subject_audience=f"{AUDIENCE}/"
    )
    assert "TOOLBRIDGE_API_EXCHANGE_TOKEN_ISSUER must differ" in settings_error(
        exchange_subject_audience=MCP_AUDIENCE, exchange_token_issuer="https://idp.test/"
    )
    no_verification = settings_error(
        jwks_url=None,
        issuer=None,
        audience=None,
        debug_sub_enabled=True,
        exchange_subject_audience=MCP_AUDIENCE,
    )
    assert "TOOLBRIDGE_API_EXCHANGE_SUBJECT_AUDIENCE needs token verification" in no_verification
    lifetime = settings_error(
        exchange_subject_audience=MCP_AUDIENCE, exchange_token_lifetime_seconds=5
    )
    assert "TOOLBRIDGE_API_EXCHANGE_TOKEN_LIFETIME_SECONDS" in lifetime
