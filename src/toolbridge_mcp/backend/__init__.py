"""The ToolBridge API as seen by the tools: one pooled client, sessions, error mapping."""

from toolbridge_mcp.backend.client import ApiClient
from toolbridge_mcp.backend.errors import (
    ApiError,
    ApiUnavailableError,
    BackendError,
    ErrorContext,
    to_tool_error,
)
from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.backend.sessions import SessionPool, SyncSession

__all__ = [
    "ApiClient",
    "ApiError",
    "ApiUnavailableError",
    "Backend",
    "BackendError",
    "ErrorContext",
    "SessionPool",
    "SyncSession",
    "to_tool_error",
]
