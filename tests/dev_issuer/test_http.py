"""The token endpoint, JWKS and discovery over real HTTP: Auth0's answers, RFC 6749 errors,
and tokens that PyJWT, the API's verifier and the MCP server's token manager accept."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
import pytest

from tests.conftest import CLIENT_ID, CLIENT_SECRET, NASTY_SECRET, LogCapture
from tests.support.dev_issuer import (
    AUDIENCE,
    NASTY_CLIENT_ID,
    OTHER_AUDIENCE,
    RunningIssuer,
    issuer_messages,
    track,
    verify,
)
from toolbridge_api.security.tokens import TokenVerifier
from toolbridge_dev.issuer.tokens import mint_user_token
from toolbridge_mcp.auth.token_manager import TokenManager
from toolbridge_mcp.config import Settings

GRANT = {"grant_type": "client_credentials"}
POST_AUTH = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
REALM = 'Basic realm="toolbridge-dev-issuer"'
LONG_AUDIENCE = "https://" + "a" * 300 + ".example"


def basic(client_id: str, secret: str) -> dict[str, str]:
    """client_secret_basic as RFC 6749 §2.3.1 has it: id and secret urlencoded first."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def test_form_post_issues_an_auth0_shaped_token(issuer: RunningIssuer, logs: LogCapture) -> None:
    response = httpx.post(issuer.token_url, data={**GRANT, **POST_AUTH, "scope": "read:notes"})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    token = track(body.pop("access_token"))
    assert body == {"token_type": "Bearer", "expires_in": 3600, "scope": "read:notes"}

    claims = verify(token, issuer.jwks_url, issuer=issuer.issuer_url)
    assert claims["iss"] == issuer.issuer_url
    assert claims["sub"] == f"{CLIENT_ID}@clients"
    assert claims["aud"] == AUDIENCE
    assert claims["azp"] == CLIENT_ID
    assert claims["gty"] == "client-credentials"
    assert claims["scope"] == "read:notes"
    assert claims["exp"] - claims["iat"] == 3600
    assert len(claims["jti"]) == 32
    assert issuer.key is not None
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT", "kid": issuer.key.kid}
    assert issuer_messages(logs, "INFO") == [
        f"Issued a token to client {CLIENT_ID} for {AUDIENCE}, valid 3600 s"
    ]


def test_json_body_with_basic_auth_and_special_characters(issuer: RunningIssuer) -> None:
    """Id and secret with ``:``, ``+``, ``%``, spaces and non-ASCII survive the encoding."""
    response = httpx.post(
        issuer.token_url,
        json={**GRANT, "audience": OTHER_AUDIENCE},
        headers=basic(NASTY_CLIENT_ID, NASTY_SECRET),
    )
    assert response.status_code == 200, response.text
    assert "scope" not in response.json()
    token = track(response.json()["access_token"])
    claims = verify(token, issuer.jwks_url, issuer=issuer.issuer_url, audience=OTHER_AUDIENCE)
    assert claims["sub"] == f"{NASTY_CLIENT_ID}@clients"
    assert "scope" not in claims


def test_post_auth_with_special_characters_in_a_form(issuer: RunningIssuer) -> None:
    form = {**GRANT, "client_id": NASTY_CLIENT_ID, "client_secret": NASTY_SECRET}
    token = track(httpx.post(issuer.token_url, data=form).json()["access_token"])
    assert verify(token, issuer.jwks_url, issuer=issuer.issuer_url)["azp"] == NASTY_CLIENT_ID


@pytest.mark.parametrize(
    "extra",
    [
        {"resource": OTHER_AUDIENCE},
        {"resource": OTHER_AUDIENCE, "audience": OTHER_AUDIENCE},
        {"audience": OTHER_AUDIENCE},
    ],
)
def test_audience_or_resource_selects_the_audience(
    issuer: RunningIssuer, extra: dict[str, str]
) -> None:
    token = issuer.fetch(**extra)
    claims = verify(token, issuer.jwks_url, issuer=issuer.issuer_url, audience=OTHER_AUDIENCE)
    assert claims["aud"] == OTHER_AUDIENCE


