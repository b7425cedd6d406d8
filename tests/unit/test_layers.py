"""Plugins, their tests included, import only filterd.sdk and filterd.testing from filterd.

`make lint` (import-linter) checks the plugin packages themselves; this checks every Python file
under plugins/ (and the example third-party plugin), tests too, by reading its imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_TREES = [ROOT / "plugins", ROOT / "tests" / "example_plugin"]
_SKIP_DIRS = {"build", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def allowed(module: str) -> bool:
    """``filterd.sdk`` (and its documented submodules: listing, process, spamd) and
    ``filterd.testing``; anything else of filterd is internal."""
    return module in ("filterd.sdk", "filterd.testing") or module.startswith("filterd.sdk.")


def filterd_imports(source: str) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import of a filterd module in ``source``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "filterd":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "filterd":  # from filterd import sdk → filterd.sdk
                for alias in node.names:
                    yield node.lineno, f"filterd.{alias.name}"
            elif node.module.split(".")[0] == "filterd":
                yield node.lineno, node.module


def plugin_files() -> list[Path]:
    return sorted(
        path
        for tree in PLUGIN_TREES
        for path in tree.rglob("*.py")
        if not _SKIP_DIRS.intersection(path.relative_to(tree).parts)
    )


def test_the_check_sees_every_kind_of_import() -> None:
    source = (
        "import filterd.maillog\n"
        "from filterd.model.envelope import Xforwarded\n"
        "from filterd import errors, sdk\n"
        "def f():\n"
        "    from filterd.chain import runner\n"
        "from filterd.sdk import Plugin\n"
        "from filterd.sdk.listing import ListingPlugin\n"
        "from filterd.testing import run_plugin\n"
        "from .plugin import Mine\n"
        "import filterd_spf.config\n"
    )
    found = [(line, module) for line, module in filterd_imports(source) if not allowed(module)]
    assert found == [
        (1, "filterd.maillog"),
        (2, "filterd.model.envelope"),
        (3, "filterd.errors"),
        (5, "filterd.chain"),
    ]


def test_there_are_plugin_files_to_check() -> None:
    names = {path.name for path in plugin_files()}
    assert {"test_spf_plugin.py", "test_pyzor_plugin.py", "__init__.py"} <= names


@pytest.mark.parametrize("path", plugin_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_only_the_sdk_and_the_harness(path: Path) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for line, module in filterd_imports(path.read_text(encoding="utf-8"))
        if not allowed(module)
    ]
    assert not bad, "plugins import only filterd.sdk and filterd.testing:\n" + "\n".join(bad)
