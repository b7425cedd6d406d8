"""docs/architecture.md and the other documents name what exists, and every module is mapped."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_DIRS = ("filterd/", "plugins/", "tests/", "bench/", "deploy/", "docs/", ".ci/")
GENERATED = ("bench/.haraka", "bench/results", "var/")  # made by a run, ignored by git

_BACKTICKED = re.compile(r"`([^`\s]+)`")


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_module_map_names_every_module_and_nothing_else() -> None:
    mapped = {
        name
        for name in _BACKTICKED.findall(_section(ARCHITECTURE.read_text(), "Module map"))
        if name.startswith("filterd/") and name.endswith(".py")
    }
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "filterd").rglob("*.py")
        if path.name != "__init__.py"
    }
    assert sorted(modules - mapped) == [], "modules missing from the module map"
    assert sorted(mapped - modules) == [], "the module map names modules that do not exist"


def test_documents_name_only_paths_that_exist() -> None:
    missing = []
    for document in DOCUMENTS:
        for number, line in enumerate(document.read_text().splitlines(), 1):
            for name in _BACKTICKED.findall(line):
                path = name.split("::")[0].rstrip(".,:;")
                if not path.startswith(TOP_DIRS) or path.startswith(GENERATED) or "*" in path:
                    continue
                if "<" in path or "{" in path:  # a pattern, not a path
                    continue
                if not (ROOT / path).exists():
                    missing.append(f"{document.relative_to(ROOT)}:{number}: {name}")
    assert missing == []
