"""The MCP tools: forty entity tools generated from one definition, and ``health_check``."""

from toolbridge_mcp.tools.entities import ENTITIES, EntitySpec, EntityTools, entity_tools
from toolbridge_mcp.tools.health import HealthReport, health_report

__all__ = [
    "ENTITIES",
    "EntitySpec",
    "EntityTools",
    "HealthReport",
    "entity_tools",
    "health_report",
]
