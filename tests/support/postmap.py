"""Postfix's postmap(1), the reference of the lookup-table tests: build indexed files and
query tables exactly as Postfix would, with a private configuration directory (no
/etc/postfix needed)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Postmap:
    program: str
    config_dir: Path

    def run(
        self, *args: str, stdin: bytes = b"", timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [self.program, "-c", str(self.config_dir), *args],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def build(self, table: str) -> None:
        """``postmap type:file``: build the indexed file (lmdb, cdb, hash, btree)."""
        proc = self.run(table)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")

    def query(self, key: str, *tables: str) -> tuple[int, str, str]:
        """``postmap -q key table...``: (exit status, stdout, stderr) as text."""
        proc = self.run("-q", key, *tables)
        return (
            proc.returncode,
            proc.stdout.decode(errors="surrogateescape"),
            proc.stderr.decode(errors="replace"),
        )

    def query_many(self, keys: Sequence[str], table: str) -> dict[str, str]:
        """``postmap -q - table`` for keys without TAB or newline: {key: value} of the keys found.
        Fails the test on a postmap error (anything on stderr but warnings)."""
        for key in keys:
            assert "\t" not in key, key
            assert "\n" not in key, key
        proc = self.run("-q", "-", table, stdin="".join(k + "\n" for k in keys).encode())
        errors = [
            line
            for line in proc.stderr.decode(errors="replace").splitlines()
            if ": warning: " not in line
        ]
        assert proc.returncode in (0, 1), errors
        assert not errors, errors
        found: dict[str, str] = {}
        for line in proc.stdout.decode(errors="surrogateescape").splitlines():
            key, _, value = line.partition("\t")
            found[key] = value
        return found


def make_postmap(directory: Path, main_cf: str = "") -> Postmap:
    """A Postmap with ``main.cf`` (``main_cf`` added to a compatibility level) in ``directory``."""
    program = shutil.which("postmap") or "/usr/sbin/postmap"
    if not Path(program).exists():
        pytest.fail("postmap(1) is required (deploy/install-system-packages.sh installs postfix)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.cf").write_text("compatibility_level = 3.6\n" + main_cf)
    return Postmap(program, directory)


@pytest.fixture(scope="module")
def postmap(tmp_path_factory: pytest.TempPathFactory) -> Postmap:
    return make_postmap(tmp_path_factory.mktemp("postmap-conf"))
