"""Package boundaries (docs/architecture.md): ``toolbridge_common`` is neutral; the API, the MCP
server and the dev tools import it and never each other; production entry points work without
the dev package.

Two checks of each rule: what importing a module really loads, in a fresh interpreter, and a
static walk over every module's imports, which also sees imports on paths no test runs.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

PACKAGES = ("toolbridge_common", "toolbridge_api", "toolbridge_mcp", "toolbridge_dev")
FRAMEWORKS = ("fastapi", "starlette", "fastmcp", "mcp", "sqlalchemy", "uvicorn")

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "toolbridge_common": (*FRAMEWORKS, "toolbridge_api", "toolbridge_mcp", "toolbridge_dev"),
    "toolbridge_api": ("toolbridge_mcp", "toolbridge_dev"),
    "toolbridge_mcp": ("toolbridge_api", "toolbridge_dev"),
    "toolbridge_dev": ("toolbridge_api", "toolbridge_mcp"),
}
"""For each package, the top-level modules none of its modules may import."""

LAZY_EXCEPTIONS = {("toolbridge_mcp/cli.py", "toolbridge_dev.stack_cli")}
"""Imports allowed inside a function only: ``toolbridge-mcp dev`` loads the dev package when it
is run, and says so when the package is missing."""


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this environment, away from the repository's
    ``.env`` and with no ``TOOLBRIDGE_*`` variable of the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
    return subprocess.run(  # noqa: S603 - this interpreter
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=env,
    )


def _top(name: str) -> str:
    return name.partition(".")[0]


# -- what an import really loads ------------------------------------------------------------

LOADED_PROBE = """
import importlib, json, pkgutil, sys
for name in {modules!r}:
    module = importlib.import_module(name)
    if {walk!r}:
        for info in pkgutil.walk_packages(module.__path__, name + "."):
            importlib.import_module(info.name)
print(json.dumps(sorted(n for n in sys.modules if n.partition(".")[0] in {forbidden!r})))
"""


@pytest.mark.parametrize(
    ("modules", "walk", "forbidden"),
    [
        pytest.param(["toolbridge_api"], False, FORBIDDEN["toolbridge_api"], id="api-package"),
        pytest.param(
            ["toolbridge_api.app", "toolbridge_api.cli"],
            False,
            FORBIDDEN["toolbridge_api"],
            id="api-app-and-cli",
        ),
        pytest.param(
            ["toolbridge_mcp.server", "toolbridge_mcp.cli"],
            False,
            FORBIDDEN["toolbridge_mcp"],
            id="mcp-server-and-cli",
        ),
        pytest.param(
            ["toolbridge_common"], True, FORBIDDEN["toolbridge_common"], id="common-every-module"
        ),
        pytest.param(
            ["toolbridge_dev.stack_cli", "toolbridge_dev.issuer.app", "toolbridge_dev.issuer.cli"],
            False,
            FORBIDDEN["toolbridge_dev"],
            id="dev-stack-and-issuer",
        ),
    ],
)
def test_importing_loads_nothing_across_a_boundary(
    modules: list[str], walk: bool, forbidden: tuple[str, ...], tmp_path: Path
) -> None:
    done = _python(LOADED_PROBE.format(modules=modules, walk=walk, forbidden=forbidden), tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


# -- production entry points without the dev package ----------------------------------------

NO_DEV_PROBE = """
import json, sys

class NoDevPackage:
    \"\"\"As if toolbridge_dev were not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "toolbridge_dev":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoDevPackage())

from typer.testing import CliRunner

import toolbridge_api.cli
import toolbridge_mcp.cli
import toolbridge_mcp.server

runner = CliRunner()
results = {}
for label, app, args in [
    ("mcp serve --help", toolbridge_mcp.cli.app, ["serve", "--help"]),
    ("mcp token --help", toolbridge_mcp.cli.app, ["token", "--help"]),
    ("mcp check --help", toolbridge_mcp.cli.app, ["check", "--help"]),
    ("mcp dev", toolbridge_mcp.cli.app, ["dev"]),
    ("api --help", toolbridge_api.cli.app, ["--help"]),
    ("api serve --help", toolbridge_api.cli.app, ["serve", "--help"]),
    ("api migrate --help", toolbridge_api.cli.app, ["migrate", "--help"]),
]:
    result = runner.invoke(app, args)
    results[label] = {"exit_code": result.exit_code, "output": result.output}
