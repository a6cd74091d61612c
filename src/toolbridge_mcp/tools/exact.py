"""Tools that take exactly their arguments.

A call with an argument its tool does not have fails, naming the tool's arguments: dropping
it would silently lose what the caller meant (``if_match``, ``updates``, ...). Invalid values
fail the same way, one line per argument and never echoing the value.

The check is the tool's own (:class:`ExactTool`), not a server middleware: each middleware
layer costs every call of every tool ~50 µs of FastMCP's dispatch, a tenth of the server's
own work on a tool call.
"""

from __future__ import annotations

from typing import Any, cast

from fastmcp.exceptions import ToolError, ValidationError
from fastmcp.tools import FunctionTool, ToolResult
from loguru import logger
from pydantic import ValidationError as PydanticValidationError


class ExactTool(FunctionTool):
    """A function tool (build it with ``ExactTool.from_function``) that refuses unknown
    arguments and explains invalid ones, naming its arguments."""

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        properties = cast(dict[str, Any], self.parameters.get("properties", {}))
        unknown = sorted(arguments.keys() - properties.keys())
        if unknown:
            logger.info("Refused unknown arguments of {}: {}", self.name, unknown)
            listed = ", ".join(repr(arg) for arg in unknown)
            raise ToolError(f"{self.name} has no argument {listed}. {self.describe()}")
        try:
            return await super().run(arguments)
        except ValidationError as exc:
            cause = exc.__cause__
            if not isinstance(cause, PydanticValidationError):
                raise
            raise ToolError(
                f"Invalid arguments for {self.name}: {_problems(cause)}. {self.describe()}"
            ) from None

    def describe(self) -> str:
        """``Its arguments are: uid (required), include_deleted.``"""
        properties = cast(dict[str, Any], self.parameters.get("properties", {}))
        required = set(cast(list[str], self.parameters.get("required", [])))
        shown = [f"{name} (required)" if name in required else name for name in properties]
        return f"Its arguments are: {', '.join(shown)}." if shown else "It takes no arguments."


def _problems(error: PydanticValidationError) -> str:
    """``status: Input should be 'open' or ...`` per argument, without the input values."""
    by_argument: dict[str, list[str]] = {}
    for problem in error.errors(include_url=False, include_input=False):
        where = str(problem["loc"][0]) if problem["loc"] else "arguments"
        messages = by_argument.setdefault(where, [])
        if problem["msg"] not in messages:
            messages.append(problem["msg"])
    return "; ".join(f"{name}: {' or '.join(msgs)}" for name, msgs in by_argument.items())
