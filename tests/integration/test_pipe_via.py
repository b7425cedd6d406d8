"""``filterd pipe --via ADDRESS``, the client mode of the pipe(8) door: the message goes to a
real filterd's LMTP listener, which runs the chain and delivers to Maildirs; the exit status
and the output are the standalone mode's for the same decisions (tests/integration/
test_pipe_cli.py), and a listener that is down or silent defers the message (75)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from filterd.protocols.pipe_map import EX_DATAERR, EX_NOPERM, EX_OK, EX_TEMPFAIL
from tests.support.filterd_proc import FilterdProcess
from tests.support.postfix import free_port

TIMEOUT = 60

MESSAGE = b"From: a@example.net\nTo: b@example.org\nSubject: %s\n\nHello.\n"


def _config(root: Path, port: int) -> str:
    return f"""\
[[listen]]
address = "unix:{root / "lmtp.sock"}"
protocol = "lmtp"

[[listen]]
address = "127.0.0.1:{port}"
protocol = "lmtp"

[limits]
max_message_size = 2000

[delivery]
method = "maildir"
root = "{root / "mail"}"

[quarantine]
root = "{root / "quarantine"}"

[[chain]]
plugin = "example_tagger"
[chain.config]
refuse_words = ["forbidden"]
refuse_prefix = "no-"

