"""Where finished log lines go: a stream (stderr), syslog, or the systemd journal.

Each destination gets a line's component (``smtpd``), its level and its text, and adds what its
reader expects, the program name as Postfix's ``syslog_name`` makes it (``filterd/smtpd``):

- ``StreamDestination``: ``2026-01-31T12:00:00.123456+01:00 host filterd/smtpd[4242]: text``,
  the form rsyslog writes to its files, which pflogsumm reads;
- ``SyslogDestination``: a datagram to ``/dev/log`` as syslog(3) sends it, ``<22>Jan 31
  12:00:00 filterd/smtpd[4242]: text`` (priority = facility * 8 + severity);
- ``JournalDestination``: a datagram in the journal's native protocol to
  ``/run/systemd/journal/socket``: ``MESSAGE``, ``PRIORITY``, ``SYSLOG_FACILITY``,
  ``SYSLOG_IDENTIFIER`` (``filterd/smtpd``) and ``SYSLOG_PID`` fields.

A line the socket cannot take (no syslog daemon, its queue full for longer than
``FULL_WAIT``, a line too long for one datagram) goes to stderr instead: it is not lost, and
the failure is reported there once.
The cost per line is the text's formatting and one system call: the timestamps are made once
a second, and everything else in a line's head once per component and level.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TextIO, TypeVar

FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{n}": 16 + n for n in range(8)},
}
"""syslog(3)'s facilities by name (``[log] facility``)."""

SYSLOG_SOCKET = "/dev/log"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
RETRY_INTERVAL = 1.0
"""Seconds between attempts to reach a log socket that failed (lines go to stderr meanwhile)."""
FULL_WAIT = 0.05
"""Seconds a line waits for room in a log daemon's full queue before it goes to stderr."""


def severity(level: int) -> int:
    """syslog's severity for a ``logging`` level: 7 debug, 6 info, 4 warning, 3 error, 2 crit."""
    if level < logging.INFO:
        return 7
    if level < logging.WARNING:
        return 6
    if level < logging.ERROR:
        return 4
    if level < logging.CRITICAL:
        return 3
    return 2


def short_hostname() -> str:
    """The host's name as syslog daemons write it in a line (without the domain)."""
    return socket.gethostname().partition(".")[0] or "localhost"


class StreamDestination:
    """Lines to a stream, each with an RFC 3339 timestamp and the host's name. A stream with a
    file descriptor (stderr) is written with one ``os.write`` per line, unbuffered; any other
    (a ``StringIO`` in a test) through its ``write`` and ``flush``."""

    def __init__(self, stream: TextIO, name: str = "filterd", hostname: str | None = None) -> None:
        self.stream = stream
        self.name = name
        self.hostname = hostname or short_hostname()
        self._fd = _fileno(stream)
        self._file = _file_of(stream)
        self._lock = threading.Lock()
        self._start = self._end = 0  # the second the stamp is for, in ns since the epoch
        self._stamp = ""
        self._zone = ""
        self._heads: dict[str, str] = {}  # component -> " host filterd/component[pid]: "
        self.pid = os.getpid()

    @property
    def pid(self) -> int:
        return self._pid

    @pid.setter
    def pid(self, pid: int) -> None:
        self._pid = pid
        self._heads.clear()

    def write(self, component: str, level: int, text: str) -> None:
        del level  # a stream's line says its level in its text ("warning: ...")
        now = time.time_ns()
        if not self._start <= now < self._end:  # a new second (or the clock went back)
            self._new_second(now)
        micro = (now - self._start) // 1000  # a small integer: its digits from a table
        try:
            head = self._heads[component]
        except KeyError:
            head = self._heads[component] = (
                f"{self._zone} {self.hostname} {self.name}/{component}[{self._pid}]: "
            )
        line = f"{self._stamp}{_DIGITS[micro // 1000]}{_DIGITS[micro % 1000]}{head}{text}\n"
        fd = self._fd
        if fd is not None:
            if self._file.closed:  # its descriptor's number may be another file's by now
                raise ValueError("I/O operation on closed file")
            try:
                data = line.encode()
            except UnicodeEncodeError:
                data = _encode(line)
            written = os.write(fd, data)
            if written < len(data):  # a short write (a signal, a full pipe): the rest
                _write_all(fd, data[written:])
        else:
            with self._lock:
                self.stream.write(line)
                self.stream.flush()

    def _new_second(self, now: int) -> None:
        """The stamp of the second ``now`` (ns) is in, up to its fraction, and the heads when
        the time zone's offset changed (they begin with it)."""
        second = now // 1_000_000_000
        local = time.localtime(second)
        self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S.", local)
        zone = _zone(local.tm_gmtoff)
        if zone != self._zone:
            self._zone = zone
            self._heads.clear()
        self._start = second * 1_000_000_000
        self._end = self._start + 1_000_000_000

    def close(self) -> None:
        return None  # stderr stays open


