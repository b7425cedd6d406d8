"""docs/plugins.md shows the example plugin as it is: its code, its tests and its pyproject.toml
are the files of tests/example_plugin/ (which filterd's tests install and run), so the guide
cannot drift from what works."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "tests" / "example_plugin"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE, re.DOTALL)


def the_block(language: str, marker: str) -> str:
    (found,) = [block for block in blocks(language) if marker in block]
    return found


def code(source: str) -> str:
    """The module's statements, formatting, comments, docstring and __future__ aside."""
    body = ast.parse(source).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    body = [s for s in body if not (isinstance(s, ast.ImportFrom) and s.module == "__future__")]
    return "\n".join(ast.dump(statement) for statement in body)


def test_the_plugin_code_is_the_example_package() -> None:
    shown = the_block("python", "class ExampleTagger")
    real = (EXAMPLE / "filterd_example" / "__init__.py").read_text(encoding="utf-8")
    assert code(shown) == code(real)


def test_the_tests_are_the_example_package_tests() -> None:
    shown = the_block("python", "async def test_tags_and_refuses")
    real = (EXAMPLE / "tests" / "test_example.py").read_text(encoding="utf-8")
    assert code(shown) == code(real)


def test_the_pyproject_settings_are_the_example_package_settings() -> None:
    shown = tomllib.loads(the_block("toml", "[project.entry-points"))
    real = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))

    def same(shown: dict[str, object], real: dict[str, object], where: str) -> None:
        for key, value in shown.items():
            assert key in real, f"{where}{key} is not in the example's pyproject.toml"
            if isinstance(value, dict):
                inner = real[key]
                assert isinstance(inner, dict)
                same(value, inner, f"{where}{key}.")
            else:
                assert real[key] == value, f"{where}{key}"

    same(shown, real, "")


def test_the_layout_lists_the_example_files() -> None:
    layout = GUIDE.split("Its layout:", 1)[1].split("```", 2)[1]
    files = [line.strip() for line in layout.splitlines()[2:] if line.strip()]
    assert files == ["pyproject.toml", "filterd_example/__init__.py", "tests/test_example.py"]
    for name in files:
        assert (EXAMPLE / name).is_file()