[[chain]]
plugin = "header_checks"
[chain.config]
rules = [
  "/^Subject: drop me/ DISCARD dropped",
  "/^Subject: later/ REJECT 4.7.1 try again later",
]
"""


class Listener:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.unix = f"unix:{root / 'lmtp.sock'}"
        self.tcp = f"127.0.0.1:{port}"

    def delivered(self, address: str) -> list[bytes]:
        local, _, domain = address.partition("@")
        new = self.root / "mail" / domain / local / "new"
        return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    root = tmp_path_factory.mktemp("via")
    port = free_port()
    proc = FilterdProcess(_config(root, port), root / "run")
    proc.start()
    try:
        yield Listener(root, port)
    finally:
        status = proc.stop()
        assert status == 0, proc.output_text()[-5000:]


def _pipe(
    via: str, *args: str, message: bytes = MESSAGE % b"hi"
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "filterd", "pipe", "--via", via, *args]
    return subprocess.run(
        command, input=message.decode(), capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.mark.parametrize("over", ["unix", "tcp"])
def test_accepted_is_delivered_to_every_recipient(listener: Listener, over: str) -> None:
    via = listener.unix if over == "unix" else listener.tcp
    rcpts = (f"b-{over}@example.org", f"c-{over}@example.org")
    message = MESSAGE % b"hi" + b".a line that begins with a dot\n"
    done = _pipe(via, "-f", "a@example.net", "--", *rcpts, message=message)
    assert done.returncode == EX_OK, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
    for rcpt in rcpts:
        (copy,) = listener.delivered(rcpt)
        assert b"X-Example-Tag: tagged\n" in copy
        assert copy.endswith(b"\n\nHello.\n.a line that begins with a dot\n")


def test_a_line_longer_than_smtp_allows_is_broken_as_postfix_breaks_it(listener: Listener) -> None:
    # The listener refuses text lines over 1000 bytes (5.5.2): a bounce for mail the
    # standalone mode passes. The client breaks them as Postfix's smtp(8) does.
    long_line = b"z" * 1500
    message = MESSAGE % b"long" + long_line + b"\n"
    done = _pipe(listener.unix, "-f", "a@example.net", "--", "long@example.org", message=message)
    assert done.returncode == EX_OK, done.stderr
    (copy,) = listener.delivered("long@example.org")
    assert copy.endswith(b"\n\nHello.\n" + long_line[:998] + b"\n " + long_line[998:] + b"\n")


def test_the_null_sender_and_the_original_client_go_over(listener: Listener) -> None:
    done = _pipe(
        listener.unix,
        "-f",
        "",
        "--client-address",
        "192.0.2.7",
        "--client-name",
        "mx.example.net",
        "--helo",
        "mx.example.net",
        "--",
        "bounce@example.org",
    )
    assert done.returncode == EX_OK, done.stderr
    (copy,) = listener.delivered("bounce@example.org")
    assert b"X-Example-Tag: tagged\n" in copy


def test_a_rejected_message_exits_77_with_the_reason_first(listener: Listener) -> None:
    message = MESSAGE % b"forbidden fruit"
    done = _pipe(listener.unix, "-f", "a@example.net", "--", "r@example.org", message=message)
    assert done.returncode == EX_NOPERM
    assert done.stderr == "5.7.1 Message refused by example_tagger\n"
    assert listener.delivered("r@example.org") == []


def test_a_refused_recipient_refuses_the_batch(listener: Listener) -> None:
    done = _pipe(listener.unix, "-f", "a@example.net", "--", "s@example.org", "no-x@example.org")
    assert done.returncode == EX_NOPERM
    assert done.stderr == "5.7.1 <no-x@example.org>: refused by example_tagger\n"
    assert listener.delivered("s@example.org") == []


def test_a_temporary_refusal_exits_75(listener: Listener) -> None:
    message = MESSAGE % b"later"
    done = _pipe(listener.tcp, "-f", "a@example.net", "--", "t@example.org", message=message)
    assert done.returncode == EX_TEMPFAIL
    assert done.stderr == "4.7.1 try again later\n"
    assert listener.delivered("t@example.org") == []


def test_discard_exits_0_and_delivers_nothing(listener: Listener) -> None:
    message = MESSAGE % b"drop me"
    done = _pipe(listener.unix, "-f", "a@example.net", "--", "d@example.org", message=message)
    assert done.returncode == EX_OK, done.stderr
    assert listener.delivered("d@example.org") == []


def test_too_big_exits_65_with_5_3_4(listener: Listener) -> None:
    message = MESSAGE % b"big" + (b"x" * 70 + b"\n") * 50
    done = _pipe(listener.unix, "-f", "a@example.net", "--", "big@example.org", message=message)
    assert done.returncode == EX_DATAERR
    assert done.stderr.startswith("5.3.4 "), done.stderr


def test_a_listener_that_is_down_defers(tmp_path: Path) -> None:
    via = f"unix:{tmp_path / 'absent.sock'}"
    done = _pipe(via, "-f", "a@example.net", "--", "b@example.org")
    assert done.returncode == EX_TEMPFAIL
    assert done.stderr == (
        f"4.4.1 Error: filterd at {via}: cannot connect (No such file or directory), "
        "try again later\n"
    )


def test_a_closed_port_defers() -> None:
    with socket.socket() as sock:  # bound, not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        via = f"127.0.0.1:{sock.getsockname()[1]}"
        done = _pipe(via, "-f", "a@example.net", "--", "b@example.org")
    assert done.returncode == EX_TEMPFAIL
    assert done.stderr.startswith(f"4.4.1 Error: filterd at {via}: cannot connect"), done.stderr


def test_a_listener_that_does_not_answer_defers_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as sock:  # connections wait in the backlog, unanswered
        sock.bind(str(path))
        sock.listen(1)
        done = _pipe(f"unix:{path}", "--timeout", "0.5", "-f", "a@example.net", "--", "b@x.org")
    assert done.returncode == EX_TEMPFAIL
    assert done.stderr == "4.4.2 Error: filterd pipe time limit exceeded, try again later\n"


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("--via", "nowhere"), "--via: expected host:port, got 'nowhere' (write host:port or"),
        (("--via", "unix:/x", "-c", "/etc/filterd.toml"), "argument -c/--config: not allowed"),
        (("-c", "/etc/filterd.toml", "--timeout", "5"), "--timeout applies to --via only"),
        (("--via", "unix:/x", "--timeout", "0"), "--timeout: expected a number of seconds"),
    ],
)
def test_a_bad_command_line_defers(args: tuple[str, ...], why: str) -> None:
    command = [sys.executable, "-m", "filterd", "pipe", *args, "-f", "a@x.org", "--", "b@x.org"]
    done = subprocess.run(command, input="", capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == EX_TEMPFAIL
    assert done.stderr.startswith(f"4.3.5 filterd pipe: {why}"), done.stderr


def test_the_client_loads_no_configuration_trio_or_plugins(listener: Listener) -> None:
    code = f"""\
import io, os, sys
from filterd.cli.main import main
read, write = os.pipe()
os.write(write, b"Subject: hi\\n\\nHello.\\n")
os.close(write)
os.dup2(read, 0)
status = main(["pipe", "--via", {listener.unix!r}, "-f", "a@example.net", "--", "m@example.org"])
heavy = ("trio", "pydantic", "filterd.config.load", "filterd.chain", "filterd_example")
print(status, sorted(m for m in sys.modules if m.startswith(heavy)))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.stdout == "0 []\n", done.stderr
    assert len(listener.delivered("m@example.org")) == 1


def test_recipients_with_different_results_defer_them_all(listener: Listener) -> None:
    (listener.root / "mail" / "blocked.example").write_text("not a directory\n")
    done = _pipe(listener.unix, "-f", "a@example.net", "--", "ok@example.org", "x@blocked.example")
    assert done.returncode == EX_TEMPFAIL
    assert done.stderr == "4.5.0 Error: delivery failed for some recipients, try again later\n"
