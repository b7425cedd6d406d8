"""``filterd quarantine``'s answers that need no next hop: a message held by another process, a
file filterd did not write, no [delivery] to release to, a bad max_age."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from filterd.cli.main import main
from filterd.delivery.quarantine import QuarantineStore
from tests.unit.test_maillog import restore_logging

# the command sets up filterd's logging (to the captured stderr): put it back after each test
pytestmark = pytest.mark.usefixtures(restore_logging.__name__)

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"
OLD_FORMAT = (
    b"Return-Path: <alice@example.com>\r\n"
    b"X-Filterd-Quarantine: held for review\r\n"
    b"X-Filterd-Envelope: queue_id=0123456789; from=<alice@example.com>; to=<bob@example.org>\r\n"
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "filterd.toml"
    path.write_text(
        f'[quarantine]\nroot = "{tmp_path / "q"}"\n'
        '[delivery]\nmethod = "relay"\nnext_hop = "127.0.0.1:9"\n'
    )
    (tmp_path / "q" / "new").mkdir(parents=True)
    (tmp_path / "q" / "new" / "1.M1P1Q1.old,S=9").write_bytes(OLD_FORMAT + MESSAGE)
    (tmp_path / "q" / "new" / "2.M1P1Q1.foreign").write_bytes(MESSAGE)
    return path


def test_a_message_held_by_another_process_is_75(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with QuarantineStore(tmp_path / "q").held("1.M1P1Q1.old"):
        assert main(["quarantine", "-c", str(config), "release", "1.M1P1Q1.old"]) == 75
        assert main(["quarantine", "-c", str(config), "delete", "1.M1P1Q1.old"]) == 75
    err = capsys.readouterr().err
    assert "message 1.M1P1Q1.old is being released or deleted by another process" in err
    assert (tmp_path / "q" / "new" / "1.M1P1Q1.old,S=9").exists()


def test_files_of_the_earlier_format_and_foreign_ones_are_listed_and_shown(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["quarantine", "-c", str(config), "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[0] == "1.M1P1Q1.old"
    assert rows[1].endswith("<alice@example.com>  <bob@example.org>  held for review")
    assert rows[2].split()[0] == "2.M1P1Q1.foreign"
    assert rows[2].endswith("-                    -                  -")
    assert rows[3] == f"-- 2 messages, {2 * len(MESSAGE)} bytes"
    assert main(["quarantine", "-c", str(config), "show", "2.M1P1Q1.foreign"]) == 0
    captured = capsys.readouterr()
    assert "note:     not written by filterd: no envelope recorded" in captured.out
    assert "filterd/quarantine[" in captured.err
    assert ": NOQUEUE: shown, id=2.M1P1Q1.foreign\n" in captured.err  # who looked is logged


def test_a_foreign_file_cannot_be_released(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["quarantine", "-c", str(config), "release", "2.M1P1Q1.foreign"]) == 1
    assert "has no envelope recorded" in capsys.readouterr().err


def test_release_needs_a_delivery(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text(f'[quarantine]\nroot = "{tmp_path / "q"}"\n')
    assert main(["quarantine", "-c", str(config), "release", "1.M1P1Q1.old"]) == 2
    assert f"release needs a [delivery] table in {config}" in capsys.readouterr().err
    assert main(["quarantine", "-c", str(config), "list"]) == 0  # listing does not


def test_a_bad_max_age_names_the_line_and_the_fix(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text('[quarantine]\nmax_age = "0d"\n')
    assert main(["quarantine", "-c", str(config), "expire"]) == 2
    assert capsys.readouterr().err == (
        f"{config}:2: quarantine.max_age: must be more than zero, got 0s "
        '(fix: write an age such as "30d", or leave max_age out to keep messages)\n'
    )


def test_release_into_the_configured_maildir(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mail = tmp_path / "mail"
    config.write_text(
        f'[quarantine]\nroot = "{tmp_path / "q"}"\n[delivery]\nmethod = "maildir"\n'
        f'root = "{mail}"\n'
    )
    assert main(["quarantine", "-c", str(config), "release", "1.M1P1Q1.old"]) == 0
    (delivered,) = (mail / "example.org" / "bob" / "new").iterdir()
    assert delivered.read_bytes() == (  # as virtual(8) writes it: its lines, LF line ends
        b"Return-Path: <alice@example.com>\nX-Original-To: bob@example.org\n"
        b"Delivered-To: bob@example.org\n" + MESSAGE.replace(b"\r\n", b"\n")
    )
    assert not (tmp_path / "q" / "new" / "1.M1P1Q1.old,S=9").exists()
    captured = capsys.readouterr()
    assert "1.M1P1Q1.old: released" in captured.out
    assert re.search(
        r"0123456789: to=<bob@example.org>, relay=maildir, .*status=sent", captured.err
    )
    assert "0123456789: released from quarantine, id=1.M1P1Q1.old" in captured.err