class _Datagrams:
    """A unix datagram socket to a log daemon, connected when first needed and again after a
    failure (a restarted daemon has a new socket). A daemon whose queue is full (it holds
    ``net.unix.max_dgram_qlen`` datagrams, 10 unless systemd raised it to 512) gets up to
    ``FULL_WAIT`` to take the line; one that still has no room is congested: until a line goes
    through again, lines go to ``fallback`` at once, so that a stuck daemon never holds up the
    mail."""

    def __init__(self, path: str, what: str, fallback: Callable[[str, int, str], None]) -> None:
        self.path = path
        self.what = what
        self.fallback = fallback
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._congested = False
        self._failure: str | None = None  # reported on stderr, until the socket works again

    def send(self, data: bytes, component: str, level: int, text: str) -> None:
        for _ in range(2):  # a second time on a new connection
            sock = self._sock or self._connect()
            if sock is None:
                break
            try:
                sock.send(data)
            except BlockingIOError:
                if not self._send_when_room(sock, data):
                    break
            except OSError as exc:
                if exc.errno in (errno.EMSGSIZE, errno.ENOBUFS):  # a line too long
                    self._report(f"{self.path}: {_reason(exc)}")
                    break
                self._close()  # the daemon went away: connect again
                continue
            if self._failure is not None:
                self._recovered()
            return
        self.fallback(component, level, text)

    def _send_when_room(self, sock: socket.socket, data: bytes) -> bool:
        if not self._congested:
            room = select.poll()
            room.register(sock, select.POLLOUT)
            if room.poll(FULL_WAIT * 1000):
                try:
                    sock.send(data)
                    self._congested = False
                    return True
                except OSError:
                    pass
        self._congested = True
        self._report(f"{self.path}: its queue stays full")
        return False

    def _connect(self) -> socket.socket | None:
        now = time.monotonic()
        if now < self._retry_at:
            return None
        with self._lock:  # a plugin's thread may log at the same time
            if self._sock is None:
                self._sock = self._open(now)
            return self._sock

    def _open(self, now: float) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            self._retry_at = now + RETRY_INTERVAL
            self._report(f"{self.path}: {_reason(exc)}")
            return None
        return sock

    def _report(self, failure: str) -> None:
        if failure != self._failure:
            self._failure = failure
            self.fallback(
                "main",
                logging.WARNING,
                f"warning: cannot log to {self.what} {failure}; "
                f"writing to stderr until it works again",
            )

    def _recovered(self) -> None:
        self._failure = None
        self._congested = False
        self.fallback("main", logging.INFO, f"logging to {self.what} {self.path} again")

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self._close()


Head = TypeVar("Head")


class _DatagramDestination(Generic[Head]):
    """What the syslog and journal destinations share: the datagram socket, the stream a line
    goes to when the socket cannot take it, and per-(component, level) heads that name the
    process id (cleared when it changes: after a fork)."""

    what = ""  # for the log lines about the socket

    def __init__(
        self, path: str, facility: str, name: str, fallback: StreamDestination | None
    ) -> None:
        self.name = name
        self.facility = FACILITIES[facility]
        self.fallback = fallback or StreamDestination(sys.stderr, name)
        self._socket = _Datagrams(path, self.what, self.fallback.write)
        self._heads: dict[tuple[str, int], Head] = {}
        self.pid = os.getpid()

    @property
    def pid(self) -> int:
        return self._pid

    @pid.setter
    def pid(self, pid: int) -> None:
        self._pid = pid
        self._heads.clear()
        self.fallback.pid = pid

    def close(self) -> None:
        self._socket.close()


