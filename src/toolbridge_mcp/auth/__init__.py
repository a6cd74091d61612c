"""Authentication to the ToolBridge API: the outbound auth modes (:mod:`.modes`), the
``httpx.Auth`` over managed tokens (:mod:`.bearer`), tenant request signing (:mod:`.tenant`),
and the seed's token-manager module (:mod:`.token_manager`). Tokens themselves live in
:mod:`toolbridge_mcp.tokens`, token requests in :mod:`toolbridge_mcp.oauth`.

The names below load on first use, so importing a light module of this package does not
import more than it needs: ``toolbridge-mcp token`` and the dev issuer start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolbridge_mcp.auth.bearer import BearerAuth
    from toolbridge_mcp.auth.modes import (
        ClientCredentialsAuth,
        MissingAuthenticationError,
        OutboundAuth,
        PassthroughAuth,
        StaticTokenAuth,
        get_auth_header,
        outbound_auth,
    )
    from toolbridge_mcp.auth.tenant import TenantSigner
    from toolbridge_mcp.auth.token_manager import (
        get_access_token,
        init_token_manager,
        shutdown_token_manager,
    )
    from toolbridge_mcp.oauth import TokenError, TokenResponse
    from toolbridge_mcp.tokens import TokenManager

_MODULES = {
    "BearerAuth": "toolbridge_mcp.auth.bearer",
    "ClientCredentialsAuth": "toolbridge_mcp.auth.modes",
    "MissingAuthenticationError": "toolbridge_mcp.auth.modes",
    "OutboundAuth": "toolbridge_mcp.auth.modes",
    "PassthroughAuth": "toolbridge_mcp.auth.modes",
    "StaticTokenAuth": "toolbridge_mcp.auth.modes",
    "get_auth_header": "toolbridge_mcp.auth.modes",
    "outbound_auth": "toolbridge_mcp.auth.modes",
    "TokenError": "toolbridge_mcp.oauth",
    "TokenResponse": "toolbridge_mcp.oauth",
    "TenantSigner": "toolbridge_mcp.auth.tenant",
    "TokenManager": "toolbridge_mcp.tokens",
    "get_access_token": "toolbridge_mcp.auth.token_manager",
    "init_token_manager": "toolbridge_mcp.auth.token_manager",
    "shutdown_token_manager": "toolbridge_mcp.auth.token_manager",
}

__all__ = [
    "BearerAuth",
    "ClientCredentialsAuth",
    "MissingAuthenticationError",
    "OutboundAuth",
    "PassthroughAuth",
    "StaticTokenAuth",
    "TenantSigner",
    "TokenError",
    "TokenManager",
    "TokenResponse",
    "get_access_token",
    "get_auth_header",
    "init_token_manager",
    "outbound_auth",
    "shutdown_token_manager",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
