"""The one place an outbound auth mode is chosen from the settings.

To add a mode: write an :class:`~toolbridge_mcp.auth.modes.base.OutboundAuth` subclass and
add it to :data:`OUTBOUND_MODES`, before the fallback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolbridge_mcp.auth.modes.base import OutboundAuth
from toolbridge_mcp.auth.modes.client_credentials import ClientCredentialsAuth
from toolbridge_mcp.auth.modes.exchange import TokenExchangeAuth
from toolbridge_mcp.auth.modes.passthrough import PassthroughAuth
from toolbridge_mcp.auth.modes.static import StaticTokenAuth

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings

OUTBOUND_MODES: tuple[type[OutboundAuth], ...] = (
    ClientCredentialsAuth,  # TOOLBRIDGE_AUTH0_CLIENT_ID set
    StaticTokenAuth,  # TOOLBRIDGE_JWT_TOKEN set
    PassthroughAuth,  # TOOLBRIDGE_OAUTH_PASSTHROUGH=true: callers' own tokens (legacy)
    TokenExchangeAuth,  # none of them: callers' tokens exchanged (the fallback)
)
"""The modes, in order of precedence: the first one the settings select is used."""


def select_mode(settings: Settings) -> type[OutboundAuth]:
    """The mode ``settings`` choose."""
    for mode in OUTBOUND_MODES:
        if mode.is_selected(settings):
            return mode
    raise AssertionError("the last mode is the fallback and is always selected")


def mode_named(name: str) -> type[OutboundAuth]:
    """The mode called ``name`` (as in health output and error contexts)."""
    for mode in OUTBOUND_MODES:
        if mode.name == name:
            return mode
    raise ValueError(f"no outbound auth mode {name!r}")


def outbound_auth(settings: Settings) -> OutboundAuth:
    """The auth for ``settings``, not started (no I/O)."""
    return select_mode(settings).from_settings(settings)
