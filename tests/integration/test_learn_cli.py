"""``filterd learn`` against a real spamd started with --allow-tell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.spamd import running_spamd

CORPUS = Path(__file__).resolve().parents[2].parent / "shared/testdata/mail/cpython-test-email"

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/spamd").exists(), reason="spamd not installed")


def test_learn_spam_then_again_is_already_known(tmp_path: Path) -> None:
    message = CORPUS / "msg_02.txt"
    with running_spamd(allow_tell=True) as spamd:
        host, port = spamd.address
        argv = [sys.executable, "-m", "filterd", "learn", "--spam", "--spamd", f"{host}:{port}"]
        first = subprocess.run([*argv, str(message)], capture_output=True, text=True, check=False)
        again = subprocess.run([*argv, str(message)], capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"{message}: learnt as spam: local"
    assert again.stdout.strip() == f"{message}: learnt as spam: nothing (already known)"


def test_learn_without_a_spamd_is_an_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "filterd", "learn", "--ham", "x.eml"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no spamd" in done.stderr