results["dev modules loaded"] = sorted(
    n for n, m in sys.modules.items() if n.partition(".")[0] == "toolbridge_dev" and m is not None
)
print(json.dumps(results))
"""


@dataclass(frozen=True)
class _Run:
    exit_code: int
    output: str


@pytest.fixture(scope="module")
def without_dev_package(tmp_path_factory: pytest.TempPathFactory) -> dict[str, _Run]:
    done = _python(NO_DEV_PROBE, tmp_path_factory.mktemp("no-dev"))
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results.pop("dev modules loaded") == []
    return {label: _Run(**run) for label, run in results.items()}


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("mcp serve --help", "Run the MCP server"),
        ("mcp token --help", "Fetch an access token"),
        ("mcp check --help", "Check the configuration end to end"),
        ("api --help", "migrate"),
        ("api serve --help", "Serve the API with uvicorn"),
        ("api migrate --help", "Upgrade the database"),
    ],
)
def test_production_commands_work_without_the_dev_package(
    without_dev_package: dict[str, _Run], label: str, expected: str
) -> None:
    run = without_dev_package[label]
    assert run.exit_code == 0, run.output
    assert expected in run.output


def test_dev_command_without_the_dev_package_says_what_is_missing(
    without_dev_package: dict[str, _Run],
) -> None:
    run = without_dev_package["mcp dev"]
    assert run.exit_code == 2
    assert "toolbridge-mcp dev needs the development package toolbridge_dev" in run.output
    assert "Traceback" not in run.output


# -- static: every module's imports -------------------------------------------------------


@dataclass(frozen=True)
class _Import:
    file: str
    line: int
    module: str
    in_function: bool


def _imports(path: Path) -> list[_Import]:
    """Every absolute import of the module at ``path`` (see :func:`_imports_in`)."""
    return _imports_in(path.read_text(encoding="utf-8"), path.relative_to(SRC).as_posix())


def _imports_in(source: str, file: str) -> list[_Import]:
    """Every absolute import in ``source`` (``import x``, ``from x import y``, and
    ``importlib.import_module("x")`` / ``__import__("x")`` with a literal name), wherever it
    is: module level, ``if TYPE_CHECKING:``, ``try:`` or a function body."""
    found: list[_Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and _is_import_call(node):
            names = [node.args[0].value]  # type: ignore[attr-defined]
        for name in names:
            found.append(_Import(file, getattr(node, "lineno", 0), name, in_function))
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source, filename=file), in_function=False)
    return found


def _is_import_call(node: ast.Call) -> bool:
    """``importlib.import_module("x")``, ``import_module("x")`` or ``__import__("x")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return (
        name in {"import_module", "__import__"}
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def test_the_four_packages_are_all_there() -> None:
    for package in PACKAGES:
        assert (SRC / package / "__init__.py").is_file(), package


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_across_a_boundary(package: str) -> None:
    forbidden = FORBIDDEN[package]
    crossings = [
        f"{found.file}:{found.line} imports {found.module}"
        for path in _modules(package)
        for found in _imports(path)
        if _top(found.module) in forbidden
        and not (found.in_function and (found.file, found.module) in LAZY_EXCEPTIONS)
    ]
    assert crossings == []


def test_the_lazy_exceptions_still_exist_and_stay_lazy() -> None:
    """An exception that no longer matches any import is stale: drop it from the list."""
    for file, module in LAZY_EXCEPTIONS:
        matching = [found for found in _imports(SRC / file) if found.module == module]
        assert matching, f"{file} no longer imports {module}"
        assert all(found.in_function for found in matching), f"{file} imports {module} eagerly"


def test_the_static_walk_sees_imports_in_every_form() -> None:
    """The walk itself: it must not miss the forms a crossing could take."""
    source = """
        from typing import TYPE_CHECKING
        import importlib
        import fastapi.routing
        from toolbridge_api.config import ApiSettings
        from . import settings
        if TYPE_CHECKING:
            import toolbridge_mcp
        try:
            import sqlalchemy as sa
        except ImportError:
            pass
        def later():
            from toolbridge_dev import stack
            return importlib.import_module("fastmcp"), __import__("starlette")
    """
    found = _imports_in(textwrap.dedent(source), "toolbridge_common/sample.py")
    assert {(f.module, f.in_function) for f in found} == {
        ("typing", False),
        ("importlib", False),
        ("fastapi.routing", False),
        ("toolbridge_api.config", False),
        ("toolbridge_mcp", False),
        ("sqlalchemy", False),
        ("toolbridge_dev", True),
        ("fastmcp", True),
        ("starlette", True),
    }
