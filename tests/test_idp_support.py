"""Self-test for the fake IdP, so failures elsewhere can be trusted to be the client's fault."""

import asyncio
import base64
from urllib.parse import quote_plus

import httpx
import jwt
import pytest

from tests.conftest import NASTY_SECRET
from tests.support.clock import settle
from tests.support.idp import IdP, Reply

FORM = {"grant_type": "client_credentials", "client_id": "test-client"}


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def test_form_client_secret_post(idp: IdP) -> None:
    resp = httpx.post(idp.token_url, data={**FORM, "client_secret": "test-secret"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"] == idp.issued[0]
    (seen,) = idp.requests
    assert seen.content_type == "application/x-www-form-urlencoded"
    assert seen.auth_method == "client_secret_post"
    assert seen.client_id == "test-client"
    assert seen.path == "/oauth/token"


def test_json_post_issues_verifiable_jwt(idp: IdP) -> None:
    payload = {**FORM, "client_secret": "test-secret", "audience": idp.audience, "scope": "read:x"}
    first = httpx.post(idp.token_url, json=payload).json()["access_token"]
    second = httpx.post(idp.token_url, json=payload).json()["access_token"]
    assert first != second
    claims = jwt.decode(first, idp.public_key, algorithms=["RS256"], audience=idp.audience)
    assert claims["iss"] == idp.base_url + "/"
    assert claims["sub"] == "test-client@clients"
    assert claims["azp"] == "test-client"
    assert claims["scope"] == "read:x"
    assert claims["gty"] == "client-credentials"
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(first)["kid"] == idp.jwks["keys"][0]["kid"]
    assert idp.requests[0].form["audience"] == idp.audience
    assert httpx.get(idp.base_url + "/.well-known/jwks.json").json() == idp.jwks


def test_basic_auth_with_nasty_secret(idp: IdP) -> None:
    headers = {"Authorization": basic("nasty-client", NASTY_SECRET)}
    resp = httpx.post(idp.token_url, data={"grant_type": "client_credentials"}, headers=headers)
    assert resp.status_code == 200, resp.text
    (seen,) = idp.requests
    assert (seen.auth_method, seen.client_id) == ("client_secret_basic", "nasty-client")


def test_both_auth_methods_rejected(idp: IdP) -> None:
    headers = {"Authorization": basic("test-client", "test-secret")}
    data = {**FORM, "client_secret": "test-secret"}
    resp = httpx.post(idp.token_url, data=data, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"


def test_wrong_secret_is_invalid_client(idp: IdP) -> None:
    resp = httpx.post(idp.token_url, data={**FORM, "client_secret": "nope"})
    assert resp.status_code == 401
    assert resp.json() == {
        "error": "invalid_client",
        "error_description": "Client authentication failed",
    }
    assert "nope" not in resp.text
    assert idp.issued == []


def test_wrong_audience_and_grant(idp: IdP) -> None:
    data = {**FORM, "client_secret": "test-secret"}
    resp = httpx.post(idp.token_url, data={**data, "audience": "https://other"})
    assert resp.status_code == 403
    assert resp.json()["error_description"] == "Service not enabled within domain: https://other"
    resp = httpx.post(idp.token_url, data={**data, "grant_type": "password"})
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_grant_type"


def test_scripted_faults_then_default(idp: IdP) -> None:
    idp.script(
        Reply(status=503, error="temporarily_unavailable", retry_after="2"),
        Reply(body="not json{"),
        Reply(jwt=False, expires_in=None),
    )
    data = {**FORM, "client_secret": "test-secret"}
    resp = httpx.post(idp.token_url, data=data)
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "2"
    assert resp.json() == {"error": "temporarily_unavailable"}
    resp = httpx.post(idp.token_url, data=data)
    assert (resp.status_code, resp.text) == (200, "not json{")
    opaque = httpx.post(idp.token_url, data=data).json()
    assert "expires_in" not in opaque
    assert opaque["access_token"].count(".") != 2
    assert httpx.post(idp.token_url, data=data).json()["expires_in"] == 3600
    assert len(idp.requests) == 4


async def test_hang_until_release(idp: IdP) -> None:
    idp.script(Reply(hang=True, status=429, retry_after="1"))
    async with httpx.AsyncClient() as client:
        task = asyncio.create_task(
            client.post(idp.token_url, data={**FORM, "client_secret": "test-secret"})
        )
        await settle(lambda: len(idp.requests) >= 1)
        await asyncio.sleep(0.05)
        assert not task.done()
        idp.release()
        resp = await asyncio.wait_for(task, 2)
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "1"


def test_tls_mode() -> None:
    with IdP(tls=True) as idp:
        assert idp.token_url.startswith("https://127.0.0.1:")
        assert idp.domain == f"127.0.0.1:{idp.port}"
        with httpx.Client(verify=idp.ssl_context()) as client:
            resp = client.post(idp.token_url, data={**FORM, "client_secret": "test-secret"})
        assert resp.status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.post(idp.token_url, data=FORM)


async def test_stop_returns_while_request_hangs() -> None:
    idp = IdP().start()
    idp.set_default(Reply(hang=True))
    async with httpx.AsyncClient() as client:
        task = asyncio.create_task(
            client.post(idp.token_url, data={**FORM, "client_secret": "test-secret"})
        )
        await settle(lambda: len(idp.requests) >= 1)
        idp.stop()
        resp = await asyncio.wait_for(task, 2)
        assert resp.status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.post(idp.token_url, data=FORM)
