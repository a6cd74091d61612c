"""ApiSettings: defaults, Auth0 domain derivation, and errors that name the variable to fix
without echoing secrets."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from toolbridge_api.config import ApiSettings, DatabaseSettings, load_api_settings
from toolbridge_common.settings import ConfigError

SECRET = "hs256-secret-that-must-never-be-echoed-0123456789"


def load(**fields: Any) -> ApiSettings:
    return load_api_settings(ApiSettings, _env_file=None, **fields)


def test_defaults_match_the_contract() -> None:
    settings = load(
        jwks_url="https://idp.test/.well-known/jwks.json",
        issuer="https://idp.test/",
        audience="https://api",
    )
    assert settings.database_url == "sqlite+aiosqlite:///.toolbridge/api.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8081)
    assert (settings.rate_limit_requests, settings.rate_limit_window_seconds) == (600, 60)
    assert settings.rate_limit_burst == 120
    assert (settings.auth_rate_limit_requests, settings.auth_rate_limit_window_seconds) == (60, 60)
    assert settings.auth_rate_limit_burst == 20
    assert settings.session_ttl_seconds == 1800
    assert settings.max_timestamp_skew_seconds == 300
    assert settings.debug_sub_enabled is False
    assert settings.hs256_secret is None


def test_auth0_domain_derives_jwks_url_and_issuer() -> None:
    settings = load(auth0_domain="tenant.eu.auth0.com", audience="https://api")
    assert settings.jwks_url == "https://tenant.eu.auth0.com/.well-known/jwks.json"
    assert settings.issuer == "https://tenant.eu.auth0.com/"


def test_explicit_issuer_wins_over_the_derived_one() -> None:
    settings = load(auth0_domain="https://d.test/", issuer="https://custom/", audience="a")
    assert settings.issuer == "https://custom/"
    assert settings.jwks_url == "https://d.test/.well-known/jwks.json"


def test_environment_variables_use_the_api_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLBRIDGE_API_AUTH0_DOMAIN", "env.test")
    monkeypatch.setenv("TOOLBRIDGE_API_AUDIENCE", "https://api")
    monkeypatch.setenv("TOOLBRIDGE_API_TENANT_SECRET", "t-secret")
    monkeypatch.setenv("TOOLBRIDGE_API_PORT", "9000")
    settings = load()
    assert settings.issuer == "https://env.test/"
    assert settings.port == 9000
    assert isinstance(settings.tenant_secret, SecretStr)
    assert "t-secret" not in repr(settings)


def test_token_verification_needs_an_audience() -> None:
    with pytest.raises(ConfigError) as failure:
        load(hs256_secret=SECRET)
    assert "TOOLBRIDGE_API_AUDIENCE" in str(failure.value)
    assert SECRET not in str(failure.value)


def test_a_jwks_url_needs_the_issuer_its_tokens_must_carry() -> None:
    with pytest.raises(ConfigError) as failure:
        load(jwks_url="https://idp.test/.well-known/jwks.json", audience="https://api")
    assert "TOOLBRIDGE_API_ISSUER is required with TOOLBRIDGE_API_JWKS_URL" in str(failure.value)


def test_a_short_hs256_secret_is_refused_naming_the_variable() -> None:
    short = "too-short-0123456789"
    with pytest.raises(ConfigError) as failure:
        load(hs256_secret=short, audience="a")
    assert "TOOLBRIDGE_API_HS256_SECRET must be at least 32 bytes" in str(failure.value)
    assert short not in str(failure.value)


def test_no_verification_at_all_is_refused_unless_debug_mode() -> None:
    with pytest.raises(ConfigError) as failure:
        load()
    message = str(failure.value)
    assert "TOOLBRIDGE_API_AUTH0_DOMAIN" in message
    assert "TOOLBRIDGE_API_DEBUG_SUB_ENABLED" in message
    assert load(debug_sub_enabled=True).audience is None


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("port", "eighty", "TOOLBRIDGE_API_PORT"),
        ("max_body_bytes", 7, "TOOLBRIDGE_API_MAX_BODY_BYTES"),
        ("rate_limit_burst", 0, "TOOLBRIDGE_API_RATE_LIMIT_BURST"),
        ("auth_rate_limit_burst", 0, "TOOLBRIDGE_API_AUTH_RATE_LIMIT_BURST"),
        ("auth_rate_limit_requests", -1, "TOOLBRIDGE_API_AUTH_RATE_LIMIT_REQUESTS"),
        ("auth_rate_limit_window_seconds", -5, "TOOLBRIDGE_API_AUTH_RATE_LIMIT_WINDOW_SECONDS"),
        ("log_level", "LOUD", "TOOLBRIDGE_API_LOG_LEVEL"),
    ],
)
def test_invalid_values_name_the_variable_and_never_echo_input(
    field: str, value: Any, variable: str
) -> None:
    with pytest.raises(ConfigError) as failure:
        load(debug_sub_enabled=True, hs256_secret=SECRET, audience="a", **{field: value})
    assert variable in str(failure.value)
    assert SECRET not in str(failure.value)
    assert str(value) not in str(failure.value).replace(variable, "")


def test_migrate_needs_only_the_database() -> None:
    settings = load_api_settings(
        DatabaseSettings, _env_file=None, database_url="sqlite+aiosqlite:///x.db"
    )
    assert settings.database_url.endswith("x.db")


def test_an_issuer_alone_verifies_tokens_through_discovery() -> None:
    settings = load(issuer="https://idp.test/", audience="https://api")
    assert settings.discovers_jwks
    assert settings.jwks_url is None
    assert not load(
        issuer="https://idp.test/", jwks_url="https://idp.test/keys", audience="a"
    ).discovers_jwks
    with pytest.raises(ConfigError, match="TOOLBRIDGE_API_AUDIENCE"):
        load(issuer="https://idp.test/")
