"""Issuer settings from TOOLBRIDGE_DEV_ISSUER_* variables: defaults, and errors that name
the variable to fix without repeating a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from toolbridge_common.settings import ConfigError
from toolbridge_dev.issuer.config import load_issuer_settings

pytestmark = pytest.mark.usefixtures("clean_settings_env")

SECRET = "s3cret-value-never-shown"


def test_defaults() -> None:
    settings = load_issuer_settings()
    assert settings.issuer_url == "http://127.0.0.1:8090/"
    assert settings.audiences == ["https://api.toolbridge.local"]
    assert settings.default_audience == "https://api.toolbridge.local"
    assert settings.state_dir == Path(".toolbridge/issuer")
    assert settings.token_lifetime_seconds == 3600
    assert settings.clients == {}
    assert settings.endpoint("/oauth/token") == "http://127.0.0.1:8090/oauth/token"


def test_issuer_url_follows_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLBRIDGE_DEV_ISSUER_HOST", "::1")
    monkeypatch.setenv("TOOLBRIDGE_DEV_ISSUER_PORT", "9999")
    assert load_issuer_settings().issuer_url == "http://[::1]:9999/"


def test_explicit_issuer_url_is_kept_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLBRIDGE_DEV_ISSUER_ISSUER_URL", "http://issuer.dev.local:8090")
    settings = load_issuer_settings()
    assert settings.issuer_url == "http://issuer.dev.local:8090"
    assert settings.endpoint("/.well-known/jwks.json") == (
        "http://issuer.dev.local:8090/.well-known/jwks.json"
    )


def test_clients_and_audiences_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLBRIDGE_DEV_ISSUER_CLIENTS", f'{{"my-client": "{SECRET}"}}')
    monkeypatch.setenv("TOOLBRIDGE_DEV_ISSUER_AUDIENCES", '["https://a.local", "https://b.local"]')
    settings = load_issuer_settings()
    assert settings.clients["my-client"].get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert settings.default_audience == "https://a.local"


def test_clients_from_a_dotenv_file(tmp_path: Path) -> None:
    clients = f'{{"dotenv": "{SECRET}"}}'
    (tmp_path / ".env").write_text(f"TOOLBRIDGE_DEV_ISSUER_CLIENTS='{clients}'\n")
    assert list(load_issuer_settings().clients) == ["dotenv"]


def test_non_loopback_host_needs_allow_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLBRIDGE_DEV_ISSUER_HOST", "0.0.0.0")
    with pytest.raises(ConfigError) as caught:
        load_issuer_settings()
    message = str(caught.value)
    assert "TOOLBRIDGE_DEV_ISSUER_HOST=0.0.0.0 is not a loopback address" in message
    assert "TOOLBRIDGE_DEV_ISSUER_ALLOW_REMOTE=true" in message
    monkeypatch.setenv("TOOLBRIDGE_DEV_ISSUER_ALLOW_REMOTE", "true")
    assert load_issuer_settings().host == "0.0.0.0"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "TOOLBRIDGE_DEV_ISSUER_CLIENTS",
            f'{{"my-client": "{SECRET}"',
            'TOOLBRIDGE_DEV_ISSUER_CLIENTS: not valid JSON (e.g. {"my-client": "my-secret"})',
        ),
        (
            "TOOLBRIDGE_DEV_ISSUER_CLIENTS",
            f'["my-client", "{SECRET}"]',
            "TOOLBRIDGE_DEV_ISSUER_CLIENTS: Input should be a valid dictionary",
        ),
        (
            "TOOLBRIDGE_DEV_ISSUER_CLIENTS",
            f'{{"my-client": ["{SECRET}"]}}',
            "TOOLBRIDGE_DEV_ISSUER_CLIENTS: Input should be a valid string",
        ),
        (
            "TOOLBRIDGE_DEV_ISSUER_CLIENTS",
            '{"my-client": ""}',
            "TOOLBRIDGE_DEV_ISSUER_CLIENTS: client 'my-client' has an empty secret",
        ),
        (
            "TOOLBRIDGE_DEV_ISSUER_AUDIENCES",
            "https://not-a-list",
            "TOOLBRIDGE_DEV_ISSUER_AUDIENCES: not valid JSON",
        ),
        (
            "TOOLBRIDGE_DEV_ISSUER_AUDIENCES",
            "[]",
            "TOOLBRIDGE_DEV_ISSUER_AUDIENCES: List should have at least 1 item",
        ),
        (
            "TOOLBRIDGE_DEV_ISSUER_TOKEN_LIFETIME_SECONDS",
            "0",
            "TOOLBRIDGE_DEV_ISSUER_TOKEN_LIFETIME_SECONDS: Input should be greater than or equal",
        ),
        (
            "TOOLBRIDGE_DEV_ISSUER_TOKEN_LIFETIME_SECONDS",
            str(31 * 24 * 3600),
            "TOOLBRIDGE_DEV_ISSUER_TOKEN_LIFETIME_SECONDS: Input should be less than or equal",
        ),
        (
            "TOOLBRIDGE_DEV_ISSUER_PORT",
            "0",
            "TOOLBRIDGE_DEV_ISSUER_PORT: Input should be greater than or equal to 1",
        ),
        (
            "TOOLBRIDGE_DEV_ISSUER_ISSUER_URL",
            "issuer.local",
            "TOOLBRIDGE_DEV_ISSUER_ISSUER_URL: must be an absolute http(s) URL",
        ),
    ],
)
def test_errors_name_the_variable_and_never_the_secret(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_issuer_settings()
    assert expected in str(caught.value)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None


def test_authorization_server_defaults() -> None:
    settings = load_issuer_settings()
    assert settings.users == ["alice", "bob"]
    assert settings.allow_any_user is True
    assert settings.scopes == ["offline_access"]
    assert settings.code_lifetime_seconds == 60
    assert settings.refresh_token_lifetime_seconds == 7 * 24 * 3600
    assert settings.client_keys == {}
    assert settings.public_keys() == {}


def test_client_keys_from_pem_jwks_and_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "key.pem").write_bytes(pem)
    jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())) | {"kid": "k", "alg": "PS256"}
    keys = {"pem": pem.decode(), "jwks": json.dumps({"keys": [jwk]}), "file": "key.pem"}
    monkeypatch.setenv("TOOLBRIDGE_DEV_ISSUER_CLIENT_KEYS", json.dumps(keys))
    parsed = load_issuer_settings().public_keys()
    assert parsed["pem"][0].algorithms[0] == "RS256"
    assert (parsed["jwks"][0].kid, parsed["jwks"][0].algorithms) == ("k", ("PS256",))
    assert parsed["file"][0].kid is None


def _private_jwk() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return RSAAlgorithm.to_jwk(key)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"TOOLBRIDGE_DEV_ISSUER_CLIENT_KEYS": '{"c": "-----BEGIN PUBLIC KEY-----\\nxx"}'},
            "TOOLBRIDGE_DEV_ISSUER_CLIENT_KEYS: client 'c': not a PEM public key",
        ),
        (
            {"TOOLBRIDGE_DEV_ISSUER_CLIENT_KEYS": json.dumps({"c": "PRIVATE"})},
            "TOOLBRIDGE_DEV_ISSUER_CLIENT_KEYS: client 'c': neither a PEM public key, a JWK or "
            "JWKS, nor a readable file (PRIVATE: No such file or directory)",
        ),
        (
            {"TOOLBRIDGE_DEV_ISSUER_CLIENT_KEYS": json.dumps({"c": "PRIVATE_JWK"})},
            "TOOLBRIDGE_DEV_ISSUER_CLIENT_KEYS: client 'c': a JWK holds a private key; give the "
            "public key only",
        ),
        (
            {"TOOLBRIDGE_DEV_ISSUER_CLIENT_KEYS": json.dumps({"c": '{"kty": "oct", "k": "AAAA"}'})},
            "TOOLBRIDGE_DEV_ISSUER_CLIENT_KEYS: client 'c': only RSA, EC (P-256/384/521) and "
            "Ed25519/Ed448 keys are accepted",
        ),
        (
            {
                "TOOLBRIDGE_DEV_ISSUER_CLIENTS": '{"c": "secret"}',
                "TOOLBRIDGE_DEV_ISSUER_CLIENT_KEYS": json.dumps({"c": "KEY"}),
            },
            "client 'c' is in both TOOLBRIDGE_DEV_ISSUER_CLIENTS and "
            "TOOLBRIDGE_DEV_ISSUER_CLIENT_KEYS; a client has a secret or a key, not both",
        ),
        (
            {"TOOLBRIDGE_DEV_ISSUER_USERS": '["alice", "bob smith"]'},
            "TOOLBRIDGE_DEV_ISSUER_USERS: user 'bob smith' is not a valid name (1-64 letters",
        ),
        (
            {"TOOLBRIDGE_DEV_ISSUER_USERS": "[]", "TOOLBRIDGE_DEV_ISSUER_ALLOW_ANY_USER": "false"},
            "TOOLBRIDGE_DEV_ISSUER_USERS is empty and TOOLBRIDGE_DEV_ISSUER_ALLOW_ANY_USER=false: "
            "nobody could sign in",
        ),
        (
            {"TOOLBRIDGE_DEV_ISSUER_SCOPES": '["read write"]'},
            "TOOLBRIDGE_DEV_ISSUER_SCOPES: scope 'read write' is not a scope token",
        ),
        (
            {"TOOLBRIDGE_DEV_ISSUER_CODE_LIFETIME_SECONDS": "601"},
            "TOOLBRIDGE_DEV_ISSUER_CODE_LIFETIME_SECONDS: Input should be less than or equal",
        ),
    ],
)
def test_authorization_server_setting_errors(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    public_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    for name, value in variables.items():
        value = value.replace('"PRIVATE_JWK"', json.dumps(_private_jwk()))
        value = value.replace('"KEY"', json.dumps(public_pem))
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_issuer_settings()
    assert expected in str(caught.value)
