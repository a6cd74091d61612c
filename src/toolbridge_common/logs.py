"""Process logging: loguru to stderr, with the standard library's records routed into it.

stderr, because under the stdio transport stdout belongs to the MCP protocol.
"""

from __future__ import annotations

import logging
import sys

import stamina.instrumentation
from loguru import logger

_FORMAT = "{time:YYYY-MM-DDTHH:mm:ss.SSSZ!UTC} | {level: <7} | {name} | {message}"


class _InterceptHandler(logging.Handler):
    """Sends standard-library log records (httpx, uvicorn, …) through loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(level: str = "INFO") -> None:
    """One stderr sink at ``level`` for everything the process logs."""
    logger.remove()
    logger.add(sys.stderr, level=level.upper(), format=_FORMAT, backtrace=False, diagnose=False)
    # The standard library at the sink's level: a record below it (httpcore writes ~10 DEBUG
    # records per request) is never created, instead of being built and then dropped.
    logging.basicConfig(handlers=[_InterceptHandler()], level=stdlib_level(level), force=True)
    # FastMCP gives its logger a rich console handler of its own: one format for every line.
    fastmcp_logger = logging.getLogger("fastmcp")
    fastmcp_logger.handlers.clear()
    fastmcp_logger.propagate = True
    # httpx logs every request at INFO; the token manager already logs what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Scheduled retries through our log, not stamina's stdlib line (which shows arguments).
    stamina.instrumentation.set_on_retry_hooks([log_retry])


def stdlib_level(level: str) -> int:
    """The standard library's number for loguru level ``level`` (``TRACE`` is 5)."""
    return logger.level(level.upper()).no


def log_retry(details: stamina.instrumentation.RetryDetails) -> None:
    """stamina's retry hook: one debug line per scheduled retry, naming what is retried,
    when, and the error's type; never its arguments or message, which may hold secrets
    (whoever retries logs the reason, as the token client does with the OAuth error code)."""
    logger.debug(
        "Retry {} of {} in {:.2f}s after {}",
        details.retry_num,
        details.name,
        details.wait_for,
        type(details.caused_by).__name__,
    )
