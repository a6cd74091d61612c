"""Outbound auth modes are classes chosen in one place: which one the settings select,
what each one owns, and what adding one takes (a class plus one line in the selector)."""

from __future__ import annotations

from typing import Self

import pytest
from pydantic import SecretStr

from toolbridge_common.settings import ConfigError
from toolbridge_mcp.auth.modes import (
    OUTBOUND_MODES,
    AuthCheck,
    AuthHealth,
    ClientCredentialsAuth,
    OutboundAuth,
    PassthroughAuth,
    StaticTokenAuth,
    TokenExchangeAuth,
    mode_named,
    outbound_auth,
    select_mode,
)
from toolbridge_mcp.auth.modes import select as selector
from toolbridge_mcp.config import Settings, load_settings

CREDENTIALS = {
    "auth0_client_id": "client",
    "auth0_client_secret": "secret-value",
    "auth0_token_url": "https://idp.example/oauth/token",
}


def settings(**fields: str) -> Settings:
    return load_settings(_env_file=None, **fields)


@pytest.mark.parametrize(
    ("fields", "mode"),
    [
        (CREDENTIALS, ClientCredentialsAuth),
        ({"jwt_token": "static-token"}, StaticTokenAuth),
        ({}, TokenExchangeAuth),
        ({"oauth_passthrough": "true"}, PassthroughAuth),
        (CREDENTIALS | {"jwt_token": "static-token"}, ClientCredentialsAuth),
    ],
)
def test_the_settings_select_one_mode(fields: dict[str, str], mode: type[OutboundAuth]) -> None:
    chosen = settings(**fields)
    assert select_mode(chosen) is mode
    assert chosen.auth_mode() == mode.name
    assert type(outbound_auth(chosen)) is mode
    assert mode_named(mode.name) is mode


def test_the_modes_are_distinct_and_only_the_last_is_the_fallback() -> None:
    assert len({mode.name for mode in OUTBOUND_MODES}) == len(OUTBOUND_MODES)
    assert [mode.selected_by is None for mode in OUTBOUND_MODES] == [
        *(False for _ in OUTBOUND_MODES[:-1]),
        True,
    ]
    assert all(mode.error_hint for mode in OUTBOUND_MODES)
    with pytest.raises(ValueError, match="no outbound auth mode 'nope'"):
        mode_named("nope")


def test_a_mode_that_forgets_its_hint_fails_when_defined() -> None:
    """Not a KeyError in the middle of a 401 later: the class itself is refused."""
    with pytest.raises(TypeError, match="must set error_hint"):
        type("Lacking", (OutboundAuth,), {"name": "lacking", "selected_by": None})


class _VaultTokenAuth(OutboundAuth):
    """A made-up new mode: a token read from a vault path."""

    name = "vault"
    selected_by = "tenant_id"  # stands in for a new setting of its own
    error_hint = "check the vault path"

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls()

    async def get_auth_header(self) -> str:
        return "Bearer from-the-vault"

    def health(self) -> AuthHealth:
        return AuthHealth("ok", "token from the vault")

    async def check(self) -> AuthCheck:
        return AuthCheck("pass", "vault token read")

    def log_startup(self) -> None:
        return None


async def test_a_new_mode_is_a_class_and_one_line_in_the_selector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(selector, "OUTBOUND_MODES", (_VaultTokenAuth, *OUTBOUND_MODES))
    chosen = settings(tenant_id="t", tenant_header_secret="s" * 16)
    assert chosen.auth_mode() == "vault"
    auth = outbound_auth(chosen)
    assert await auth.get_auth_header() == "Bearer from-the-vault"
    assert mode_named("vault").error_hint == "check the vault path"
    assert auth.principal() == "service"
    assert auth.manager is None
    assert auth.mcp_auth() is None


async def test_static_mode_owns_its_header_and_health() -> None:
    auth = StaticTokenAuth(SecretStr("Bearer abc"))
    assert await auth.get_auth_header() == "Bearer abc"
    health = auth.health()
    assert health.status == "ok"
    assert "deprecated" in health.detail
    assert (await auth.check()).status == "pass"


def test_per_user_settings_are_refused_outside_per_user_modes() -> None:
    with pytest.raises(ConfigError, match="TOOLBRIDGE_JWT_TOKEN selects static mode"):
        settings(jwt_token="static-token", oauth_issuer="https://issuer.example/")
