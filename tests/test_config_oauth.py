"""Settings of per-user OAuth (``TOOLBRIDGE_OAUTH_*``, ``TOOLBRIDGE_PUBLIC_URL``): the token
exchange mode by default, the legacy passthrough only when asked for, defaults, and errors that
name what to fix without echoing a secret."""

from __future__ import annotations

import pytest

from toolbridge_common.settings import ConfigError
from toolbridge_mcp.auth.modes import caller_auth_provider
from toolbridge_mcp.auth.modes.exchange import resource_server
from toolbridge_mcp.config import load_settings

pytestmark = pytest.mark.usefixtures("clean_settings_env")

SECRET = "s3cr3t-value-never-shown"
ISSUER = "https://tenant.us.auth0.com/"
AUDIENCE = "https://api.example"
PER_USER = {"oauth_issuer": ISSUER, "oauth_exchange_audience": AUDIENCE}
"""The least per-user (token exchange) configuration: who signs users in, the API's audience."""
PASSTHROUGH = {"oauth_passthrough": "true", "oauth_issuer": ISSUER, "oauth_audience": AUDIENCE}


def set_env(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(f"TOOLBRIDGE_{name.upper()}", value)


def config_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    set_env(monkeypatch, **variables)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


def test_without_an_issuer_nothing_is_protected() -> None:
    settings = load_settings()
    assert settings.oauth_issuer is None
    assert settings.auth_mode() == "token_exchange"
    assert resource_server(settings) is None
    assert caller_auth_provider(settings) is None


def test_blank_variables_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        oauth_issuer=" ",
        oauth_jwks_url="",
        oauth_audience="",
        public_url="",
        oauth_exchange_audience="",
        oauth_exchange_url=" ",
        oauth_required_scopes="",
        oauth_exchange_client_secret="",
    )
    settings = load_settings()
    assert settings.auth_mode() == "token_exchange"
    assert resource_server(settings) is None


def test_issuer_and_the_apis_audience_are_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, **PER_USER)
    settings = load_settings()
    assert settings.auth_mode() == "token_exchange"
    assert settings.jwks_url() == "https://tenant.us.auth0.com/.well-known/jwks.json"
    assert settings.public_base_url() == "http://127.0.0.1:8001"
    assert resource_server(settings) is not None
    assert caller_auth_provider(settings) is None  # the passthrough's own protection


def test_passthrough_only_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, **PASSTHROUGH)
    settings = load_settings()
    assert settings.auth_mode() == "passthrough"
    assert caller_auth_provider(settings) is not None


@pytest.mark.parametrize(
    ("variables", "jwks", "public"),
    [
        (
            {"oauth_issuer": "https://idp.example/realms/x"},
            "https://idp.example/realms/x/.well-known/jwks.json",
            "http://127.0.0.1:8001",
        ),
        (
            {"oauth_jwks_url": "https://keys.example/certs", "port": "9100"},
            "https://keys.example/certs",
            "http://127.0.0.1:9100",
        ),
        (
            {"host": "::1", "public_url": ""},
            "https://tenant.us.auth0.com/.well-known/jwks.json",
            "http://[::1]:8001",
        ),
        (
            {"host": "0.0.0.0", "public_url": "https://mcp.example.com/toolbridge/"},
            "https://tenant.us.auth0.com/.well-known/jwks.json",
            "https://mcp.example.com/toolbridge",
        ),
        (
            {"oauth_issuer": "http://localhost:9000/", "public_url": "http://127.0.0.1:8001"},
            "http://localhost:9000/.well-known/jwks.json",
            "http://127.0.0.1:8001",
        ),
    ],
    ids=["issuer-with-path", "explicit-jwks", "ipv6-loopback", "behind-a-proxy", "local-issuer"],
)
def test_derived_urls(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], jwks: str, public: str
) -> None:
    set_env(monkeypatch, **(PER_USER | variables))
    settings = load_settings()
    assert settings.jwks_url() == jwks
    assert settings.public_base_url() == public


@pytest.mark.parametrize(
    ("variables", "missing"),
    [
        ({"oauth_issuer": ISSUER}, ["TOOLBRIDGE_OAUTH_EXCHANGE_AUDIENCE"]),
        ({"oauth_exchange_audience": AUDIENCE}, ["TOOLBRIDGE_OAUTH_ISSUER"]),
        (
            {"oauth_jwks_url": "https://keys.example/certs"},
            ["TOOLBRIDGE_OAUTH_ISSUER", "TOOLBRIDGE_OAUTH_EXCHANGE_AUDIENCE"],
        ),
        ({"oauth_required_scopes": "toolbridge"}, ["TOOLBRIDGE_OAUTH_ISSUER"]),
        (
            {"oauth_passthrough": "true", "oauth_issuer": ISSUER},
            ["TOOLBRIDGE_OAUTH_AUDIENCE"],
        ),
        (
            {"oauth_passthrough": "true", "oauth_audience": AUDIENCE},
            ["TOOLBRIDGE_OAUTH_ISSUER"],
        ),
    ],
    ids=[
        "issuer-only",
        "audience-only",
        "jwks-only",
        "scopes-only",
        "passthrough-issuer-only",
        "passthrough-audience-only",
    ],
)
def test_half_configuration_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], missing: list[str]
) -> None:
    message = config_error(monkeypatch, **variables)
    assert "incomplete per-user OAuth configuration" in message
    for name in missing:
        assert f"{name}" in message.split("not set")[0]


