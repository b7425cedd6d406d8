"""The repository stands alone: no file names a path outside the checkout."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Generated or third-party trees that are never committed (see .gitignore), for a copy of the
# checkout without .git (what .ci/run tests).
_SKIP_DIRS = {
    ".git",
    ".venv",
    "var",
    "build",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "results",
    ".haraka",
}
_DATA = ROOT / "tests" / "data"  # third-party data, kept byte for byte

# Home and build-machine directories, and the reference folder beside the checkout. Written in
# pieces so that this file does not match itself.
_OUTSIDE = re.compile(
    "|".join(
        [
            "/" + "work/",
            "/" + "home/[A-Za-z]",
            "/" + "root/",
            "/" + "Users/",
            r"\.\./" + "shared",
            "shared/" + "testdata",
        ]
    )
)


def _files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        return [ROOT / name for name in listed.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # a copy without .git
        return [
            path
            for path in ROOT.rglob("*")
            if path.is_file()
            and not _SKIP_DIRS.intersection(path.relative_to(ROOT).parts)
            and not path.name.endswith(".egg-info")
        ]


def test_no_file_points_outside_the_checkout() -> None:
    parent = str(ROOT.parent) + "/"
    found = []
    for path in _files():
        if not path.is_file() or path.is_relative_to(_DATA):
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line) or (len(parent) > 1 and parent in line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "paths outside the repository:\n" + "\n".join(found)


def test_test_data_has_origin_and_licence() -> None:
    data = ROOT / "tests" / "data"
    assert (data / "README.md").is_file()
    assert (data / "spf" / "rfc7208-tests.LICENSE").is_file()
    assert (data / "mail" / "cpython-test-email.LICENSE").is_file()
    assert len(list((data / "mail" / "cpython-test-email").glob("msg_*.txt"))) == 48
