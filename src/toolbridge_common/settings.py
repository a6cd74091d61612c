"""Settings helpers shared by the API, the MCP server and the dev issuer.

Every settings class reports a problem by the environment variable to fix and never by the
value: pydantic's own messages echo inputs, secrets included.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Literal

from pydantic import ValidationError

LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the variables to fix."""


def env_namer(prefix: str) -> Callable[[str], str]:
    """``env_name(field)`` for the settings class whose variables start with ``prefix``."""

    def env_name(field: str) -> str:
        """The environment variable that sets a settings field."""
        return f"{prefix}{field.upper()}"

    return env_name


def is_loopback_host(host: str) -> bool:
    """Loopback hosts may use plain http (local dev issuer, tests); nothing else may."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_invalid(exc: ValidationError, variable: Callable[[str], str]) -> str:
    """One line per problem, each naming the variable that sets the field (``variable``),
    never the value."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in error.get("loc", ()) if part != "__root__"]
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        problems.append(f"{variable(loc[0])}: {message}" if loc else message)
    return "Invalid configuration:\n  - " + "\n  - ".join(problems)