class SyslogDestination(_DatagramDestination[tuple[str, str]]):
    """Lines to a syslog daemon's datagram socket, as syslog(3) formats them."""

    what = "syslog"

    def __init__(
        self,
        path: str = SYSLOG_SOCKET,
        facility: str = "mail",
        name: str = "filterd",
        fallback: StreamDestination | None = None,
    ) -> None:
        self._second = -1
        self._stamp = ""
        super().__init__(path, facility, name, fallback)  # heads: ("<22>", " prog[pid]: ")

    def write(self, component: str, level: int, text: str) -> None:
        second = int(time.time())
        if second != self._second:
            local = time.localtime(second)
            month = _MONTHS[local.tm_mon - 1]  # not %b: the locale's name
            self._stamp = f"{month} {local.tm_mday:2d} {time.strftime('%H:%M:%S', local)}"
            self._second = second
        head = self._heads.get((component, level))
        if head is None:
            head = self._heads[component, level] = (
                f"<{self.facility * 8 + severity(level)}>",
                f" {self.name}/{component}[{self._pid}]: ",
            )
        self._socket.send(_encode(f"{head[0]}{self._stamp}{head[1]}{text}"), component, level, text)


class JournalDestination(_DatagramDestination[bytes]):
    """Lines to systemd-journald in its native protocol (one datagram of fields per line)."""

    what = "the journal"

    def __init__(
        self,
        path: str = JOURNAL_SOCKET,
        facility: str = "mail",
        name: str = "filterd",
        fallback: StreamDestination | None = None,
    ) -> None:
        super().__init__(path, facility, name, fallback)  # heads: the fields before MESSAGE

    def write(self, component: str, level: int, text: str) -> None:
        head = self._heads.get((component, level))
        if head is None:
            head = self._heads[component, level] = _encode(
                f"PRIORITY={severity(level)}\nSYSLOG_FACILITY={self.facility}\n"
                f"SYSLOG_IDENTIFIER={self.name}/{component}\nSYSLOG_PID={self._pid}\n"
            )
        message = _encode(text)
        if b"\n" in message:  # a traceback: the field's length-prefixed form
            data = head + b"MESSAGE\n" + struct.pack("<Q", len(message)) + message + b"\n"
        else:
            data = head + b"MESSAGE=" + message + b"\n"
        self._socket.send(data, component, level, text)


Destination = StreamDestination | SyslogDestination | JournalDestination


def stderr_is_the_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal's stream for this service: systemd sets
    ``JOURNAL_STREAM=device:inode`` of it, the documented sign that a service may switch to
    the native protocol (so that each line keeps its own program name and priority)."""
    expected = os.environ.get("JOURNAL_STREAM")
    fd = _fileno(stream)
    if not expected or fd is None:
        return False
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


def _zone(offset: int) -> str:
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


_DIGITS = tuple(f"{n:03d}" for n in range(1000))
"""Three digits of a stamp's microseconds: two lookups instead of formatting an integer."""


def _file_of(stream: TextIO) -> _Closable:
    """What to ask whether ``stream`` is closed: a text file's ``closed`` asks its buffer,
    which asks the raw file; the raw file is closed with them, so ask it directly."""
    raw = getattr(getattr(stream, "buffer", None), "raw", None)
    return raw if isinstance(raw, io.FileIO) else stream


class _Closable(Protocol):
    @property
    def closed(self) -> bool: ...


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None  # io.StringIO raises io.UnsupportedOperation, an OSError


def _encode(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # surrogates: bytes that were not UTF-8 in the first place
        return text.encode("utf-8", "backslashreplace")


def _write_all(fd: int, data: bytes) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