def test_an_unverified_passthrough_needs_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed's behaviour, now only when asked for: the API alone checks callers' tokens."""
    set_env(monkeypatch, oauth_passthrough="true")
    settings = load_settings()
    assert settings.auth_mode() == "passthrough"
    assert caller_auth_provider(settings) is None


@pytest.mark.parametrize(
    ("variables", "said"),
    [
        (
            {"oauth_audience": AUDIENCE},
            "TOOLBRIDGE_OAUTH_AUDIENCE must identify this MCP server, not the API",
        ),
        (
            {"oauth_audience": "https://api.example/", "oauth_exchange_resource": AUDIENCE},
            "TOOLBRIDGE_OAUTH_AUDIENCE must identify this MCP server",
        ),
        (
            {"oauth_exchange_client_secret": SECRET},
            "TOOLBRIDGE_OAUTH_EXCHANGE_CLIENT_SECRET is set without",
        ),
        (
            {"oauth_passthrough": "true", "oauth_audience": AUDIENCE},
            "TOOLBRIDGE_OAUTH_EXCHANGE_AUDIENCE configure token exchange, which "
            "TOOLBRIDGE_OAUTH_PASSTHROUGH=true turns off",
        ),
        (
            {"oauth_exchange_url": "http://idp.example/oauth/token"},
            "TOOLBRIDGE_OAUTH_EXCHANGE_URL",
        ),
    ],
    ids=["api-audience", "api-resource", "secret-without-id", "passthrough-and-exchange", "http"],
)
def test_confusing_per_user_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], said: str
) -> None:
    message = config_error(monkeypatch, **(PER_USER | variables))
    assert said in message
    assert SECRET not in message


def test_public_url_alone_is_harmless(monkeypatch: pytest.MonkeyPatch) -> None:
    """It only says where the server is; nothing is protected without an issuer."""
    set_env(monkeypatch, public_url="https://mcp.example.com")
    settings = load_settings()
    assert settings.public_base_url() == "https://mcp.example.com"
    assert caller_auth_provider(settings) is None


@pytest.mark.parametrize(
    ("variables", "selector"),
    [
        (
            {
                "auth0_client_id": "client",
                "auth0_client_secret": SECRET,
                "auth0_domain": "tenant.us.auth0.com",
                "auth0_audience": AUDIENCE,
            },
            "TOOLBRIDGE_AUTH0_CLIENT_ID selects auth0 mode",
        ),
        ({"jwt_token": SECRET}, "TOOLBRIDGE_JWT_TOKEN selects static mode"),
    ],
    ids=["auth0", "static"],
)
def test_only_per_user_mode_verifies_callers(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], selector: str
) -> None:
    message = config_error(monkeypatch, oauth_issuer=ISSUER, oauth_audience=AUDIENCE, **variables)
    assert "TOOLBRIDGE_OAUTH_ISSUER, TOOLBRIDGE_OAUTH_AUDIENCE" in message
    assert selector in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("variables", "name", "problem"),
    [
        ({"oauth_issuer": "http://tenant.us.auth0.com/"}, "TOOLBRIDGE_OAUTH_ISSUER", "https"),
        ({"oauth_issuer": "tenant.us.auth0.com"}, "TOOLBRIDGE_OAUTH_ISSUER", "absolute"),
        ({"oauth_jwks_url": "http://keys.example/jwks"}, "TOOLBRIDGE_OAUTH_JWKS_URL", "https"),
        ({"public_url": "http://mcp.example.com"}, "TOOLBRIDGE_PUBLIC_URL", "https"),
        ({"public_url": "https://mcp.example.com/?a=1"}, "TOOLBRIDGE_PUBLIC_URL", "query"),
        ({"host": "0.0.0.0"}, "TOOLBRIDGE_PUBLIC_URL not set", "TOOLBRIDGE_HOST 0.0.0.0"),
    ],
    ids=["http-issuer", "bare-host", "http-jwks", "http-public", "query", "unreachable-host"],
)
def test_bad_urls_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], name: str, problem: str
) -> None:
    message = config_error(monkeypatch, **(PER_USER | variables))
    assert name in message
    assert problem in message
