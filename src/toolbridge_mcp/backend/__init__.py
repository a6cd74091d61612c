"""The ToolBridge API as seen by the tools: one typed, pooled client, sessions, and the one
error mapping."""

from toolbridge_mcp.backend.client import ApiClient
from toolbridge_mcp.backend.errors import (
    BACKEND_ERRORS,
    ApiError,
    ApiUnavailableError,
    BackendError,
    ErrorContext,
    to_tool_error,
)
from toolbridge_mcp.backend.models import Item, Page, SessionInfo
from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.backend.sessions import SessionPool, SyncSession

__all__ = [
    "BACKEND_ERRORS",
    "ApiClient",
    "ApiError",
    "ApiUnavailableError",
    "Backend",
    "BackendError",
    "ErrorContext",
    "Item",
    "Page",
    "SessionInfo",
    "SessionPool",
    "SyncSession",
    "to_tool_error",
]
