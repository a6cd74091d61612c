"""The process logging set-up: standard-library records below the sink's level are never
created (httpcore writes ~10 DEBUG records per request), and those at or above it still reach
loguru's sink. Each case runs in a fresh interpreter: the set-up replaces the process's sinks."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import logging, sys
from toolbridge_common.logs import configure_logging

configure_logging(sys.argv[1])
created = []
factory = logging.getLogRecordFactory()

def counting(*args, **kwargs):
    record = factory(*args, **kwargs)
    created.append(record.levelname)
    return record

logging.setLogRecordFactory(counting)
for name in ("httpcore.connection", "httpcore.http11", "uvicorn.error", "fastmcp.server"):
    log = logging.getLogger(name)
    log.debug("debug line from %s", name)
    log.info("info line from %s", name)
    log.warning("warning line from %s", name)
print(",".join(created))
"""


def run(level: str) -> tuple[list[str], str]:
    done = subprocess.run(  # noqa: S603 - this interpreter, our own script
        [sys.executable, "-c", SCRIPT, level], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(","), done.stderr


@pytest.mark.parametrize(
    ("level", "kept"),
    [
        ("WARNING", {"WARNING"}),
        ("INFO", {"INFO", "WARNING"}),
        ("DEBUG", {"DEBUG", "INFO", "WARNING"}),
    ],
)
def test_records_below_the_sink_level_are_never_created(level: str, kept: set[str]) -> None:
    created, stderr = run(level)
    assert set(created) == kept
    assert "warning line from httpcore.connection" in stderr
    assert ("info line from uvicorn.error" in stderr) == ("INFO" in kept)
    assert ("debug line from fastmcp.server" in stderr) == ("DEBUG" in kept)


def test_trace_level_lets_everything_through() -> None:
    created, _ = run("trace")
    assert {"DEBUG", "INFO", "WARNING"} <= set(created)
