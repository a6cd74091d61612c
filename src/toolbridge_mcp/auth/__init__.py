"""Authentication to the ToolBridge API: OAuth2 client credentials, cached and refreshed;
the three auth modes; tenant request signing.

The names below load on first use, so importing a light module of this package (settings,
the OAuth grant) does not import FastMCP with the auth modes: ``toolbridge-mcp token`` and
the dev issuer start in well under a second instead of seconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolbridge_mcp.auth.bearer import BearerAuth
    from toolbridge_mcp.auth.modes import (
        BackendAuth,
        ClientCredentialsAuth,
        MissingAuthenticationError,
        PassthroughAuth,
        StaticTokenAuth,
        backend_auth,
        get_auth_header,
    )
    from toolbridge_mcp.auth.oauth import TokenError, TokenResponse
    from toolbridge_mcp.auth.tenant import TenantSigner
    from toolbridge_mcp.auth.token_manager import (
        TokenManager,
        get_access_token,
        init_token_manager,
        shutdown_token_manager,
    )

_MODULES = {
    "BearerAuth": "bearer",
    "BackendAuth": "modes",
    "ClientCredentialsAuth": "modes",
    "MissingAuthenticationError": "modes",
    "PassthroughAuth": "modes",
    "StaticTokenAuth": "modes",
    "backend_auth": "modes",
    "get_auth_header": "modes",
    "TokenError": "oauth",
    "TokenResponse": "oauth",
    "TenantSigner": "tenant",
    "TokenManager": "token_manager",
    "get_access_token": "token_manager",
    "init_token_manager": "token_manager",
    "shutdown_token_manager": "token_manager",
}

__all__ = [
    "BackendAuth",
    "BearerAuth",
    "ClientCredentialsAuth",
    "MissingAuthenticationError",
    "PassthroughAuth",
    "StaticTokenAuth",
    "TenantSigner",
    "TokenError",
    "TokenManager",
    "TokenResponse",
    "backend_auth",
    "get_access_token",
    "get_auth_header",
    "init_token_manager",
    "shutdown_token_manager",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
