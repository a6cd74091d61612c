"""Light entry points stay light: settings and the OAuth grant must not load FastMCP, which
costs seconds of start-up for ``toolbridge-mcp token``, the dev issuer and ``mint``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import toolbridge_mcp.auth


@pytest.mark.parametrize(
    "module",
    [
        "toolbridge_mcp.config",
        "toolbridge_mcp.oauth",
        "toolbridge_mcp.tokens",
        "toolbridge_mcp.auth.modes",
        "toolbridge_mcp.auth.oauth",
        "toolbridge_dev.issuer.cli",
    ],
)
def test_light_modules_do_not_import_fastmcp(module: str) -> None:
    probe = f"import sys, {module}; print('fastmcp' in sys.modules)"
    done = subprocess.run(  # noqa: S603 - this interpreter
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_every_auth_export_resolves() -> None:
    for name in toolbridge_mcp.auth.__all__:
        assert getattr(toolbridge_mcp.auth, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = toolbridge_mcp.auth.nope
