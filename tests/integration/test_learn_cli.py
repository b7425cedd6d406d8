"""``filterd learn`` against a real spamd started with --allow-tell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.data import MAIL_CORPUS
from tests.support.spamd import running_spamd

CORPUS = MAIL_CORPUS

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


def test_learn_through_the_chain_uses_every_learning_plugin(tmp_path: Path) -> None:
    message = CORPUS / "msg_03.txt"
    with running_spamd(allow_tell=True) as spamd:
        host, port = spamd.address
        config = tmp_path / "filterd.toml"
        config.write_text(
            '[[listen]]\naddress = "127.0.0.1:0"\n[delivery]\nmethod = "maildir"\n'
            f'[[chain]]\nplugin = "spamassassin"\nconfig = {{ address = "{host}:{port}" }}\n'
        )
        done = subprocess.run(
            [sys.executable, "-m", "filterd", "learn", "-c", str(config), "--ham", str(message)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{message}: spamassassin: spamd learnt it as ham: local"


def test_learn_without_a_learning_plugin_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "filterd.toml"
    config.write_text('[[listen]]\naddress = "127.0.0.1:0"\n[delivery]\nmethod = "maildir"\n')
    done = subprocess.run(
        [sys.executable, "-m", "filterd", "learn", "-c", str(config), "--ham", "x.eml"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no plugin of the chain can learn" in done.stderr
