"""The authorization code flow with PKCE over real HTTP on 127.0.0.1: the login page, the
redirects a client receives (parsed from ``Location``, never followed), and the token
endpoint's checks of codes, verifiers, redirect URIs and resources."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import jwt
import pytest

from tests.conftest import LogCapture
from tests.dev_issuer.flow import (
    REDIRECT_URI,
    STATE,
    authorization_params,
    code_for,
    error,
    location_query,
    open_authorization,
    pkce,
    redeem,
    redirected,
    refresh,
    register,
    request_id,
    sign_in,
)
from tests.support.dev_issuer import (
    AUDIENCE,
    OTHER_AUDIENCE,
    RunningIssuer,
    issuer_messages,
    verify,
)


@pytest.fixture(scope="module")
def client_id(issuer: RunningIssuer) -> str:
    client: str = register(issuer)["client_id"]
    return client


def test_full_flow_issues_a_user_token_for_the_resource(
    issuer: RunningIssuer, client_id: str, logs: LogCapture
) -> None:
    verifier, challenge = pkce()
    params = authorization_params(client_id, challenge, resource=OTHER_AUDIENCE, scope=None)
    page = open_authorization(issuer, params)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert "DEVELOPMENT ONLY" in page.text
    assert "Sign in as alice" in page.text
    assert "Sign in as bob" in page.text
    assert "Flow test client" in page.text
    assert OTHER_AUDIENCE in page.text

    answer = redirected(sign_in(issuer, page, "bob"))
    assert set(answer) == {"code", "state", "iss"}
    assert answer["state"] == STATE
    assert answer["iss"] == issuer.issuer_url

    response = redeem(issuer, client_id, answer["code"], verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    claims = verify(
        body["access_token"], issuer.jwks_url, issuer=issuer.issuer_url, audience=OTHER_AUDIENCE
    )
    assert claims["sub"] == "bob"
    assert claims["aud"] == OTHER_AUDIENCE
    assert claims["client_id"] == claims["azp"] == client_id
    assert "scope" not in claims
    assert "gty" not in claims
    messages = issuer_messages(logs, "INFO")
    assert f"User bob signed in to client {client_id} (for {OTHER_AUDIENCE}); code valid 60 s" in (
        messages
    )
    assert (
        f"Issued a token for user bob to client {client_id} for {OTHER_AUDIENCE}, valid 3600 s "
        "(authorization code, with a refresh token)"
    ) in messages


def test_without_resource_the_token_is_for_the_default_audience(
    issuer: RunningIssuer, client_id: str
) -> None:
    code, verifier = code_for(issuer, client_id, scope="offline_access")
    response = redeem(issuer, client_id, code, verifier)
    assert response.json()["scope"] == "offline_access"
    claims = verify(response.json()["access_token"], issuer.jwks_url, issuer=issuer.issuer_url)
    assert (claims["aud"], claims["sub"], claims["scope"]) == (AUDIENCE, "alice", "offline_access")


def test_a_free_text_user_name_is_the_subject(issuer: RunningIssuer, client_id: str) -> None:
    verifier, challenge = pkce()
    page = open_authorization(issuer, authorization_params(client_id, challenge))
    answer = redirected(sign_in(issuer, page, "carol@example.test", field="username"))
    token = redeem(issuer, client_id, answer["code"], verifier).json()["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "carol@example.test"


def test_an_invalid_user_name_shows_the_page_again(issuer: RunningIssuer, client_id: str) -> None:
    verifier, challenge = pkce()
    page = open_authorization(issuer, authorization_params(client_id, challenge))
    again = sign_in(issuer, page, "<script>", field="username")
    assert again.status_code == 400
    assert "<script>" not in again.text
    assert "A user name is 1-64 letters" in again.text
    answer = redirected(sign_in(issuer, again, "alice"))  # the request is still open
    assert redeem(issuer, client_id, answer["code"], verifier).status_code == 200


def test_only_configured_users_without_free_text(tmp_path: Path) -> None:
    with RunningIssuer(tmp_path / "state", users=["dave"], allow_any_user=False) as running:
        client = register(running)["client_id"]
        verifier, challenge = pkce()
        page = open_authorization(running, authorization_params(client, challenge))
        assert "Sign in as dave" in page.text
        assert 'name="username"' not in page.text
        refused = sign_in(running, page, "alice")
        assert refused.status_code == 400
        assert "alice is not one of the dev users here" in refused.text
        answer = redirected(sign_in(running, page, "dave"))
        token = redeem(running, client, answer["code"], verifier).json()["access_token"]
        assert jwt.decode(token, options={"verify_signature": False})["sub"] == "dave"


def test_a_login_form_is_answered_once(issuer: RunningIssuer, client_id: str) -> None:
    _, challenge = pkce()
    page = open_authorization(issuer, authorization_params(client_id, challenge))
    redirected(sign_in(issuer, page))
    again = sign_in(issuer, page, "bob")
    assert again.status_code == 400
    assert "Sign-in expired" in again.text
    assert "location" not in again.headers


def test_cancel_sends_access_denied(issuer: RunningIssuer, client_id: str) -> None:
    _, challenge = pkce()
    page = open_authorization(issuer, authorization_params(client_id, challenge))
    response = httpx.post(
        f"{issuer.url}/authorize", data={"request": request_id(page), "deny": "1"}
    )
    assert response.status_code == 303
    assert redirected(response) == {
        "error": "access_denied",
        "error_description": "The user cancelled the sign-in",
        "state": STATE,
        "iss": issuer.issuer_url,
    }


def test_prompt_none_with_a_login_hint_answers_at_once(
    issuer: RunningIssuer, client_id: str
) -> None:
    verifier, challenge = pkce()
    params = authorization_params(client_id, challenge, prompt="none", login_hint="bob")
    answer = redirected(open_authorization(issuer, params))
    token = redeem(issuer, client_id, answer["code"], verifier).json()["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "bob"
    refused = redirected(
        open_authorization(issuer, authorization_params(client_id, challenge, prompt="none"))
    )
    assert refused["error"] == "login_required"


def test_missing_state_is_not_invented(issuer: RunningIssuer, client_id: str) -> None:
    verifier, challenge = pkce()
    page = open_authorization(issuer, authorization_params(client_id, challenge, state=None))
    answer = redirected(sign_in(issuer, page))
    assert set(answer) == {"code", "iss"}
    errors = open_authorization(
        issuer,
        authorization_params(client_id, challenge, state=None, code_challenge_method="plain"),
    )
    assert set(redirected(errors)) == {"error", "error_description", "iss"}
    assert redeem(issuer, client_id, answer["code"], verifier).status_code == 200


def test_the_redirect_uris_own_query_is_kept(issuer: RunningIssuer) -> None:
    with_query = "https://client.example/cb?tenant=a%20b&x=1"
    client = register(issuer, redirect_uris=[with_query])["client_id"]
    verifier, challenge = pkce()
    page = open_authorization(
        issuer, authorization_params(client, challenge, redirect_uri=with_query)
    )
    response = sign_in(issuer, page)
    query = location_query(response)
    assert query.startswith("tenant=a%20b&x=1&code=")
    code = redirected(response, with_query)["code"]
    assert redeem(issuer, client, code, verifier, redirect_uri=with_query).status_code == 200


# -- PKCE and the code ------------------------------------------------------------------------


def test_wrong_verifier_is_refused_and_the_code_is_spent(
    issuer: RunningIssuer, client_id: str
) -> None:
    code, verifier = code_for(issuer, client_id)
    other, _ = pkce()
    assert error(redeem(issuer, client_id, code, other)) == (
        400,
        "invalid_grant",
        "code_verifier does not match the code_challenge (PKCE S256)",
    )
    assert error(redeem(issuer, client_id, code, verifier))[1] == "invalid_grant"


@pytest.mark.parametrize(
    ("verifier", "description"),
    [
        ("short", "code_verifier must be 43-128 characters A-Z a-z 0-9 - . _ ~ (RFC 7636 §4.1)"),
        ("x" * 129, "code_verifier must be 43-128 characters A-Z a-z 0-9 - . _ ~ (RFC 7636 §4.1)"),
        ("", "Missing required parameter: code_verifier"),
    ],
)
def test_malformed_verifier_is_an_invalid_request(
    issuer: RunningIssuer, client_id: str, verifier: str, description: str
) -> None:
    code, good = code_for(issuer, client_id)
    assert error(redeem(issuer, client_id, code, verifier)) == (
        400,
        "invalid_request",
        description,
    )
    assert redeem(issuer, client_id, code, good).status_code == 200  # not spent


@pytest.mark.parametrize(
    ("method", "description"),
    [
        ("plain", "code_challenge_method must be S256; plain is not supported"),
        (
            None,
            "code_challenge_method must be S256; plain (the default when none is sent) is not "
            "supported",
        ),
        ("S512", "code_challenge_method must be S256; S512 is not supported"),
    ],
)
def test_plain_pkce_is_refused(
    issuer: RunningIssuer, client_id: str, method: str | None, description: str
) -> None:
    verifier, _ = pkce()
    params = authorization_params(
        client_id,
        verifier[:43],
        code_challenge_method=method,  # plain: challenge = verifier
    )
    assert redirected(open_authorization(issuer, params)) == {
        "error": "invalid_request",
        "error_description": description,
        "state": STATE,
        "iss": issuer.issuer_url,
    }


def test_reused_code_is_refused_and_revokes_its_refresh_token(
    issuer: RunningIssuer, client_id: str, logs: LogCapture
) -> None:
    code, verifier = code_for(issuer, client_id)
    first = redeem(issuer, client_id, code, verifier)
    assert first.status_code == 200
    assert error(redeem(issuer, client_id, code, verifier)) == (
        400,
        "invalid_grant",
        "Authorization code was already used; the tokens issued from it are revoked",
    )
    assert error(refresh(issuer, client_id, first.json()["refresh_token"])) == (
        400,
        "invalid_grant",
        "Refresh token was revoked",
    )
    assert (
        f"Refused a reused authorization code from client {client_id}; revoked the refresh "
        "tokens issued from it"
    ) in issuer_messages(logs, "WARNING")


def test_unknown_code(issuer: RunningIssuer, client_id: str) -> None:
    verifier, _ = pkce()
    assert error(redeem(issuer, client_id, "no-such-code", verifier)) == (
        400,
        "invalid_grant",
        "Authorization code is invalid or expired",
    )


def test_expired_code(tmp_path: Path) -> None:
    with RunningIssuer(tmp_path / "state", code_lifetime_seconds=1) as running:
        client = register(running)["client_id"]
        code, verifier = code_for(running, client)
        time.sleep(1.1)
        assert error(redeem(running, client, code, verifier)) == (
            400,
            "invalid_grant",
            "Authorization code is invalid or expired",
        )


def test_code_of_another_client(issuer: RunningIssuer, client_id: str) -> None:
    other = register(issuer)["client_id"]
    code, verifier = code_for(issuer, client_id)
    assert error(redeem(issuer, other, code, verifier)) == (
        400,
        "invalid_grant",
        "Authorization code was issued to another client",
    )


def test_wrong_redirect_uri_at_the_token_endpoint(issuer: RunningIssuer) -> None:
    other_uri = "http://localhost:9999/other"
    client = register(issuer, redirect_uris=[REDIRECT_URI, other_uri])["client_id"]
    code, verifier = code_for(issuer, client)
    assert error(redeem(issuer, client, code, verifier, redirect_uri=other_uri)) == (
        400,
        "invalid_grant",
        "redirect_uri differs from the one of the authorization request",
    )


@pytest.mark.parametrize("missing", ["code", "redirect_uri"])
def test_missing_token_parameters(issuer: RunningIssuer, client_id: str, missing: str) -> None:
    code, verifier = code_for(issuer, client_id)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        "client_id": client_id,
    }
    del form[missing]
    assert error(httpx.post(issuer.token_url, data=form)) == (
        400,
        "invalid_request",
        f"Missing required parameter: {missing}",
    )


def test_resource_at_the_token_endpoint_must_be_the_authorized_one(
    issuer: RunningIssuer, client_id: str
) -> None:
    code, verifier = code_for(issuer, client_id, resource=OTHER_AUDIENCE)
    assert error(redeem(issuer, client_id, code, verifier, resource=AUDIENCE)) == (
        400,
        "invalid_target",
        f"resource {AUDIENCE} is not the one authorized ({OTHER_AUDIENCE})",
    )
    code, verifier = code_for(issuer, client_id, resource=OTHER_AUDIENCE)
    answer = redeem(issuer, client_id, code, verifier, resource=OTHER_AUDIENCE)
    token = answer.json()["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == OTHER_AUDIENCE


def test_a_public_client_may_not_send_a_secret(issuer: RunningIssuer, client_id: str) -> None:
    code, verifier = code_for(issuer, client_id)
    assert error(redeem(issuer, client_id, code, verifier, client_secret="guess")) == (
        401,
        "invalid_client",
        "Client authentication failed: a public client sends its client_id only, without a secret",
    )


def test_a_public_client_may_not_use_client_credentials(
    issuer: RunningIssuer, client_id: str
) -> None:
    response = httpx.post(
        issuer.token_url, data={"grant_type": "client_credentials", "client_id": client_id}
    )
    assert error(response) == (
        400,
        "unauthorized_client",
        f"Client {client_id} may not use the client_credentials grant (a public client cannot "
        "use client credentials)",
    )


def test_a_confidential_client_may_not_use_the_code_flow(issuer: RunningIssuer) -> None:
    _, challenge = pkce()
    page = open_authorization(issuer, authorization_params("test-client", challenge))
    assert page.status_code == 400
    assert "No client test-client signs users in here" in page.text


# -- errors shown as a page (never redirected) ----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "title", "text"),
    [
        ({"client_id": None}, "Invalid request", "Missing required parameter: client_id"),
        ({"client_id": "stranger"}, "Unknown client", "No client stranger signs users in here"),
        ({"redirect_uri": None}, "Invalid request", "Missing required parameter: redirect_uri"),
        (
            {"redirect_uri": "http://127.0.0.1:53682/callback/"},
            "Invalid redirect_uri",
            "redirect_uri http://127.0.0.1:53682/callback/ is not registered for client",
        ),
        (
            {"redirect_uri": "https://evil.example/callback"},
            "Invalid redirect_uri",
            "redirect_uri https://evil.example/callback is not registered for client",
        ),
    ],
)
def test_bad_client_or_redirect_uri_is_a_page_not_a_redirect(
    issuer: RunningIssuer,
    client_id: str,
    change: dict[str, str | None],
    title: str,
    text: str,
) -> None:
    _, challenge = pkce()
    params = authorization_params(client_id, challenge) | change
    query = {name: value for name, value in params.items() if value is not None}
    response = open_authorization(issuer, query)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "DEVELOPMENT ONLY" in response.text
    assert f"<h1>{title}</h1>" in response.text
    assert text in response.text


def test_repeated_redirect_uri_is_a_page(issuer: RunningIssuer, client_id: str) -> None:
    _, challenge = pkce()
    query = urlencode(authorization_params(client_id, challenge)) + "&redirect_uri=x"
    response = httpx.get(f"{issuer.url}/authorize?{query}")
    assert response.status_code == 400
    assert "redirect_uri must not be repeated" in response.text


# -- errors redirected to the client (RFC 6749 §4.1.2.1) -------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected_error", "description"),
    [
        (
            {"response_type": None},
            "invalid_request",
            "Missing required parameter: response_type",
        ),
        (
            {"response_type": "token"},
            "unsupported_response_type",
            "response_type token is not supported (only code)",
        ),
        (
            {"code_challenge": None},
            "invalid_request",
            "code_challenge is required (PKCE with S256)",
        ),
        (
            {"code_challenge": "too-short"},
            "invalid_request",
            "code_challenge must be BASE64URL(SHA-256(code_verifier)): 43 characters",
        ),
        (
            {"scope": "offline_access admin"},
            "invalid_scope",
            "Unknown scope admin (offered: offline_access; add it to TOOLBRIDGE_DEV_ISSUER_SCOPES)",
        ),
        (
            {"resource": "https://evil.example/mcp"},
            "invalid_target",
            "This issuer does not issue tokens for https://evil.example/mcp (it serves "
            f"{AUDIENCE}, {OTHER_AUDIENCE}; add it to TOOLBRIDGE_DEV_ISSUER_AUDIENCES)",
        ),
        (
            {"resource": "api.toolbridge.local"},
            "invalid_target",
            "resource must be an absolute URI without a fragment: api.toolbridge.local",
        ),
        (
            {"response_mode": "fragment"},
            "invalid_request",
            "Only response_mode query is supported",
        ),
    ],
)
def test_invalid_requests_are_redirected_with_state(
    issuer: RunningIssuer,
    client_id: str,
    change: dict[str, str | None],
    expected_error: str,
    description: str,
) -> None:
    _, challenge = pkce()
    response = open_authorization(issuer, authorization_params(client_id, challenge, **change))
    assert response.status_code == 302
    assert response.headers["cache-control"] == "no-store"
    assert redirected(response) == {
        "error": expected_error,
        "error_description": description,
        "state": STATE,
        "iss": issuer.issuer_url,
    }


def test_repeated_parameters_are_redirected(issuer: RunningIssuer, client_id: str) -> None:
    _, challenge = pkce()
    base = urlencode(authorization_params(client_id, challenge))
    for extra, expected in [
        ("&scope=a&scope=b", ("invalid_request", "Parameters must not be repeated: scope")),
        (
            f"&resource={AUDIENCE}&resource={OTHER_AUDIENCE}",
            ("invalid_target", "Only one resource per request"),
        ),
    ]:
        answer = redirected(httpx.get(f"{issuer.url}/authorize?{base}{extra}"))
        assert (answer["error"], answer["error_description"]) == expected
