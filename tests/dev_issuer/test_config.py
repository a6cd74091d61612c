"""Issuer settings from TOOLBRIDGE_DEV_ISSUER_* variables: defaults, and errors that name
the variable to fix without repeating a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolbridge_dev.issuer.config import ConfigError, load_issuer_settings

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
