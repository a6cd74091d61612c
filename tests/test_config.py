"""Settings: every seed setting, the auth modes, and errors that name what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolbridge_common.settings import ConfigError
from toolbridge_mcp.config import Settings, get_settings, load_settings

pytestmark = pytest.mark.usefixtures("clean_settings_env")

SECRET = "s3cr3t-value-never-shown"


def auth0_env(monkeypatch: pytest.MonkeyPatch, **overrides: str) -> None:
    values = {
        "TOOLBRIDGE_AUTH0_CLIENT_ID": "client",
        "TOOLBRIDGE_AUTH0_CLIENT_SECRET": SECRET,
        "TOOLBRIDGE_AUTH0_DOMAIN": "tenant.eu.auth0.com",
        "TOOLBRIDGE_AUTH0_AUDIENCE": "https://api.example",
    } | overrides
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_defaults_follow_the_seed() -> None:
    settings = load_settings()
    assert settings.go_api_base_url == "http://localhost:8081"
    assert settings.port == 8001
    assert settings.token_refresh_buffer_seconds == 300
    assert settings.auth0_timeout_seconds == 10
    assert settings.max_timestamp_skew_seconds == 300
    assert settings.log_level == "INFO"
    assert settings.auth0_client_auth_method == "client_secret_post"
    assert settings.auth0_domain is None
    assert settings.auth0_audience is None
    assert settings.auth_mode() == "token_exchange"


def test_auth0_mode_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    auth0_env(monkeypatch)
    settings = load_settings()
    assert settings.auth_mode() == "auth0"
    assert settings.token_url() == "https://tenant.eu.auth0.com/oauth/token"
    assert settings.auth0_client_secret is not None
    assert settings.auth0_client_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())


def test_static_mode_and_auth0_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLBRIDGE_JWT_TOKEN", "eyJ.static.token")
    assert load_settings().auth_mode() == "static"
    auth0_env(monkeypatch)
    assert load_settings().auth_mode() == "auth0"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "TOOLBRIDGE_AUTH0_CLIENT_ID=client\n"
        f"TOOLBRIDGE_AUTH0_CLIENT_SECRET={SECRET}\n"
        "TOOLBRIDGE_AUTH0_TOKEN_URL=http://127.0.0.1:9000/oauth/token\n"
        "toolbridge_log_level=debug\n"
    )
    settings = get_settings()
    assert settings.auth_mode() == "auth0"
    assert settings.log_level == "DEBUG"
    assert settings.token_url() == "http://127.0.0.1:9000/oauth/token"
    assert get_settings() is settings


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        (
            {"TOOLBRIDGE_AUTH0_CLIENT_ID": "client"},
            [
                "TOOLBRIDGE_AUTH0_CLIENT_SECRET",
                "TOOLBRIDGE_AUTH0_TOKEN_URL",
                "TOOLBRIDGE_AUTH0_ISSUER",
                "TOOLBRIDGE_AUTH0_DOMAIN",
            ],
        ),
        (
            {"TOOLBRIDGE_AUTH0_CLIENT_SECRET": SECRET, "TOOLBRIDGE_AUTH0_DOMAIN": "t.auth0.com"},
            ["TOOLBRIDGE_AUTH0_CLIENT_ID", "TOOLBRIDGE_AUTH0_AUDIENCE"],
        ),
        (
            {
                "TOOLBRIDGE_AUTH0_CLIENT_ID": "client",
                "TOOLBRIDGE_AUTH0_CLIENT_SECRET": SECRET,
                "TOOLBRIDGE_AUTH0_DOMAIN": "t.auth0.com",
            },
            ["TOOLBRIDGE_AUTH0_AUDIENCE"],
        ),
    ],
)
def test_half_configured_auth0_names_the_missing_variables(
    monkeypatch: pytest.MonkeyPatch, given: dict[str, str], missing: list[str]
) -> None:
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    not_set = message.partition(" not set")[0]
    for name in missing:
        assert f"{name} " in not_set or f"{name}," in not_set or not_set.endswith(name)
    assert "incomplete OAuth client-credentials configuration" in message
    assert SECRET not in message


def test_the_audience_is_required_only_with_an_auth0_domain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a token URL (or an issuer to discover it from) the audience is optional, and the
    message for a missing secret does not call it required."""
    monkeypatch.setenv("TOOLBRIDGE_AUTH0_CLIENT_ID", "client")
    monkeypatch.setenv("TOOLBRIDGE_AUTH0_TOKEN_URL", "https://idp.example/token")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "TOOLBRIDGE_AUTH0_CLIENT_SECRET not set" in message
    assert "AUDIENCE" not in message
    monkeypatch.setenv("TOOLBRIDGE_AUTH0_CLIENT_SECRET", SECRET)
    assert load_settings().auth0_audience is None
    monkeypatch.delenv("TOOLBRIDGE_AUTH0_TOKEN_URL")
    monkeypatch.setenv("TOOLBRIDGE_AUTH0_ISSUER", "https://idp.example/")
    settings = load_settings()
    assert settings.auth_mode() == "auth0"
    with pytest.raises(ConfigError, match="discovered from TOOLBRIDGE_AUTH0_ISSUER"):
        settings.token_url()