def test_no_audience_means_the_first_registered(issuer: RunningIssuer) -> None:
    token = issuer.fetch()
    assert verify(token, issuer.jwks_url, issuer=issuer.issuer_url)["aud"] == AUDIENCE


def test_every_token_is_distinct(issuer: RunningIssuer) -> None:
    assert issuer.fetch() != issuer.fetch()


ERRORS: list[tuple[str, dict[str, Any], int, str, str]] = [
    (
        "malformed JSON",
        {"content": b'{"grant_type":', "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_request",
        "Malformed JSON body",
    ),
    (
        "JSON not an object",
        {"json": ["client_credentials"]},
        400,
        "invalid_request",
        "JSON body must be an object",
    ),
    (
        "repeated parameter",
        {
            "content": f"grant_type=client_credentials&client_id={CLIENT_ID}&client_id=x"
            f"&client_secret={CLIENT_SECRET}",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        400,
        "invalid_request",
        "Parameters must not be repeated",
    ),
    (
        "unsupported content type",
        {"content": b"grant_type=client_credentials", "headers": {"Content-Type": "text/plain"}},
        400,
        "invalid_request",
        "Unsupported content type: text/plain",
    ),
    (
        "both auth methods",
        {"data": {**GRANT, **POST_AUTH}, "headers": basic(CLIENT_ID, CLIENT_SECRET)},
        400,
        "invalid_request",
        "Use only one client authentication method",
    ),
    (
        "Basic and another client_id in the body",
        {
            "data": {**GRANT, "client_id": "someone-else"},
            "headers": basic(CLIENT_ID, CLIENT_SECRET),
        },
        400,
        "invalid_request",
        "client_id in the body differs from the Basic credentials",
    ),
    (
        "no client_id",
        {"data": {**GRANT, "client_secret": CLIENT_SECRET}},
        401,
        "invalid_client",
        "No client authentication included: send client_id and client_secret, or HTTP Basic",
    ),
    (
        "no grant_type",
        {"data": POST_AUTH},
        400,
        "invalid_request",
        "Missing required parameter: grant_type",
    ),
    (
        "empty grant_type",
        {"data": {**POST_AUTH, "grant_type": ""}},
        400,
        "invalid_request",
        "Missing required parameter: grant_type",
    ),
    (
        "password grant",
        {"data": {**POST_AUTH, "grant_type": "password"}},
        400,
        "unsupported_grant_type",
        "Unsupported grant type: password "
        "(supported: authorization_code, refresh_token, client_credentials)",
    ),
    (
        "unknown client",
        {"data": {**GRANT, "client_id": "stranger", "client_secret": CLIENT_SECRET}},
        401,
        "invalid_client",
        "Client authentication failed",
    ),
    (
        "wrong secret",
        {"data": {**GRANT, "client_id": CLIENT_ID, "client_secret": NASTY_SECRET}},
        401,
        "invalid_client",
        "Client authentication failed",
    ),
    (
        "no secret",
        {"data": {**GRANT, "client_id": CLIENT_ID}},
        401,
        "invalid_client",
        "Client authentication failed",
    ),
    (
        "wrong secret over Basic",
        {"data": GRANT, "headers": basic(CLIENT_ID, NASTY_SECRET)},
        401,
        "invalid_client",
        "Client authentication failed",
    ),
    (
        "malformed Basic",
        {"data": GRANT, "headers": {"Authorization": "Basic not-base64!"}},
        401,
        "invalid_client",
        "Malformed Basic credentials (RFC 6749 §2.3.1: base64 of urlencoded id:secret)",
    ),
    (
        "audience not registered",
        {"data": {**GRANT, **POST_AUTH, "audience": "https://evil.example"}},
        403,
        "access_denied",
        "Service not enabled within domain: https://evil.example",
    ),
    (
        "resource not registered",
        {"data": {**GRANT, **POST_AUTH, "resource": "https://evil.example"}},
        400,
        "invalid_target",
        "Resource not registered: https://evil.example",
    ),
    (
        "resource not an absolute URI",
        {"data": {**GRANT, **POST_AUTH, "resource": "api.toolbridge.local"}},
        400,
        "invalid_target",
        "resource must be an absolute URI without a fragment: api.toolbridge.local",
    ),
    (
        "resource with a fragment",
        {"data": {**GRANT, **POST_AUTH, "resource": f"{AUDIENCE}#notes"}},
        400,
        "invalid_target",
        f"resource must be an absolute URI without a fragment: {AUDIENCE}#notes",
    ),
    (
        "long audience, shortened in the answer",
        {"data": {**GRANT, **POST_AUTH, "audience": LONG_AUDIENCE}},
        403,
        "access_denied",
        f"Service not enabled within domain: {LONG_AUDIENCE[:100]}…",
    ),
    (
        "audience and resource differ",
        {"data": {**GRANT, **POST_AUTH, "audience": AUDIENCE, "resource": OTHER_AUDIENCE}},
        400,
        "invalid_request",
        "audience and resource name different APIs; send one",
    ),
]


@pytest.mark.parametrize(
    ("request_args", "status", "error", "description"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_refusals_are_rfc6749_errors_without_secrets(
    issuer: RunningIssuer,
    logs: LogCapture,
    request_args: dict[str, Any],
    status: int,
    error: str,
    description: str,
) -> None:
    response = httpx.post(issuer.token_url, **request_args)
    assert response.status_code == status
    assert response.json() == {"error": error, "error_description": description}
    basic_used = request_args.get("headers", {}).get("Authorization", "").startswith("Basic")
    if status == 401 and basic_used:
        assert response.headers["www-authenticate"] == REALM
    else:
        assert "www-authenticate" not in response.headers
    for secret in (CLIENT_SECRET, NASTY_SECRET, quote_plus(NASTY_SECRET)):
        assert secret not in response.text
        assert secret not in str(response.headers)
    assert issuer_messages(logs, "INFO") == []
    if status == 401:
        (warning,) = issuer_messages(logs, "WARNING")
        assert warning.startswith("Refused client authentication")


def test_refused_client_is_logged_by_id(issuer: RunningIssuer, logs: LogCapture) -> None:
    httpx.post(issuer.token_url, data={**GRANT, "client_id": CLIENT_ID, "client_secret": "x"})
    httpx.post(issuer.token_url, data={**GRANT, "client_id": "stranger", "client_secret": "x"})
    assert issuer_messages(logs, "WARNING") == [
        f"Refused client authentication for client {CLIENT_ID} (wrong or missing secret)",
        "Refused client authentication for client stranger (unknown client)",
    ]


def test_jwks_and_discovery(issuer: RunningIssuer) -> None:
    assert issuer.key is not None
    (key,) = httpx.get(issuer.jwks_url).json()["keys"]
    assert set(key) == {"kty", "n", "e", "kid", "use", "alg"}
    assert (key["kty"], key["kid"], key["use"], key["alg"]) == (
        "RSA",
        issuer.key.kid,
        "sig",
        "RS256",
    )
    openid = httpx.get(f"{issuer.url}/.well-known/openid-configuration").json()
    rfc8414 = httpx.get(f"{issuer.url}/.well-known/oauth-authorization-server").json()
    assert openid == rfc8414
    assert openid == {
        "issuer": issuer.issuer_url,
        "authorization_endpoint": f"{issuer.url}/authorize",
        "token_endpoint": issuer.token_url,
        "registration_endpoint": f"{issuer.url}/oauth/register",
        "jwks_uri": issuer.jwks_url,
        "scopes_supported": ["offline_access"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "client_secret_basic",
            "private_key_jwt",
            "none",
        ],
        "token_endpoint_auth_signing_alg_values_supported": [
            "RS256",
            "RS384",
            "RS512",
            "PS256",
            "PS384",
            "PS512",
            "ES256",
            "ES384",
            "ES512",
            "EdDSA",
        ],
        "code_challenge_methods_supported": ["S256"],
        "client_id_metadata_document_supported": True,
        "authorization_response_iss_parameter_supported": True,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }


def test_wrong_method_is_refused(issuer: RunningIssuer) -> None:
    assert httpx.get(issuer.token_url).status_code == 405


async def test_the_api_verifier_accepts_client_and_user_tokens(issuer: RunningIssuer) -> None:
    """The API configured as the dev stack configures it: issuer and JWKS from discovery."""
    assert issuer.key is not None
    async with httpx.AsyncClient() as client:
        discovery = (await client.get(f"{issuer.url}/.well-known/openid-configuration")).json()
        answer = await client.post(discovery["token_endpoint"], data={**GRANT, **POST_AUTH})
    client_token = track(answer.json()["access_token"])
    user_token = track(
        mint_user_token(
            issuer.key,
            issuer=issuer.issuer_url,
            subject="alice",
            audience=AUDIENCE,
            lifetime_seconds=60,
        ).token
    )
    verifier = TokenVerifier(
        audience=AUDIENCE, issuer=discovery["issuer"], jwks_url=discovery["jwks_uri"]
    )
    try:
        assert await verifier.verify(client_token) == f"{CLIENT_ID}@clients"
        assert await verifier.verify(user_token) == "alice"
    finally:
        await verifier.aclose()


@pytest.mark.usefixtures("clean_settings_env")
@pytest.mark.parametrize(
    ("client_id", "secret", "method"),
    [
        (CLIENT_ID, CLIENT_SECRET, "client_secret_post"),
        (NASTY_CLIENT_ID, NASTY_SECRET, "client_secret_basic"),
    ],
)
async def test_the_mcp_token_manager_gets_tokens(
    issuer: RunningIssuer, client_id: str, secret: str, method: str
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        auth0_client_id=client_id,
        auth0_client_secret=secret,  # type: ignore[arg-type]
        auth0_token_url=issuer.token_url,
        auth0_audience=AUDIENCE,
        auth0_client_auth_method=method,  # type: ignore[arg-type]
    )
    manager = TokenManager.from_settings(settings)
    try:
        token = track(await manager.get_token())
    finally:
        await manager.close()
    claims = verify(token, issuer.jwks_url, issuer=issuer.issuer_url)
    assert claims["sub"] == f"{client_id}@clients"


def test_no_clients_still_serves_keys_and_refuses_tokens(tmp_path: Path, logs: LogCapture) -> None:
    with RunningIssuer(tmp_path / "state", clients={}) as empty:
        response = httpx.post(empty.token_url, data={**GRANT, **POST_AUTH})
        assert response.status_code == 401
        assert httpx.get(empty.jwks_url).json()["keys"][0]["kid"] == empty.key.kid  # type: ignore[union-attr]
    (warning, refused) = issuer_messages(logs, "WARNING")
    assert "No clients registered" in warning
    assert 'TOOLBRIDGE_DEV_ISSUER_CLIENTS=\'{"my-client":"my-secret"}\'' in warning
    assert refused.startswith("Refused client authentication")


def test_startup_line_says_development_only(tmp_path: Path, logs: LogCapture) -> None:
    with RunningIssuer(tmp_path / "state", token_lifetime_seconds=120) as running:
        assert running.key is not None
        assert issuer_messages(logs, "INFO")[-1] == (
            f"Dev issuer (DEVELOPMENT ONLY) at {running.issuer_url}: key {running.key.kid}, "
            "2 clients, tokens last 120 s"
        )
        token = running.fetch()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120
    assert json.loads(json.dumps(claims))["iss"] == running.issuer_url
