"""``filterd pipe`` as pipe(8) runs it: the envelope on the command line, the message on
stdin; what it exits with and what its output begins with, for each of the chain's decisions,
with the real Maildir stage behind it (``[pipe] deliver_to = "delivery"``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from filterd.protocols.pipe_map import EX_DATAERR, EX_NOPERM, EX_OK, EX_TEMPFAIL

TIMEOUT = 60

MESSAGE = b"From: a@example.net\nTo: b@example.org\nSubject: %s\n\nHello.\n"


def _config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "filterd.toml"
    config.write_text(f"""\
[limits]
max_message_size = 2000

[pipe]
deliver_to = "delivery"

[delivery]
method = "maildir"
root = "{tmp_path / "mail"}"

[quarantine]
root = "{tmp_path / "quarantine"}"

[[chain]]
plugin = "example_tagger"
[chain.config]
refuse_words = ["forbidden"]
refuse_prefix = "no-"

[[chain]]
plugin = "header_checks"
[chain.config]
rules = ["/^Subject: drop me/ DISCARD dropped", "/^Subject: hold me/ HOLD held"]
{extra}""")
    return config


def _pipe(
    config: Path | str, *args: str, message: bytes = MESSAGE % b"hi"
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "filterd", "pipe", "-c", str(config), *args]
    return subprocess.run(
        command, input=message.decode(), capture_output=True, text=True, timeout=TIMEOUT
    )


def _delivered(root: Path, address: str) -> list[bytes]:
    local, _, domain = address.partition("@")
    new = root / "mail" / domain / local / "new"
    return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []


def test_accepted_goes_to_the_next_stage_with_the_chain_edits(tmp_path: Path) -> None:
    done = _pipe(_config(tmp_path), "-f", "a@example.net", "--", "b@example.org", "c@example.org")
    assert done.returncode == EX_OK, done.stderr
    assert done.stdout == ""
    for rcpt in ("b@example.org", "c@example.org"):
        (copy,) = _delivered(tmp_path, rcpt)
        assert b"X-Example-Tag: tagged\n" in copy
        assert copy.endswith(b"\n\nHello.\n")
    assert "from=<a@example.net>, size=" in done.stderr


def test_a_rejected_message_exits_77_with_the_reason_first(tmp_path: Path) -> None:
    message = MESSAGE % b"forbidden fruit"
    done = _pipe(_config(tmp_path), "-f", "a@example.net", "--", "b@example.org", message=message)
    assert done.returncode == EX_NOPERM
    assert done.stderr.startswith("5.7.1 Message refused by example_tagger\n"), done.stderr
    assert _delivered(tmp_path, "b@example.org") == []


def test_a_refused_recipient_refuses_the_batch(tmp_path: Path) -> None:
    done = _pipe(
        _config(tmp_path), "-f", "a@example.net", "--", "b@example.org", "no-x@example.org"
    )
    assert done.returncode == EX_NOPERM
    assert done.stderr.startswith("5.7.1 <no-x@example.org>: refused by example_tagger\n")
    assert _delivered(tmp_path, "b@example.org") == []


def test_discard_exits_0_and_delivers_nothing(tmp_path: Path) -> None:
    message = MESSAGE % b"drop me"
    done = _pipe(_config(tmp_path), "-f", "a@example.net", "--", "b@example.org", message=message)
    assert done.returncode == EX_OK, done.stderr
    assert _delivered(tmp_path, "b@example.org") == []
    assert "discard: END-OF-MESSAGE" in done.stderr


def test_hold_exits_0_and_keeps_the_message_in_the_quarantine(tmp_path: Path) -> None:
    message = MESSAGE % b"hold me"
    done = _pipe(_config(tmp_path), "-f", "a@example.net", "--", "b@example.org", message=message)
    assert done.returncode == EX_OK, done.stderr
    assert _delivered(tmp_path, "b@example.org") == []
    (held,) = (tmp_path / "quarantine" / "new").iterdir()
    assert b"Subject: hold me" in held.read_bytes()


def test_too_big_exits_65_with_5_3_4(tmp_path: Path) -> None:
    message = MESSAGE % b"big" + b"x" * 3000 + b"\n"
    done = _pipe(_config(tmp_path), "-f", "a@example.net", "--", "b@example.org", message=message)
    assert done.returncode == EX_DATAERR
    assert done.stderr.startswith("5.3.4 "), done.stderr


def test_a_failing_reinjection_exits_75(tmp_path: Path) -> None:
    config = _config(tmp_path)
    text = config.read_text().replace('deliver_to = "delivery"', 'sendmail = ["/bin/false"]')
    config.write_text(text)
    done = _pipe(config, "-f", "a@example.net", "--", "b@example.org")
    assert done.returncode == EX_TEMPFAIL
    assert done.stderr.startswith("4.3.0 Error: /bin/false failed (exit status 1)"), done.stderr


def test_a_plugin_that_fails_exits_75(tmp_path: Path) -> None:
    extra = '\n[[chain]]\nplugin = "spamassassin"\n[chain.config]\naddress = "127.0.0.1:1"\n'
    done = _pipe(_config(tmp_path, extra), "-f", "a@example.net", "--", "b@example.org")
    assert done.returncode == EX_TEMPFAIL
    assert done.stderr.startswith("4.3.0 Error: message check failed, try again later")
    assert _delivered(tmp_path, "b@example.org") == []


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("--", "b@example.org"), "the following arguments are required: -f"),
        (("-f", "a@example.net"), "the following arguments are required: RECIPIENT"),
    ],
)
def test_a_bad_command_line_defers(tmp_path: Path, args: tuple[str, ...], why: str) -> None:
    done = _pipe(_config(tmp_path), *args)
    assert done.returncode == EX_TEMPFAIL
    assert done.stderr == f"4.3.5 filterd pipe: {why}\n"


def test_a_bad_configuration_defers_and_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[pipe]\ndeliver_to = "delivery"\n')
    done = _pipe(config, "-f", "a@example.net", "--", "b@example.org")
    assert done.returncode == EX_TEMPFAIL
    assert done.stderr.startswith(f"4.3.5 filterd pipe: {config}:"), done.stderr
    assert "deliver_to" in done.stderr
