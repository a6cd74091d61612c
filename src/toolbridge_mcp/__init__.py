"""ToolBridge MCP: the ToolBridge API as MCP tools, authenticated by itself."""

__version__ = "0.1.0"
