"""Authentication to the ToolBridge API: OAuth2 client credentials, cached and refreshed;
the three auth modes; tenant request signing."""

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
