"""Where log lines go (``filterd.maillog.destinations``): what a syslog daemon and journald get
on their sockets, byte for byte, read here from private datagram sockets in place of /dev/log
and /run/systemd/journal/socket; and that a line no socket takes still reaches stderr."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from filterd.config.schema import LogConfig
from filterd.maillog import MailLog, queue_id_var, setup_logging
from filterd.maillog import destinations as dest
from filterd.maillog import logger as maillog
from filterd.maillog.destinations import (
    JournalDestination,
    StreamDestination,
    SyslogDestination,
    stderr_is_the_journal,
)

PID = os.getpid()
SYSLOG_STAMP = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 123]\d \d\d:\d\d:\d\d"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (a unix socket's path has at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="fml-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def listening(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    got = []
    while True:
        try:
            got.append(sock.recv(65536))
        except BlockingIOError:
            return got


def parse_journal(datagram: bytes) -> dict[str, bytes]:
    """The native protocol's fields: ``KEY=value\\n``, or ``KEY\\n`` + 64-bit LE length +
    value + ``\\n`` for a value with a newline (systemd's JOURNAL_NATIVE_PROTOCOL)."""
    fields: dict[str, bytes] = {}
    rest = datagram
    while rest:
        head, newline, tail = rest.partition(b"\n")
        assert newline, datagram
        if b"=" in head:
            key, _, value = head.partition(b"=")
            rest = tail
        else:
            key = head
            (size,) = struct.unpack("<Q", tail[:8])
            value = tail[8 : 8 + size]
            assert tail[8 + size : 9 + size] == b"\n", datagram
            rest = tail[9 + size :]
        assert key.decode() not in fields
        fields[key.decode()] = value
    return fields


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger("filterd")
    saved = (root.handlers[:], root.level, root.propagate, maillog._handler)
    yield
    root.handlers[:], root.level, root.propagate, maillog._handler = saved


def test_syslog_datagrams_are_what_syslog3_sends(short_dir: Path) -> None:
    """``<PRI>Mmm dd hh:mm:ss filterd/smtpd[pid]: text``, PRI = facility * 8 + severity."""
    server = listening(short_dir / "log")
    syslog = SyslogDestination(
        str(short_dir / "log"), "mail", "filterd", StreamDestination(io.StringIO())
    )
    syslog.write("smtpd", logging.INFO, "4B2D0A71C3: client=unknown[192.0.2.1]")
    syslog.write("smtp", logging.WARNING, "warning: NOQUEUE: connect to 192.0.2.7:25: refused")
    syslog.write("chain", logging.ERROR, "error: 4B2D0A71C3: plugin failed")
    syslog.write("chain", logging.DEBUG, "4B2D0A71C3: spf: on_rcpt continue")
    got = [server.recv(65536).decode() for _ in range(4)]
    heads = [(2 * 8 + 6, "smtpd"), (2 * 8 + 4, "smtp"), (2 * 8 + 3, "chain"), (2 * 8 + 7, "chain")]
    texts = [
        "4B2D0A71C3: client=unknown[192.0.2.1]",
        "warning: NOQUEUE: connect to 192.0.2.7:25: refused",
        "error: 4B2D0A71C3: plugin failed",
        "4B2D0A71C3: spf: on_rcpt continue",
    ]
    for datagram, (pri, component), text in zip(got, heads, texts, strict=True):
        pattern = rf"<{pri}>{SYSLOG_STAMP} filterd/{component}\[{PID}\]: {re.escape(text)}"
        assert re.fullmatch(pattern, datagram), datagram


def test_the_facility_and_the_program_name_are_settings(short_dir: Path) -> None:
    server = listening(short_dir / "log")
    syslog = SyslogDestination(str(short_dir / "log"), "local3", "filterd-in")
    syslog.write("smtpd", logging.INFO, "connect from unknown[192.0.2.1]")
    datagram = server.recv(65536).decode()
    assert re.fullmatch(
        rf"<{19 * 8 + 6}>{SYSLOG_STAMP} filterd-in/smtpd\[{PID}\]: "
        r"connect from unknown\[192\.0\.2\.1\]",
        datagram,
    )


def test_journal_datagrams_carry_the_fields_journalctl_shows(short_dir: Path) -> None:
    server = listening(short_dir / "socket")
    journal = JournalDestination(str(short_dir / "socket"), "mail", "filterd")
    journal.write("smtpd", logging.WARNING, "warning: 4B2D0A71C3: odd")
    journal.write("chain", logging.ERROR, "error: 4B2D0A71C3: boom\n  Traceback:\n  ValueError")
    first, second = (parse_journal(server.recv(65536)) for _ in range(2))
    assert first == {
        "PRIORITY": b"4",
        "SYSLOG_FACILITY": b"2",
        "SYSLOG_IDENTIFIER": b"filterd/smtpd",
        "SYSLOG_PID": str(PID).encode(),
        "MESSAGE": b"warning: 4B2D0A71C3: odd",
    }
    assert second["MESSAGE"] == b"error: 4B2D0A71C3: boom\n  Traceback:\n  ValueError"
    assert second["PRIORITY"] == b"3"
    assert second["SYSLOG_IDENTIFIER"] == b"filterd/chain"


def test_text_that_is_not_utf8_is_escaped_not_dropped(short_dir: Path) -> None:
    server = listening(short_dir / "socket")
    journal = JournalDestination(str(short_dir / "socket"))
    journal.write("smtpd", logging.INFO, "to=<b\udcffr@example.org>")
    assert parse_journal(server.recv(65536))["MESSAGE"] == b"to=<b\\udcffr@example.org>"


def test_without_a_log_daemon_lines_go_to_stderr_until_it_is_back(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dest, "RETRY_INTERVAL", 0.0)
    stderr = io.StringIO()
    path = short_dir / "log"
    syslog = SyslogDestination(str(path), "mail", "filterd", StreamDestination(stderr, "filterd"))
    syslog.write("smtpd", logging.INFO, "ABC: client=one")
    syslog.write("smtpd", logging.INFO, "ABC: client=two")
    server = listening(path)  # the daemon starts
    syslog.write("smtpd", logging.INFO, "ABC: client=three")
    assert server.recv(65536).decode().endswith(f"filterd/smtpd[{PID}]: ABC: client=three")
    server.close()
    path.unlink()  # the daemon stops; then a new one on the same path
    syslog.write("smtpd", logging.INFO, "ABC: client=four")
    server = listening(path)
    syslog.write("smtpd", logging.INFO, "ABC: client=five")
    assert server.recv(65536).decode().endswith("ABC: client=five")
    told = [line.split(": ", 1)[1] for line in stderr.getvalue().splitlines()]
    assert told == [
        f"warning: cannot log to syslog {path}: No such file or directory; "
        "writing to stderr until it works again",
        "ABC: client=one",
        "ABC: client=two",
        f"logging to syslog {path} again",
        f"warning: cannot log to syslog {path}: No such file or directory; "
        "writing to stderr until it works again",
        "ABC: client=four",
        f"logging to syslog {path} again",
    ]


def test_a_daemon_that_falls_behind_loses_no_line(short_dir: Path) -> None:
    """A full receive queue would block the mail: those lines go to stderr instead."""
    server = listening(short_dir / "socket")
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stderr = io.StringIO()
    journal = JournalDestination(str(short_dir / "socket"), fallback=StreamDestination(stderr))
    for n in range(2000):
        journal.write("smtpd", logging.INFO, f"line {n}")
    received = [parse_journal(d)["MESSAGE"].decode() for d in drain(server)]
    diverted = [line.split(": ", 1)[1] for line in stderr.getvalue().splitlines()]
    assert diverted[0].startswith("warning: cannot log to the journal ")
    assert 0 < len(received) < 2000
    assert sorted(received + diverted[1:], key=lambda line: int(line.split()[1])) == [
        f"line {n}" for n in range(2000)
    ]


def test_a_slow_daemon_gets_every_line_in_order(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its queue holds few datagrams (net.unix.max_dgram_qlen, 10 by default): a line that
    finds it full waits for room rather than leaving the daemon."""
    monkeypatch.setattr(dest, "FULL_WAIT", 30.0)  # a bound, never reached while it reads
    server = listening(short_dir / "socket")
    got: list[bytes] = []

    def read_slowly() -> None:
        for _ in range(200):
            got.append(server.recv(65536))
            time.sleep(0.0005)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    stderr = io.StringIO()
    journal = JournalDestination(str(short_dir / "socket"), fallback=StreamDestination(stderr))
    for n in range(200):
        journal.write("smtpd", logging.INFO, f"line {n}")
    reader.join()
    assert [parse_journal(d)["MESSAGE"] for d in got] == [f"line {n}".encode() for n in range(200)]
    assert stderr.getvalue() == ""


def test_stderr_lines_read_as_rsyslog_writes_its_files(tmp_path: Path) -> None:
    """One write per line, unbuffered, to the file descriptor."""
    with (tmp_path / "out").open("w") as out:
        stream = StreamDestination(out, "filterd", hostname="mx1")
        stream.write("smtpd", logging.INFO, "ABC: client=unknown[192.0.2.1]")
        stream.write("smtp", logging.WARNING, "warning: ABC: odd")
        written = (tmp_path / "out").read_text()  # before any flush or close
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d"
    assert re.fullmatch(
        rf"{stamp} mx1 filterd/smtpd\[{PID}\]: ABC: client=unknown\[192\.0\.2\.1\]\n"
        rf"{stamp} mx1 filterd/smtp\[{PID}\]: warning: ABC: odd\n",
        written,
    ), written


@pytest.mark.parametrize(
    ("nanoseconds", "fraction"),
    [
        (1_764_785_491_000_042_999, "000042"),  # zero-padded, truncated as rsyslog does
        (1_764_785_491_999_999_999, "999999"),  # still the second it began in
        (1_764_785_492_000_000_000, "000000"),  # the next second's stamp, made anew
    ],
)
def test_a_stamps_microseconds_are_six_digits_of_its_own_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nanoseconds: int, fraction: str
) -> None:
    with (tmp_path / "out").open("w") as out:
        stream = StreamDestination(out, "filterd", hostname="mx1")
        stream.write("smtpd", logging.INFO, "warm-up")  # a stamp of the real second cached
        monkeypatch.setattr(dest.time, "time_ns", lambda: nanoseconds)
        stream.write("smtpd", logging.INFO, "ABC: line")
    second = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(nanoseconds // 10**9))
    last = (tmp_path / "out").read_text().splitlines()[-1]
    assert last.startswith(f"{second}.{fraction}"), last
    assert last.endswith(f" mx1 filterd/smtpd[{PID}]: ABC: line"), last


def test_journal_stream_is_recognized_by_device_and_inode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "out").open("w") as out:
        info = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert stderr_is_the_journal(out)
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino + 1}")
        assert not stderr_is_the_journal(out)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not stderr_is_the_journal(out)
    assert not stderr_is_the_journal(io.StringIO())


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging_sends_mail_lines_and_records_where_log_says(short_dir: Path) -> None:
    server = listening(short_dir / "log")
    settings = LogConfig(destination="syslog", socket=short_dir / "log", facility="daemon")
    setup_logging(settings)
    token = queue_id_var.set("4B2D0A71C3")
    try:
        MailLog("smtpd").line("client=unknown[192.0.2.1]")
        MailLog("smtp").warning("connect to 192.0.2.7:25: refused")
        logging.getLogger("filterd.chain").error("a record, %s", "formatted")
        MailLog("smtpd").debug("not at info")
    finally:
        queue_id_var.reset(token)
    got = [d.decode() for d in drain(server)]
    assert [re.sub(rf"{SYSLOG_STAMP} ", "", d) for d in got] == [
        f"<30>filterd/smtpd[{PID}]: 4B2D0A71C3: client=unknown[192.0.2.1]",
        f"<28>filterd/smtp[{PID}]: warning: 4B2D0A71C3: connect to 192.0.2.7:25: refused",
        f"<27>filterd/chain[{PID}]: a record, formatted",
    ]
    handler = logging.getLogger("filterd").handlers[0]
    setup_logging("info", io.StringIO())  # the next setup closes this one's socket
    assert isinstance(handler, maillog.LineHandler)
    assert isinstance(handler.destination, SyslogDestination)
    assert handler.destination._socket._sock is None


def test_a_closed_stream_is_never_written_through_its_old_descriptor(tmp_path: Path) -> None:
    """Once the stream is closed its descriptor's number is free for the next file opened:
    lines must fail (and be reported) rather than land in that file."""
    out = (tmp_path / "out").open("w")
    stream = StreamDestination(out)
    out.close()
    with (tmp_path / "other").open("w") as other:
        with pytest.raises(ValueError, match="closed file"):
            stream.write("smtpd", logging.INFO, "ABC: client=unknown[192.0.2.1]")
        assert other.fileno() == stream._fd  # the number was reused indeed
    assert (tmp_path / "other").read_text() == ""
