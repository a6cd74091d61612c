"""Client ID Metadata Documents: a ``client_id`` that is a URL whose JSON document lists the
client's redirect URIs, served here from a loopback HTTP server (plain http is accepted on
loopback only, for development). Fetch failures and invalid documents are refused with the
reason; a valid document is cached as its ``Cache-Control`` allows."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.dev_issuer.flow import (
    REDIRECT_URI,
    Document,
    DocumentServer,
    authorization_params,
    code_for,
    error,
    open_authorization,
    pkce,
    redeem,
    redirected,
    refresh,
    sign_in,
)
from tests.support.dev_issuer import RunningIssuer, track
from tests.support.process import free_port


@pytest.fixture(scope="module")
def documents() -> Iterator[DocumentServer]:
    server = DocumentServer().start()
    yield server
    server.stop()


def test_a_document_client_signs_a_user_in(
    issuer: RunningIssuer, documents: DocumentServer
) -> None:
    client_id = documents.publish("clients/inspector.json", client_name="Inspector (CIMD)")
    verifier, challenge = pkce()
    page = open_authorization(issuer, authorization_params(client_id, challenge))
    assert page.status_code == 200, page.text
    assert "Inspector (CIMD)" in page.text
    answer = redirected(sign_in(issuer, page, "alice"))
    response = redeem(issuer, client_id, answer["code"], verifier)
    assert response.status_code == 200, response.text
    body = response.json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert (claims["sub"], claims["client_id"]) == ("alice", client_id)
    renewed = refresh(issuer, client_id, body["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert documents.fetches["clients/inspector.json"] == 1  # cached for the later requests


def test_no_store_documents_are_fetched_every_time(
    issuer: RunningIssuer, documents: DocumentServer
) -> None:
    client_id = documents.publish("clients/no-store.json")
    documents.documents["clients/no-store.json"].headers = {"Cache-Control": "no-store"}
    code, verifier = code_for(issuer, client_id)
    assert redeem(issuer, client_id, code, verifier).status_code == 200
    assert documents.fetches["clients/no-store.json"] == 2


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (
            Document({"client_id": "https://elsewhere.example/c.json", "redirect_uris": []}),
            "names client_id https://elsewhere.example/c.json, not its own URL",
        ),
        (
            Document({"error": "moved"}, 302, {"Location": "/other"}),
            "answered HTTP 302 (redirects are not followed)",
        ),
        (Document({"error": "gone"}, 410), "answered HTTP 410"),
        (Document(b"not json"), "is not a JSON object"),
        (Document(b'{"client_id": "' + b"x" * 6000 + b'"}'), "is larger than 5120 bytes"),
    ],
    ids=["client_id mismatch", "redirect", "gone", "not json", "too large"],
)
def test_unusable_documents_are_refused_with_the_reason(
    issuer: RunningIssuer, documents: DocumentServer, document: Document, reason: str
) -> None:
    path = f"clients/{uuid.uuid4().hex}.json"
    documents.documents[path] = document
    client_id = documents.url(path)
    _, challenge = pkce()
    page = open_authorization(issuer, authorization_params(client_id, challenge))
    assert page.status_code == 400
    assert "location" not in page.headers
    assert reason in page.text
    token = httpx.post(
        issuer.token_url,
        data={"grant_type": "refresh_token", "refresh_token": "x", "client_id": client_id},
    )
    status, code, description = error(token)
    assert (status, code) == (401, "invalid_client")
    assert description.startswith("Client authentication failed: ")
    assert reason in description


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (
            {"token_endpoint_auth_method": "client_secret_basic"},
            "a metadata document may describe a public client (token_endpoint_auth_method none) "
            "or one with private_key_jwt and jwks; clients with a secret are configured in "
            "TOOLBRIDGE_DEV_ISSUER_CLIENTS",
        ),
        ({"client_secret": "s3cret"}, "a metadata document may describe a public client"),
        ({"redirect_uris": ["http://client.example/cb"]}, "http is allowed for loopback hosts"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "private_key_jwt needs the public"),
        ({"response_types": ["token"]}, 'response_types must be ["code"]'),
    ],
)
def test_invalid_document_contents(
    issuer: RunningIssuer, documents: DocumentServer, metadata: dict[str, object], reason: str
) -> None:
    client_id = documents.publish(f"clients/{uuid.uuid4().hex}.json", **metadata)
    _, challenge = pkce()
    page = open_authorization(issuer, authorization_params(client_id, challenge))
    assert page.status_code == 400
    assert reason.replace('"', "&quot;") in page.text


def test_a_redirect_uri_the_document_does_not_list_is_a_page(
    issuer: RunningIssuer, documents: DocumentServer
) -> None:
    client_id = documents.publish("clients/listed.json")
    _, challenge = pkce()
    params = authorization_params(client_id, challenge, redirect_uri="http://127.0.0.1:1/x")
    page = open_authorization(issuer, params)
    assert page.status_code == 400
    assert f"is not registered for client {client_id} (registered: {REDIRECT_URI})" in page.text


@pytest.mark.parametrize(
    ("client_id", "reason"),
    [
        ("http://client.example/c.json", "must be https (http only on loopback"),
        ("https://client.example/", "must have a path"),
        ("https://user:pw@client.example/c.json", "must not contain a user name or password"),
        ("https://client.example/a/../c.json", "must not contain . or .. path segments"),
    ],
)
def test_client_id_url_rules(issuer: RunningIssuer, client_id: str, reason: str) -> None:
    _, challenge = pkce()
    page = open_authorization(issuer, authorization_params(client_id, challenge))
    assert page.status_code == 400
    assert reason in page.text


def test_an_unreachable_document(issuer: RunningIssuer) -> None:
    client_id = f"http://127.0.0.1:{free_port()}/client.json"
    _, challenge = pkce()
    page = open_authorization(issuer, authorization_params(client_id, challenge))
    assert page.status_code == 400
    assert "cannot fetch the metadata document at" in page.text
    assert "ConnectError" in page.text


def test_a_document_client_with_private_key_jwt(
    issuer: RunningIssuer, documents: DocumentServer
) -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(private_key.public_key())) | {"kid": "k1"}
    client_id = documents.publish(
        "clients/confidential.json",
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [jwk]},
    )
    code, verifier = code_for(issuer, client_id)
    unauthenticated = redeem(issuer, client_id, code, verifier)
    assert error(unauthenticated) == (
        401,
        "invalid_client",
        "Client authentication failed: this client must send a client_assertion (private_key_jwt)",
    )
    code, verifier = code_for(issuer, client_id)
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": client_id,
            "sub": client_id,
            "aud": issuer.token_url,
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
        },
        private_key,
        algorithm="ES256",
        headers={"kid": "k1"},
    )
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    response = httpx.post(issuer.token_url, data=form)
    assert response.status_code == 200, response.text
    track(response.json()["access_token"])
    track(response.json()["refresh_token"])
