"""The documentation stays true: the configuration page is what the settings classes say, and
every link in README.md and docs/ reaches a file (and heading) of this repository."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "scripts" / "gen_config_docs.py"
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_configuration_page_is_generated_from_the_settings(generator: ModuleType) -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == generator.render(), (
        "docs/configuration.md differs from the settings classes: "
        "run `uv run python scripts/gen_config_docs.py` and commit the result"
    )


def test_every_setting_is_described(generator: ModuleType) -> None:
    undescribed = [
        generator.env_var(section.settings, name)
        for section in generator.SECTIONS
        for name, info in section.settings.model_fields.items()
        if not generator.description(section.settings, name, info).strip()
    ]
    assert undescribed == [], "give these fields a Field(description=...)"


def test_pending_descriptions_are_still_pending(generator: ModuleType) -> None:
    """A pending description is for a field that exists and has none of its own yet; once
    the field has one, the entry is dead text and must go."""
    stale = [
        f"{settings.__name__}.{name}"
        for settings, name in generator.PENDING_DESCRIPTIONS
        if name not in settings.model_fields or settings.model_fields[name].description
    ]
    assert stale == [], "remove these entries from PENDING_DESCRIPTIONS"


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE):
        plain = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", plain).replace(" ", "-"))
    return anchors


def _links(page: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", page.read_text(encoding="utf-8")))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_links_stay_inside_the_repository_and_resolve(page: Path) -> None:
    broken = []
    for link in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto: …
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / unquote(path)).resolve() if path else page
        if not target.is_relative_to(ROOT) or not target.exists():
            broken.append(f"{link}: no such file in the repository")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no such heading in {target.relative_to(ROOT)}")
    assert broken == []


def test_the_link_checker_sees_links_and_anchors(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# The `Title`: one\n\n[a](other.md#x-y) ![img](pic.png) [b](https://e.org)\n"
        "```\n[not](a-link.md)\n```\n## X, y\n",
        encoding="utf-8",
    )
    assert _links(page) == ["other.md#x-y", "https://e.org"]
    assert _anchors(page) == {"the-title-one", "x-y"}
