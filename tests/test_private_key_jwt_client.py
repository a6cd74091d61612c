"""``private_key_jwt`` (RFC 7523) from the MCP server's side: the token manager signs a
short-lived client assertion with the configured key and the dev authorization server, over
real HTTP on 127.0.0.1, verifies it and issues a token; the settings refuse unusable keys
naming the variable and never showing the key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from tests.support.dev_issuer import AUDIENCE, RunningIssuer, track, verify
from toolbridge_common.settings import ConfigError
from toolbridge_mcp.config import Settings, load_settings
from toolbridge_mcp.oauth import ASSERTION_TYPE, ClientKey, PrivateKeyJwt, RetryPolicy, TokenError
from toolbridge_mcp.tokens import TokenManager

RSA_CLIENT, EC_CLIENT = "rsa-key-client", "ec-key-client"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
FAST = RetryPolicy(wait_initial=0.01, wait_max=0.05, deadline=2.0)


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIssuer]:
    ec_jwk = json.loads(ECAlgorithm.to_jwk(EC_KEY.public_key())) | {"kid": "ec-1"}
    client_keys = {RSA_CLIENT: public_pem(RSA_KEY), EC_CLIENT: json.dumps({"keys": [ec_jwk]})}
    folder = tmp_path_factory.mktemp("keyed")
    with RunningIssuer(folder / "state", client_keys=client_keys) as running:
        yield running


def key_settings(issuer: RunningIssuer, client_id: str, key: str, **more: str) -> Settings:
    return load_settings(
        auth0_client_id=client_id,
        auth0_client_auth_method="private_key_jwt",
        auth0_client_private_key=key,
        auth0_issuer=issuer.issuer_url,
        auth0_audience=AUDIENCE,
        _env_file=None,
        **more,
    )


async def test_an_rsa_key_from_a_file_signs_in_at_the_dev_issuer(
    issuer: RunningIssuer, tmp_path: Path
) -> None:
    """RS256, the key in a file, the token endpoint discovered from the issuer: two tokens
    in a row (each assertion has its own jti, which the issuer accepts once)."""
    key_file = tmp_path / "client.pem"
    key_file.write_text(private_pem(RSA_KEY))
    settings = key_settings(issuer, RSA_CLIENT, str(key_file))
    async with TokenManager.from_settings(settings, retry=FAST) as manager:
        first = track(await manager.get_token())
        assert manager.invalidate(first)
        second = track(await manager.get_token())
    assert first != second
    for token in (first, second):
        claims = verify(token, issuer.jwks_url, issuer=issuer.issuer_url)
        assert claims["sub"] == f"{RSA_CLIENT}@clients"
        assert claims["aud"] == AUDIENCE


async def test_an_ec_key_inline_with_its_kid_signs_in(issuer: RunningIssuer) -> None:
    settings = key_settings(issuer, EC_CLIENT, private_pem(EC_KEY), auth0_client_key_id="ec-1")
    key = settings.client_key()
    assert key is not None
    assert key.algorithm == "ES256"
    async with TokenManager.from_settings(settings, retry=FAST) as manager:
        token = track(await manager.get_token())
    assert verify(token, issuer.jwks_url, issuer=issuer.issuer_url)["sub"] == f"{EC_CLIENT}@clients"


async def test_the_wrong_key_is_refused_naming_the_settings(issuer: RunningIssuer) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings = key_settings(issuer, RSA_CLIENT, private_pem(other))
    async with TokenManager.from_settings(settings, retry=FAST) as manager:
        with pytest.raises(TokenError) as info:
            await manager.get_token()
    assert "invalid_client" in str(info.value)
    assert "TOOLBRIDGE_AUTH0_CLIENT_ID" in str(info.value)
    assert not info.value.retryable


def test_the_assertion_is_what_rfc_7523_asks_for() -> None:
    """iss = sub = client id, aud = the token endpoint, a fresh jti, exp a minute ahead,
    the kid in the header; and no secret anywhere."""
    auth = PrivateKeyJwt("client-1", ClientKey(RSA_KEY, "RS256", "key-1"), clock=lambda: 1_000)
    url = "https://idp.example/oauth/token"
    one, two = auth.credentials(url), auth.credentials(url)
    assert one.headers == {}
    assert one.fields["client_assertion_type"] == ASSERTION_TYPE
    assert one.fields["client_id"] == "client-1"
    assertion = one.fields["client_assertion"]
    assert jwt.get_unverified_header(assertion) == {"alg": "RS256", "kid": "key-1", "typ": "JWT"}
    claims = jwt.decode(
        assertion,
        RSA_KEY.public_key(),
        algorithms=["RS256"],
        audience=url,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["iss"] == claims["sub"] == "client-1"
    assert claims["exp"] - claims["iat"] == 60
    other = jwt.decode(two.fields["client_assertion"], options={"verify_signature": False})
    assert other["jti"] != claims["jti"]
    assert auth.secrets() == ()
    assert "PRIVATE" not in repr(auth)


def test_public_jwk_is_ready_to_register() -> None:
    key = ClientKey.load(private_pem(EC_KEY), key_id="ec-1")
    jwk = key.public_jwk()
    assert jwk["kty"] == "EC"
    assert jwk["kid"] == "ec-1"
    assert jwk["alg"] == "ES256"
    assert "d" not in jwk


def base_env(monkeypatch: pytest.MonkeyPatch, **more: str) -> None:
    values = {
        "TOOLBRIDGE_AUTH0_CLIENT_ID": "client",
        "TOOLBRIDGE_AUTH0_TOKEN_URL": "https://idp.example/token",
        "TOOLBRIDGE_AUTH0_CLIENT_AUTH_METHOD": "private_key_jwt",
    } | more
    for name, value in values.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("clean_settings_env")
@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (None, "TOOLBRIDGE_AUTH0_CLIENT_PRIVATE_KEY not set"),
        ("/no/such/file.pem", "neither a PEM private key nor a readable file"),
        (public_pem(RSA_KEY), "not a PEM private key"),
        (
            private_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505 - refused on purpose
            "at least 2048 bits",
        ),
        (
            RSA_KEY.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"passphrase"),
            ).decode(),
            "encrypted",
        ),
        (private_pem(ec.generate_private_key(ec.SECP256K1())), "P-256, P-384 or P-521"),
    ],
)
def test_unusable_keys_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, key: str | None, expected: str
) -> None:
    base_env(monkeypatch)
    if key is not None:
        monkeypatch.setenv("TOOLBRIDGE_AUTH0_CLIENT_PRIVATE_KEY", key)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert "TOOLBRIDGE_AUTH0_CLIENT_PRIVATE_KEY" in message
    assert "PRIVATE KEY-----" not in message
    assert "MII" not in message


@pytest.mark.usefixtures("clean_settings_env")
def test_a_key_without_private_key_jwt_is_a_mistake(monkeypatch: pytest.MonkeyPatch) -> None:
    base_env(
        monkeypatch,
        TOOLBRIDGE_AUTH0_CLIENT_AUTH_METHOD="client_secret_post",
        TOOLBRIDGE_AUTH0_CLIENT_SECRET="s3cret-value",
        TOOLBRIDGE_AUTH0_CLIENT_PRIVATE_KEY=private_pem(RSA_KEY),
    )
    with pytest.raises(ConfigError, match="set it to private_key_jwt"):
        load_settings()


@pytest.mark.usefixtures("clean_settings_env")
def test_private_key_jwt_needs_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    base_env(monkeypatch, TOOLBRIDGE_AUTH0_CLIENT_PRIVATE_KEY=private_pem(RSA_KEY))
    settings = load_settings()
    assert settings.auth_mode() == "auth0"
    assert settings.auth0_client_secret is None
    key = settings.client_key()
    assert key is not None
    assert key.algorithm == "RS256"
    assert "PRIVATE" not in repr(settings)
