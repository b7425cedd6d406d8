"""Postfix-style log lines: ``filterd/<component>[pid]: QUEUEID: what, key=value, ...``.

One line per event. The queue id lives in a context variable (trio tasks copy the context), so
every line written while a transaction is open carries it. Peer-supplied text is escaped.

The lines every front door writes as Postfix's smtpd does, so that admins' log parsers read
them alike: ``connect from``/``disconnect from`` (``MailLog.connect``/``MailLog.disconnect``)
and a refused step (``smtpd_line``).
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
import traceback
from typing import Protocol, TextIO

queue_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("queue_id", default="NOQUEUE")

_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(0x20), 0x7F]}


def sanitize(text: object) -> str:
    """Make peer-controlled text safe for one log line (no CR/LF/controls)."""
    line = str(text)
    # Printable text (the usual case) has none of the characters escaped: no translate.
    return line if line.isprintable() else line.translate(_ESCAPES)


class Peer(Protocol):
    """What ``smtpd_line`` says about the SMTP client (``filterd.model.envelope.Client``)."""

    @property
    def protocol(self) -> str: ...

    @property
    def helo(self) -> str | None: ...

    def describe(self) -> str: ...


def smtpd_line(
    what: str,
    step: str,
    peer: Peer,
    answer: object,
    *,
    sender: str | None,
    rcpt: str | None = None,
) -> str:
    """Postfix smtpd's line for an answered step, peer-supplied text escaped, e.g.
    ``reject: RCPT from host[addr]: 550 5.7.1 text; from=<a@b> to=<c@d> proto=ESMTP helo=<h>``.
    ``what``: ``reject`` (or another word for what was answered); ``sender`` None (no MAIL
    yet) leaves ``from=<>`` out, ``rcpt`` None leaves ``to=<>`` out."""
    mail = f" from=<{sender}>" if sender is not None else ""
    to = f" to=<{rcpt}>" if rcpt is not None else ""
    return sanitize(
        f"{what}: {step} from {peer.describe()}: {answer};{mail}{to}"
        f" proto={peer.protocol} helo=<{peer.helo or ''}>"
    )


FORMAT = "%(asctime)s filterd/%(component)s[%(process)d]: %(message)s"
"""Every line: ``2026-01-31 12:00:00,123 filterd/smtpd[4242]: QUEUEID: text``."""


class _QueueIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.queue_id = queue_id_var.get()
        return True


class LineHandler(logging.StreamHandler[TextIO]):
    """The handler ``setup_logging`` installs. Records from the ``logging`` module are
    formatted with ``FORMAT``; ``MailLog`` hands it finished lines instead (``write``),
    the same text without a ``LogRecord``, a ``Formatter`` and a ``getpid()`` per line: at
    ``info`` filterd writes a few lines per message, and that machinery cost more than
    relaying the message."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(logging.Formatter(FORMAT, defaults={"component": "main"}))
        self.addFilter(_QueueIdFilter())
        self._second = -1
        self._stamp = ""
        self._prefixes: dict[str, str] = {}  # component -> " filterd/component[pid]: "
        self.pid = os.getpid()

    @property
    def pid(self) -> int:
        return self._pid

    @pid.setter
    def pid(self, pid: int) -> None:
        self._pid = pid
        self._prefixes.clear()

    def write(self, component: str, text: str) -> None:
        """One line, as ``FORMAT`` makes it; a failure to write is handled as ``emit``
        handles it (reported on stderr, never raised into the caller)."""
        now = time.time()
        second = int(now)
        if second != self._second:
            # logging.Formatter's default asctime, computed once a second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            self._second = second
        prefix = self._prefixes.get(component)
        if prefix is None:
            prefix = self._prefixes[component] = f" filterd/{component}[{self._pid}]: "
        line = f"{self._stamp},{int((now - second) * 1000):03d}{prefix}{text}\n"
        try:
            with self.lock:  # type: ignore[union-attr]
                self.stream.write(line)
                self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": text}))


_handler: LineHandler | None = None  # the one setup_logging installed


