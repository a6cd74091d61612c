"""How the server authenticates to the API: one class per outbound auth mode (seed §4-5).

- ``auth0`` — :class:`ClientCredentialsAuth`: managed client-credentials tokens
- ``static`` — :class:`StaticTokenAuth`: the deprecated ``TOOLBRIDGE_JWT_TOKEN``
- ``token_exchange`` — :class:`TokenExchangeAuth`: each signed-in MCP caller's token,
  exchanged (RFC 8693) for an API token for the same user (per-user)
- ``passthrough`` — :class:`PassthroughAuth`: each MCP caller's own token, forwarded as
  is (legacy, only with ``TOOLBRIDGE_OAUTH_PASSTHROUGH=true``; not MCP-spec conformant)

:func:`outbound_auth` picks one from the settings (:mod:`.select`, the one place to add a
mode). Each mode is the API client's ``httpx.Auth`` and owns its header, health text, error
hint, ``check`` step and startup log line (:class:`OutboundAuth`).
"""

from __future__ import annotations

from toolbridge_mcp.auth.modes.base import (
    MISSING_AUTHENTICATION,
    SERVICE_PRINCIPAL,
    AuthCheck,
    AuthHealth,
    BackendAuth,
    MissingAuthenticationError,
    OutboundAuth,
)
from toolbridge_mcp.auth.modes.client_credentials import (
    CLIENT_CREDENTIALS_SETTINGS,
    ClientCredentialsAuth,
)
from toolbridge_mcp.auth.modes.exchange import TokenExchangeAuth
from toolbridge_mcp.auth.modes.passthrough import PassthroughAuth, caller_auth_provider
from toolbridge_mcp.auth.modes.select import (
    OUTBOUND_MODES,
    mode_named,
    outbound_auth,
    select_mode,
)
from toolbridge_mcp.auth.modes.static import StaticTokenAuth, static_token_expiry

__all__ = [
    "CLIENT_CREDENTIALS_SETTINGS",
    "MISSING_AUTHENTICATION",
    "OUTBOUND_MODES",
    "SERVICE_PRINCIPAL",
    "AuthCheck",
    "AuthHealth",
    "BackendAuth",
    "ClientCredentialsAuth",
    "MissingAuthenticationError",
    "OutboundAuth",
    "PassthroughAuth",
    "StaticTokenAuth",
    "TokenExchangeAuth",
    "caller_auth_provider",
    "get_auth_header",
    "mode_named",
    "outbound_auth",
    "select_mode",
    "static_token_expiry",
]


async def get_auth_header(auth: OutboundAuth) -> str:
    """The ``Authorization`` header value for the API under the configured mode (seed §4).

    Raises :class:`MissingAuthenticationError` in per-user mode without a caller token.
    """
    return await auth.get_auth_header()
