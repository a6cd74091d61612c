"""The MCP tools: eight per entity of the wire contract, generated, and ``health_check``."""

from toolbridge_mcp.tools.entities import KINDS, EntityTools, entity_tools, tool_name
from toolbridge_mcp.tools.health import HealthReport, health_report

__all__ = [
    "KINDS",
    "EntityTools",
    "HealthReport",
    "entity_tools",
    "health_report",
    "tool_name",
]