def _refresh_pid() -> None:
    if _handler is not None:
        _handler.pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def setup_logging(level: str = "info", stream: TextIO | None = None) -> None:
    global _handler
    handler = LineHandler(stream or sys.stderr)
    root = logging.getLogger("filterd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    _handler = handler


class MailLog:
    """A logger for one component (smtpd, relay, maildir, chain, main)."""

    def __init__(self, component: str) -> None:
        self._logger = logging.getLogger(f"filterd.{component}")
        self._component = component
        self._extra = {"component": component}

    def enabled_for_info(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def enabled_for_debug(self) -> bool:
        return self._logger.isEnabledFor(logging.DEBUG)

    def _log(self, level: int, message: str, fields: dict[str, object]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        if fields:
            message += _fields(fields)
        self._emit(level, f"{queue_id_var.get()}: {message}")

    def _emit(self, level: int, line: str) -> None:
        """Hand a finished line to the handler ``setup_logging`` installed when the record
        would reach that handler and nothing else (no handler or filter of the component's
        own, the ``filterd`` logger as ``setup_logging`` left it); else log it."""
        logger = self._logger
        handler = _handler
        if (
            handler is not None
            and not logger.handlers
            and not logger.filters
            and logger.propagate
            and (parent := logger.parent) is not None
            and not parent.filters
            and len(parent.handlers) == 1
            and parent.handlers[0] is handler
        ):
            handler.write(self._component, line)
        else:
            logger.log(level, "%s", line, extra=self._extra)

    def line(self, message: str) -> None:
        """An info line with the queue id, its text finished by the caller (the per-message
        lines: no fields to format)."""
        if self._logger.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, f"{queue_id_var.get()}: {message}")

    def plain(self, message: str, **fields: object) -> None:
        """A line without the queue id prefix (connect/disconnect, start-up)."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        if fields:
            message += _fields(fields)
        self._emit(logging.INFO, message)

    def plain_warning(self, message: str) -> None:
        """``warning: <message>`` without the queue id, escaped, as Postfix writes a warning
        about a client (``warning: host[addr]: SASL PLAIN authentication failed: ...``)."""
        if self._logger.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, f"warning: {sanitize(message)}")

    def connect(self, peer: str) -> None:
        """``connect from <peer>``: a client connected (no queue id, as Postfix logs it)."""
        if self._logger.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, f"connect from {sanitize(peer)}")

    def disconnect(self, peer: str, **fields: object) -> None:
        """``disconnect from <peer>``: the connection ended (``fields``: what it did)."""
        if self._logger.isEnabledFor(logging.INFO):
            line = f"disconnect from {sanitize(peer)}"
            self._emit(logging.INFO, line + _fields(fields) if fields else line)

    def info(self, message: str, **fields: object) -> None:
        self._log(logging.INFO, message, fields)

    def warning(self, message: str, **fields: object) -> None:
        self._log(logging.WARNING, message, fields)

    def error(self, message: str, **fields: object) -> None:
        self._log(logging.ERROR, message, fields)

    def traceback(self, message: str, exc: BaseException, **fields: object) -> None:
        """An ERROR line followed by ``exc``'s traceback: for a failure someone has to debug
        (a plugin that raised), once per incident, not once per message. The traceback's lines
        are indented and the exception's text is escaped (it often quotes what a peer sent), so
        nothing in it reads as a line of its own."""
        if not self._logger.isEnabledFor(logging.ERROR):
            return
        frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip("\n")
        last = f"{type(exc).__qualname__}: {sanitize(exc)}" if str(exc) else type(exc).__qualname__
        indented = "\n".join(f"  {line}" for line in ["Traceback:", *frames.split("\n"), last])
        if fields:
            message += _fields(fields)
        self._logger.error("%s: %s\n%s", queue_id_var.get(), message, indented, extra=self._extra)

    def debug(self, message: str, **fields: object) -> None:
        self._log(logging.DEBUG, message, fields)

    def exception(self, message: str, **fields: object) -> None:
        """An unexpected failure: one line at ERROR, the traceback at DEBUG only."""
        self._log(logging.ERROR, message, fields)
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("traceback", exc_info=True, extra=self._extra)


def _fields(fields: dict[str, object]) -> str:
    return ", " + ", ".join([f"{k}={sanitize(v)}" for k, v in fields.items()])
