"""``MailLog``, one component's logger: ``filterd/<component>[pid]: QUEUEID: what, key=value``.

One line per event. The queue id lives in a context variable (trio tasks copy the context), so
every line written while a transaction is open carries it. Peer-supplied text is escaped.
Warnings and errors begin with ``warning:`` and ``error:``, as Postfix's do.

``setup_logging`` sends every line to one destination (``destinations``): stderr (the
default), syslog or the systemd journal, each with the program name ``filterd/<component>``
(``[log] syslog_name`` replaces ``filterd``), so that tools written for Postfix's log read
filterd's.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Protocol, TextIO

from filterd.maillog.destinations import (
    JOURNAL_SOCKET,
    SYSLOG_SOCKET,
    Destination,
    JournalDestination,
    StreamDestination,
    SyslogDestination,
    stderr_is_the_journal,
)
from filterd.maillog.lines import sanitize

queue_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("queue_id", default="NOQUEUE")

_INFO = logging.INFO
_PREFIXES = {logging.WARNING: "warning: ", logging.ERROR: "error: "}
"""What a line at this level begins with, as Postfix's msg_warn and msg_error write them."""


class LogSettings(Protocol):
    """The ``[log]`` settings (``filterd.config.schema.LogConfig``)."""

    @property
    def level(self) -> str: ...

    @property
    def destination(self) -> str: ...

    @property
    def facility(self) -> str: ...

    @property
    def socket(self) -> Path | None: ...

    @property
    def syslog_name(self) -> str: ...


class LineHandler(logging.Handler):
    """The handler ``setup_logging`` installs: every line goes to its destination. Records
    from the ``logging`` module are made into lines here; ``MailLog`` hands it finished lines
    instead (``write``), the same text without a ``LogRecord`` per line: at ``info``
    filterd writes a few lines per message, and that machinery cost more than relaying it."""

    def __init__(self, destination: Destination) -> None:
        super().__init__()
        self.destination = destination

    @property
    def pid(self) -> int:
        return self.destination.pid

    @pid.setter
    def pid(self, pid: int) -> None:
        self.destination.pid = pid

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self.destination.write(_component(record), record.levelno, text)
        except Exception:
            self.handleError(record)

    def write(self, component: str, level: int, text: str) -> None:
        """One finished line; a failure to write is handled as ``emit`` handles it (reported
        on stderr, never raised into the caller)."""
        try:
            self.destination.write(component, level, text)
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": text}))

    def close(self) -> None:
        self.destination.close()
        super().close()


def _component(record: logging.LogRecord) -> str:
    component = getattr(record, "component", None)
    if isinstance(component, str):
        return component
    name = record.name
    return name.removeprefix("filterd.") if name.startswith("filterd.") else "main"


_handler: LineHandler | None = None  # the one setup_logging installed


def _refresh_pid() -> None:
    if _handler is not None:
        _handler.pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def destination_for(settings: LogSettings, stream: TextIO | None = None) -> Destination:
    """The destination ``settings`` name; ``stream`` (default stderr) for ``"stderr"``, and
    for the lines a log socket cannot take. A service whose stderr is the journal's stream
    (systemd's ``JOURNAL_STREAM``) logs to the journal in its native protocol."""
    out = StreamDestination(stream or sys.stderr, settings.syslog_name)
    socket = str(settings.socket) if settings.socket is not None else None
    match settings.destination:
        case "syslog":
            return SyslogDestination(
                socket or SYSLOG_SOCKET, settings.facility, settings.syslog_name, out
            )
        case "journal":
            return JournalDestination(
                socket or JOURNAL_SOCKET, settings.facility, settings.syslog_name, out
            )
        case _ if stream is None and stderr_is_the_journal(sys.stderr):
            return JournalDestination(JOURNAL_SOCKET, settings.facility, settings.syslog_name, out)
        case _:
            return out


class _Level:
    """Settings with nothing but a level: stderr (or a given stream), program name filterd."""

    def __init__(self, level: str) -> None:
        self.level = level
        self.destination = "stderr"
        self.facility = "mail"
        self.socket: Path | None = None
        self.syslog_name = "filterd"


def setup_logging(settings: LogSettings | str = "info", stream: TextIO | None = None) -> None:
    """Send the ``filterd`` loggers' lines where ``settings`` say (``[log]``; a level alone:
    to ``stream``, by default stderr), replacing what an earlier call installed."""
    global _handler
    if isinstance(settings, str):
        settings = _Level(settings)
    handler = LineHandler(destination_for(settings, stream))
    root = logging.getLogger("filterd")
    old = root.handlers[:]
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    root.propagate = False
    _handler = handler
    for previous in old:
        if isinstance(previous, LineHandler):
            previous.close()


class MailLog:
    """A logger for one component (smtpd, smtp, maildir, chain, main)."""

    def __init__(self, component: str) -> None:
        self._logger = logging.getLogger(f"filterd.{component}")
        self._component = component
        self._extra = {"component": component}
        # The logger's answers of isEnabledFor by level: the logging module fills this dict
        # and empties it (in place) whenever a level changes (setLevel, logging.disable).
        # Read here, the check that runs a few times per message costs no call of its own;
        # without it (another Python) every check asks isEnabledFor.
        self._enabled: dict[int, bool] = getattr(self._logger, "_cache", {})

    def enabled_for_info(self) -> bool:
        """``isEnabledFor(INFO)``, from the logger's cache of its answers when it has one."""
        try:
            return self._enabled[_INFO] and not self._logger.disabled
        except KeyError:
            return self._logger.isEnabledFor(_INFO)

    def enabled_for_debug(self) -> bool:
        return self._logger.isEnabledFor(logging.DEBUG)

    def _log(self, level: int, message: str, fields: dict[str, object]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        if fields:
            message += _fields(fields)
        self._emit(level, f"{_PREFIXES.get(level, '')}{queue_id_var.get()}: {message}")

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
            try:  # LineHandler.write, without a call of its own (one per line)
                handler.destination.write(self._component, level, line)
            except Exception:
                handler.handleError(logging.makeLogRecord({"msg": line}))
        else:
            logger.log(level, "%s", line, extra=self._extra)

    def line(self, message: str) -> None:
        """An info line with the queue id, its text finished by the caller (the per-message
        lines: no fields to format)."""
        if self.enabled_for_info():
            self._emit(_INFO, f"{queue_id_var.get()}: {message}")

    def plain(self, message: str, **fields: object) -> None:
        """A line without the queue id prefix (connect/disconnect, start-up)."""
        if not self.enabled_for_info():
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
        if self.enabled_for_info():
            self._emit(logging.INFO, f"connect from {sanitize(peer)}")

    def disconnect(self, peer: str, **fields: object) -> None:
        """``disconnect from <peer>``: the connection ended (``fields``: what it did)."""
        if self.enabled_for_info():
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
        self._logger.error(
            "error: %s: %s\n%s", queue_id_var.get(), message, indented, extra=self._extra
        )

    def debug(self, message: str, **fields: object) -> None:
        self._log(logging.DEBUG, message, fields)

    def exception(self, message: str, **fields: object) -> None:
        """An unexpected failure: one line at ERROR, the traceback at DEBUG only."""
        self._log(logging.ERROR, message, fields)
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("traceback", exc_info=True, extra=self._extra)


def _fields(fields: dict[str, object]) -> str:
    return ", " + ", ".join([f"{k}={sanitize(v)}" for k, v in fields.items()])
