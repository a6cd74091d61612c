"""The seed's module (``auth/token_manager.py``): :class:`TokenManager` and the process-wide
``init_token_manager`` / ``get_access_token`` functions.

The manager itself lives in :mod:`toolbridge_mcp.tokens`, the token requests in
:mod:`toolbridge_mcp.oauth`; this module keeps the seed's names and import path.
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from pydantic import SecretStr

from toolbridge_mcp.oauth import TokenError, TokenResponse
from toolbridge_mcp.tokens import TokenManager

__all__ = [
    "TokenError",
    "TokenManager",
    "TokenResponse",
    "get_access_token",
    "init_token_manager",
    "shutdown_token_manager",
]

_token_manager: TokenManager | None = None


def init_token_manager(
    client_id: str,
    client_secret: str | SecretStr,
    domain: str | None = None,
    audience: str | None = None,
    **options: Any,
) -> TokenManager:
    """Create the process-wide token manager (no I/O: the first token is fetched lazily);
    ``options`` as for :meth:`TokenManager.client_credentials`."""
    global _token_manager
    _token_manager = TokenManager.client_credentials(
        client_id, client_secret, domain, audience, **options
    )
    logger.info("Auth0 token manager initialized (endpoint {})", _token_manager.token_url)
    return _token_manager


async def get_access_token() -> str:
    """A valid access token from the process-wide token manager."""
    if _token_manager is None:
        raise RuntimeError("Token manager not initialized. Call init_token_manager() first.")
    return await _token_manager.get_token()


async def shutdown_token_manager() -> None:
    """Close the process-wide token manager, if any."""
    global _token_manager
    if _token_manager is not None:
        await _token_manager.close()
        _token_manager = None
