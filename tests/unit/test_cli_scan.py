"""``filterd scan``'s exit status, for scripts (as ``spamc -c``): 0 pass, 1 reject, quarantine or
discard, 75 tempfail; 66 for a message it cannot read."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from filterd.cli.main import main

CHAIN = """\
[[chain]]
plugin = "header_checks"
[chain.config]
rules = [
  '/^Subject: spam/ REJECT no spam here',
  '/^Subject: hold/ HOLD held for review',
  '/^Subject: drop/ DISCARD',
  '/^Subject: later/ REJECT 4.7.1 try again later',
]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "filterd.toml"
    path.write_text(CHAIN)
    return path


@pytest.mark.parametrize(
    ("subject", "status", "result"),
    [
        ("fine", 0, "# result: continue"),
        ("spam offer", 1, "# result: reject (550 5.7.1 no spam here) at on_message"),
        ("hold this", 1, "# result: quarantine (held for review) at on_message"),
        ("drop it", 1, "# result: discard (header Subject: drop it) at on_message"),
        ("later please", 75, "# result: tempfail (451 4.7.1 try again later) at on_message"),
    ],
)
def test_the_exit_status_says_what_the_chain_decided(
    config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    subject: str,
    status: int,
    result: str,
) -> None:
    message = tmp_path / "m.eml"
    message.write_text(f"Subject: {subject}\n\nbody\n")
    assert main(["scan", "-c", str(config), str(message)]) == status
    assert result in capsys.readouterr().out


def test_a_message_on_stdin(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"Subject: spam\n\nbuy\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["scan", "-c", str(config), "-"]) == 1
    assert "# result: reject (550 5.7.1 no spam here)" in capsys.readouterr().out


def test_a_message_that_cannot_be_read_is_66_not_a_verdict(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.eml"
    assert main(["scan", "-c", str(config), str(missing)]) == 66
    assert capsys.readouterr().err == (
        f"filterd scan: cannot read {missing}: No such file or directory\n"
    )


def test_the_help_documents_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status (like spamc -c): 0 the message passes; 1 it would be rejected," in text
    assert "75 it would be deferred" in text


def test_a_failure_of_filterd_is_70_not_a_verdict(
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the chain broke")

    monkeypatch.setattr("filterd.cli.scan.run_chain", broken)
    message = tmp_path / "m.eml"
    message.write_text("Subject: fine\n\nbody\n")
    assert main(["scan", "-c", str(config), str(message)]) == 70
    assert "filterd scan: failed: the chain broke" in capsys.readouterr().err
