"""``private_key_jwt`` (RFC 7523) at the token endpoint: confidential clients configured with a
public key (PEM, JWKS, or a file) prove themselves with a short-lived signed assertion, each
``jti`` accepted once; every way an assertion can be wrong is refused with the reason."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm

from tests.conftest import CLIENT_ID, CLIENT_SECRET, LogCapture
from tests.dev_issuer.flow import error
from tests.support.dev_issuer import AUDIENCE, RunningIssuer, issuer_messages, track, verify
from tests.support.jwks import SigningKey as RsaKey
from tests.support.jwks import mint

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RSA_CLIENT = "rsa-client"
EC_CLIENT = "ec-client"
ED_CLIENT = "ed-client"

RSA_KEY = RsaKey.generate("rsa-1")
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIssuer]:
    folder = tmp_path_factory.mktemp("keyed")
    ed_file = folder / "ed-client.pem"
    ed_file.write_bytes(
        ED_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    ec_jwk = json.loads(ECAlgorithm.to_jwk(EC_KEY.public_key())) | {"kid": "ec-1"}
    client_keys = {
        RSA_CLIENT: RSA_KEY.public_pem.decode(),
        EC_CLIENT: json.dumps({"keys": [ec_jwk]}),
        ED_CLIENT: str(ed_file),
    }
    with RunningIssuer(folder / "state", client_keys=client_keys) as running:
        yield running


def claims(issuer: RunningIssuer, client_id: str = RSA_CLIENT, **changes: Any) -> dict[str, Any]:
    """Valid assertion claims; ``None`` in ``changes`` leaves a claim out."""
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": issuer.token_url,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    } | changes
    return {name: value for name, value in body.items() if value is not None}


def rsa_assertion(issuer: RunningIssuer, **changes: Any) -> str:
    return mint(claims(issuer, **changes), key=RSA_KEY)


def token_with(issuer: RunningIssuer, assertion: str, **form: str) -> httpx.Response:
    body = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    } | form
    response = httpx.post(issuer.token_url, data=body)
    if response.status_code == 200:
        track(response.json()["access_token"])
    return response


def test_an_rs256_assertion_gets_a_client_token(keyed: RunningIssuer, logs: LogCapture) -> None:
    response = token_with(keyed, rsa_assertion(keyed))
    assert response.status_code == 200, response.text
    token_claims = verify(response.json()["access_token"], keyed.jwks_url, issuer=keyed.issuer_url)
    assert token_claims["sub"] == f"{RSA_CLIENT}@clients"
    assert token_claims["azp"] == RSA_CLIENT
    assert token_claims["aud"] == AUDIENCE
    assert issuer_messages(logs, "INFO") == [
        f"Issued a token to client {RSA_CLIENT} for {AUDIENCE}, valid 3600 s"
    ]


@pytest.mark.parametrize("audience", ["issuer", "issuer without slash", "list"])
def test_the_issuer_is_an_accepted_audience(keyed: RunningIssuer, audience: str) -> None:
    aud: str | Sequence[str] = {
        "issuer": keyed.issuer_url,
        "issuer without slash": keyed.url,
        "list": ["https://someone.else", keyed.token_url],
    }[audience]
    assert token_with(keyed, rsa_assertion(keyed, aud=aud)).status_code == 200


def test_es256_from_a_jwks_and_eddsa_from_a_key_file(keyed: RunningIssuer) -> None:
    es = jwt.encode(claims(keyed, EC_CLIENT), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
    assert token_with(keyed, es, client_id=EC_CLIENT).status_code == 200
    ed = jwt.encode(claims(keyed, ED_CLIENT), ED_KEY, algorithm="EdDSA")
    assert token_with(keyed, ed).status_code == 200


def test_a_replayed_assertion_is_refused(keyed: RunningIssuer, logs: LogCapture) -> None:
    assertion = rsa_assertion(keyed)
    assert token_with(keyed, assertion).status_code == 200
    assert error(token_with(keyed, assertion)) == (
        401,
        "invalid_client",
        "Client authentication failed: client_assertion jti was already used (replay)",
    )
    assert issuer_messages(logs, "WARNING") == [
        f"Refused client authentication for client {RSA_CLIENT} (client_assertion jti was "
        "already used (replay))"
    ]


OTHER_KEY = RsaKey.generate("rsa-1")  # same kid, other key


BAD: list[tuple[str, Any, str]] = [
    (
        "signed by another key",
        lambda issuer: mint(claims(issuer), key=OTHER_KEY),
        "Client authentication failed: signature does not verify with the client's keys",
    ),
    (
        "no jti",
        lambda issuer: rsa_assertion(issuer, jti=None),
        "Client authentication failed: client_assertion has no jti claim",
    ),
    (
        "no exp",
        lambda issuer: rsa_assertion(issuer, exp=None),
        "Client authentication failed: client_assertion has no exp claim",
    ),
    (
        "expired",
        lambda issuer: rsa_assertion(issuer, iat=int(time.time()) - 600, exp=int(time.time()) - 60),
        "Client authentication failed: client_assertion has expired",
    ),
    (
        "long-lived",
        lambda issuer: rsa_assertion(issuer, exp=int(time.time()) + 3600),
        "Client authentication failed: client_assertion exp is too far ahead (at most 300 s)",
    ),
    (
        "not yet valid",
        lambda issuer: rsa_assertion(issuer, nbf=int(time.time()) + 120),
        "Client authentication failed: client_assertion is not valid yet (nbf or iat)",
    ),
    (
        "other audience",
        lambda issuer: rsa_assertion(issuer, aud="https://api.toolbridge.local"),
        "Client authentication failed: client_assertion aud must name this issuer: {token_url} "
        "or {issuer_url} or {url}",
    ),
    (
        "sub is not the client",
        lambda issuer: rsa_assertion(issuer, sub="someone-else"),
        "Client authentication failed: client_assertion sub must be the client_id",
    ),
    (
        "alg none",
        lambda issuer: mint(claims(issuer), key=None, alg="none"),
        "Client authentication failed: client_assertion alg 'none' is not accepted (use one of "
        "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)",
    ),
    (
        "HS256 with the public key as secret",
        lambda issuer: mint(claims(issuer), key=RSA_KEY.public_pem, alg="HS256"),
        "Client authentication failed: client_assertion alg 'HS256' is not accepted (use one "
        "of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)",
    ),
    (
        "RS256 for an EC client",
        lambda issuer: mint(claims(issuer, EC_CLIENT), key=RSA_KEY, kid="ec-1"),
        "Client authentication failed: no key of client ec-client verifies RS256 with kid 'ec-1'",
    ),
]


@pytest.mark.parametrize(
    ("make", "description"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_bad_assertions_are_refused_with_the_reason(
    keyed: RunningIssuer, logs: LogCapture, make: Any, description: str
) -> None:
    response = token_with(keyed, make(keyed))
    expected = description.format(
        token_url=keyed.token_url, issuer_url=keyed.issuer_url, url=keyed.url
    )
    assert error(response) == (401, "invalid_client", expected)
    (warning,) = issuer_messages(logs, "WARNING")
    assert warning.startswith("Refused client authentication for client ")


def test_a_malformed_assertion(keyed: RunningIssuer) -> None:
    assert error(token_with(keyed, "not.a.jwt")) == (
        401,
        "invalid_client",
        "client_assertion is not a well-formed JWT",
    )
    no_iss = mint(claims(keyed, iss=None), key=RSA_KEY)
    assert error(token_with(keyed, no_iss)) == (
        401,
        "invalid_client",
        "client_assertion has no iss (it must be the client_id)",
    )


def test_an_unknown_client_assertion(keyed: RunningIssuer, logs: LogCapture) -> None:
    assertion = mint(claims(keyed, "stranger"), key=RSA_KEY)
    assert error(token_with(keyed, assertion)) == (
        401,
        "invalid_client",
        "Client authentication failed",
    )
    assert issuer_messages(logs, "WARNING") == [
        "Refused client authentication for client stranger (unknown client)"
    ]


def test_a_secret_client_cannot_use_an_assertion(keyed: RunningIssuer) -> None:
    assertion = mint(claims(keyed, CLIENT_ID), key=RSA_KEY)
    assert error(token_with(keyed, assertion)) == (
        401,
        "invalid_client",
        "Client authentication failed",
    )


def test_a_key_client_cannot_use_a_secret(keyed: RunningIssuer) -> None:
    response = httpx.post(
        keyed.token_url,
        data={"grant_type": "client_credentials", "client_id": RSA_CLIENT, "client_secret": "x"},
    )
    assert error(response) == (
        401,
        "invalid_client",
        "Client authentication failed: this client must send a client_assertion (private_key_jwt)",
    )


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        (
            {"client_assertion_type": "urn:example:other"},
            (
                401,
                "invalid_client",
                f"Unsupported client_assertion_type urn:example:other (use {ASSERTION_TYPE})",
            ),
        ),
        (
            {"client_id": "someone-else"},
            (401, "invalid_client", "client_id differs from the client_assertion's iss"),
        ),
        (
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            (400, "invalid_request", "Use only one client authentication method"),
        ),
    ],
)
def test_assertion_request_mistakes(
    keyed: RunningIssuer, form: dict[str, str], expected: tuple[int, str, str]
) -> None:
    assert error(token_with(keyed, rsa_assertion(keyed), **form)) == expected


def test_assertion_type_without_assertion(keyed: RunningIssuer) -> None:
    response = httpx.post(
        keyed.token_url,
        data={"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE},
    )
    assert error(response) == (
        400,
        "invalid_request",
        "client_assertion_type without client_assertion",
    )


def test_secret_clients_still_work_next_to_key_clients(keyed: RunningIssuer) -> None:
    assert keyed.fetch()  # client_secret_post, as before


def test_startup_counts_both_kinds_of_client(tmp_path: Path, logs: LogCapture) -> None:
    with RunningIssuer(
        tmp_path / "state", client_keys={RSA_CLIENT: RSA_KEY.public_pem.decode()}
    ) as running:
        assert running.key is not None
        assert issuer_messages(logs, "INFO")[-1] == (
            f"Dev issuer (DEVELOPMENT ONLY) at {running.issuer_url}: key {running.key.kid}, "
            "3 clients, tokens last 3600 s"
        )
