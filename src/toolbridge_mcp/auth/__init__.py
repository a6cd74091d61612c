"""Authentication to the ToolBridge API: OAuth2 client credentials, cached and refreshed."""

from toolbridge_mcp.auth.bearer import BearerAuth
from toolbridge_mcp.auth.oauth import TokenError, TokenResponse
from toolbridge_mcp.auth.token_manager import (
    TokenManager,
    get_access_token,
    init_token_manager,
    shutdown_token_manager,
)

__all__ = [
    "BearerAuth",
    "TokenError",
    "TokenManager",
    "TokenResponse",
    "get_access_token",
    "init_token_manager",
    "shutdown_token_manager",
]
