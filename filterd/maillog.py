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
import sys
import traceback
from typing import Protocol

queue_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("queue_id", default="NOQUEUE")

_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(0x20), 0x7F]}


def sanitize(text: object) -> str:
    """Make peer-controlled text safe for one log line (no CR/LF/controls)."""
    return str(text).translate(_ESCAPES)


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


class _QueueIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.queue_id = queue_id_var.get()
        return True


def setup_logging(level: str = "info", stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s filterd/%(component)s[%(process)d]: %(message)s",
            defaults={"component": "main"},
        )
    )
    handler.addFilter(_QueueIdFilter())
    root = logging.getLogger("filterd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class MailLog:
    """A logger for one component (smtpd, relay, maildir, chain, main)."""

    def __init__(self, component: str) -> None:
        self._logger = logging.getLogger(f"filterd.{component}")
        self._extra = {"component": component}

    def enabled_for_info(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def enabled_for_debug(self) -> bool:
        return self._logger.isEnabledFor(logging.DEBUG)

    def _log(self, level: int, message: str, fields: dict[str, object]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        if fields:
            message += ", " + ", ".join(f"{k}={sanitize(v)}" for k, v in fields.items())
        self._logger.log(level, "%s: %s", queue_id_var.get(), message, extra=self._extra)

    def plain(self, message: str, **fields: object) -> None:
        """A line without the queue id prefix (connect/disconnect, start-up)."""
        if fields:
            message += ", " + ", ".join(f"{k}={sanitize(v)}" for k, v in fields.items())
        self._logger.info("%s", message, extra=self._extra)

    def connect(self, peer: str) -> None:
        """``connect from <peer>``: a client connected (no queue id, as Postfix logs it)."""
        self.plain(f"connect from {sanitize(peer)}")

    def disconnect(self, peer: str, **fields: object) -> None:
        """``disconnect from <peer>``: the connection ended (``fields``: what it did)."""
        self.plain(f"disconnect from {sanitize(peer)}", **fields)

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
            message += ", " + ", ".join(f"{k}={sanitize(v)}" for k, v in fields.items())
        self._logger.error("%s: %s\n%s", queue_id_var.get(), message, indented, extra=self._extra)

    def debug(self, message: str, **fields: object) -> None:
        self._log(logging.DEBUG, message, fields)

    def exception(self, message: str, **fields: object) -> None:
        """An unexpected failure: one line at ERROR, the traceback at DEBUG only."""
        self._log(logging.ERROR, message, fields)
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("traceback", exc_info=True, extra=self._extra)