def test_token_url_makes_domain_and_audience_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLBRIDGE_AUTH0_CLIENT_ID", "client")
    monkeypatch.setenv("TOOLBRIDGE_AUTH0_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("TOOLBRIDGE_AUTH0_TOKEN_URL", "https://idp.example/oauth2/token")
    monkeypatch.setenv("TOOLBRIDGE_AUTH0_SCOPE", "notes:read")
    settings = load_settings()
    assert settings.auth_mode() == "auth0"
    assert settings.token_url() == "https://idp.example/oauth2/token"


def test_half_configured_tenant_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLBRIDGE_TENANT_HEADER_SECRET", SECRET)
    with pytest.raises(ConfigError, match="TOOLBRIDGE_TENANT_ID not set") as info:
        load_settings()
    assert SECRET not in str(info.value)


def test_blank_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    auth0_env(
        monkeypatch,
        TOOLBRIDGE_AUTH0_CLIENT_ID="",
        TOOLBRIDGE_AUTH0_CLIENT_SECRET=" ",
        TOOLBRIDGE_AUTH0_DOMAIN="",
        TOOLBRIDGE_AUTH0_AUDIENCE="",
    )
    assert load_settings().auth_mode() == "token_exchange"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("tenant.us.auth0.com", "tenant.us.auth0.com"),
        ("https://tenant.us.auth0.com/", "tenant.us.auth0.com"),
        ("login.example.com:8443", "login.example.com:8443"),
        (" tenant.us.auth0.com\n", "tenant.us.auth0.com"),
    ],
)
def test_domain_is_normalized(monkeypatch: pytest.MonkeyPatch, given: str, expected: str) -> None:
    auth0_env(monkeypatch, TOOLBRIDGE_AUTH0_DOMAIN=given)
    assert load_settings().auth0_domain == expected


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TOOLBRIDGE_AUTH0_DOMAIN", "http://tenant.auth0.com", "TOOLBRIDGE_AUTH0_DOMAIN"),
        ("TOOLBRIDGE_AUTH0_DOMAIN", "tenant.auth0.com/oauth/token", "TOOLBRIDGE_AUTH0_TOKEN_URL"),
        ("TOOLBRIDGE_AUTH0_TOKEN_URL", "http://idp.example/token", "https"),
        ("TOOLBRIDGE_AUTH0_TOKEN_URL", "idp.example/token", "absolute"),
        ("TOOLBRIDGE_AUTH0_CLIENT_AUTH_METHOD", "client_secret_jwt", "private_key_jwt"),
        ("TOOLBRIDGE_TOKEN_REFRESH_FRACTION", "1", "TOOLBRIDGE_TOKEN_REFRESH_FRACTION"),
        ("TOOLBRIDGE_AUTH0_ISSUER", "http://idp.example/", "https"),
        ("TOOLBRIDGE_PORT", "eighty", "TOOLBRIDGE_PORT"),
        ("TOOLBRIDGE_PORT", "70000", "65535"),
        ("TOOLBRIDGE_LOG_LEVEL", "LOUD", "TOOLBRIDGE_LOG_LEVEL"),
        ("TOOLBRIDGE_GO_API_BASE_URL", "localhost:8081", "TOOLBRIDGE_GO_API_BASE_URL"),
        ("TOOLBRIDGE_AUTH0_TIMEOUT_SECONDS", "0", "TOOLBRIDGE_AUTH0_TIMEOUT_SECONDS"),
    ],
)
def test_bad_values_name_the_variable_and_hide_secrets(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    auth0_env(monkeypatch)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert SECRET not in message


def test_api_url_with_credentials_is_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth0_env(monkeypatch, TOOLBRIDGE_GO_API_BASE_URL="https://svc:hunter2-pw@api.example")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "TOOLBRIDGE_GO_API_BASE_URL" in str(info.value)
    assert "hunter2-pw" not in str(info.value)


def test_plain_http_token_url_is_accepted_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    auth0_env(monkeypatch, TOOLBRIDGE_AUTH0_TOKEN_URL="http://localhost:8765/oauth/token")
    assert load_settings().token_url() == "http://localhost:8765/oauth/token"


def test_token_url_without_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="TOOLBRIDGE_AUTH0_DOMAIN"):
        Settings(_env_file=None).token_url()  # type: ignore[call-arg]
