"""The quarantine: a Maildir that keeps messages out of delivery, and what can be done with them.

The SMTP proxy stores a message with a Quarantine verdict here (``store``): fsynced into
``new/`` with its record (``quarantine_file``) before the client gets its 250; if that fails
the client gets a 4xx and keeps the message.

The administrator's side (``filterd quarantine``, and the server's expiry): list the messages,
find one by its ID, hold it locked while it is released or deleted, expire the old ones. An ID
is the Maildir name up to its first ``,`` or ``:`` (``1718000000.M412P4242Q7.mx``): it is only
ever compared with the names the directory lists, never made into a path, so no ID reaches a
file outside the quarantine. Each change is one log line, with the message's queue id.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import trio

from filterd.config.types import format_duration
from filterd.delivery.maildir import _fsync_dir, unique_name, write_to_maildirs
from filterd.delivery.quarantine_file import (
    QuarantineRecord,
    StoredRecipient,
    encode_record,
    encode_record_again,
    read_record,
)
from filterd.errors import FilterdError
from filterd.maillog import MailLog, queue_id_var, sanitize
from filterd.model import replies
from filterd.model.envelope import Transaction
from filterd.model.reply import Reply
from filterd.model.spool import READ_CHUNK, Spool

__all__ = [
    "BadId",
    "HeldMessage",
    "MessageBusy",
    "NoSuchMessage",
    "QuarantineStore",
    "QuarantinedMessage",
    "expire_periodically",
]

log = MailLog("quarantine")

_FOLDERS = ("new", "cur")
_ID_END = re.compile(r"[,:]")
_BAD_ID = re.compile(r"[\x00-\x20/,:\x7f]")


class QuarantineError(FilterdError):
    """An ID that cannot be acted on; ``str()`` says why."""


class BadId(QuarantineError):
    """Not something an ID can be (a path, an empty string ...)."""


class NoSuchMessage(QuarantineError):
    """No message has this ID (any more)."""


class MessageBusy(QuarantineError):
    """Another process holds this message (a release in progress)."""


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    id: str
    path: Path
    record: QuarantineRecord

    @property
    def queue_id(self) -> str:
        return self.record.queue_id or "NOQUEUE"


class HeldMessage:
    """A quarantined message locked against every other ``filterd quarantine`` and the expiry,
    until the ``held`` block ends."""

    def __init__(self, store: QuarantineStore, message: QuarantinedMessage, file: BinaryIO) -> None:
        self.store = store
        self.message = message
        self._file = file

    def content_chunks(self) -> Iterator[bytes]:
        """The message as stored (without filterd's record)."""
        position = self.message.record.offset
        while True:
            self._file.seek(position)
            chunk = self._file.read(READ_CHUNK)
            if not chunk:
                return
            position += len(chunk)
            yield chunk

    def remove(self, what: str, fields: dict[str, object] | None = None) -> None:
        """Remove the message from the quarantine (fsynced) and log ``what`` happened."""
        self.message.path.unlink()
        _fsync_dir(self.message.path.parent)
        self.store.log_action(self.message, what, fields)

    def keep_only(self, recipients: list[StoredRecipient]) -> None:
        """Rewrite the record so that only ``recipients`` are left (after a partial release):
        a new file, fsynced, renamed over the old one."""
        record = self.message.record
        header = encode_record_again(record, recipients)
        (self.store.root / "tmp").mkdir(mode=0o700, exist_ok=True)
        tmp = self.store.root / "tmp" / unique_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(header)
                for chunk in self.content_chunks():
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.message.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.message.path.parent)


class QuarantineStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ---------------------------------------------------------------- the SMTP proxy's side
    async def store(
        self, t: Transaction, spool: Spool, reason: str, plugin: str | None = None
    ) -> Reply:
        """Keep ``t``'s message (fsynced); the reply for the client (4xx if it could not)."""
        reason = _one_line(reason)
        header = encode_record(t, reason, plugin, spool.total_size, datetime.now(UTC))
        try:
            (name,) = await trio.to_thread.run_sync(write_to_maildirs, [self.root], spool, header)
        except OSError as exc:
            log.error(f"quarantine write failed: {exc.strerror or exc}", status="deferred")
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            return replies.INSUFFICIENT_STORAGE if full else replies.QUEUE_WRITE
        first = t.accepted[0].address if t.accepted else ""
        log.info(  # not "hold:": the door logs the decision, pflogsumm counts that line
            sanitize(f"quarantined: {reason}; from=<{t.sender}> to=<{first}>"),
            id=message_id(name),
            nrcpt=len(t.accepted),
            size=spool.total_size,
            plugin=plugin or "-",
        )
        return Reply(250, "2.0.0", f"Ok: queued as {t.queue_id}")

    # ------------------------------------------------------- the administrator's side (blocking)
    def messages(self) -> list[QuarantinedMessage]:
        """Every message in the quarantine, oldest first."""
        found = []
        for path in self._files():
            try:
                with _open(path) as file:
                    found.append(_describe(path, file))
            except OSError:
                continue  # removed meanwhile, or not ours to read
        return sorted(found, key=_age_order)

    def find(self, ident: str) -> QuarantinedMessage:
        """The message with this ID (BadId, NoSuchMessage)."""
        path = self._path_of(ident)
        try:
            with _open(path) as file:
                return _describe(path, file)
        except FileNotFoundError:
            raise self._missing(ident) from None

    @contextlib.contextmanager
    def held(self, ident: str) -> Iterator[HeldMessage]:
        """The message with this ID, locked (BadId, NoSuchMessage, MessageBusy)."""
        path = self._path_of(ident)
        try:
            file = _open(path)
        except FileNotFoundError:
            raise self._missing(ident) from None
        with file:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise MessageBusy(
                    f"message {ident} is being released or deleted by another process"
                ) from None
            try:
                same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(file.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released or rewritten while we waited for the lock
                raise self._missing(ident)
            yield HeldMessage(self, _describe(path, file), file)

    def delete(self, ident: str) -> QuarantinedMessage:
        """Remove a message for good (logged)."""
        with self.held(ident) as held:
            held.remove("removed from quarantine")
            return held.message

    def expire(self, max_age: float, now: datetime | None = None) -> list[QuarantinedMessage]:
        """Remove every message quarantined more than ``max_age`` seconds ago (logged); a
        message held by another process stays until the next time."""
        moment = now or datetime.now(UTC)
        expired = []
        for message in self.messages():
            age = (moment - (message.record.time or moment)).total_seconds()
            if age <= max_age:
                continue
            try:
                with self.held(message.id) as held:
                    held.remove(
                        "expired from quarantine",
                        {
                            "age": format_duration(float(int(age))),
                            "max_age": format_duration(max_age),
                        },
                    )
                    expired.append(held.message)
            except QuarantineError:
                continue
        return expired

    def log_action(
        self,
        message: QuarantinedMessage,
        what: str,
        fields: dict[str, object] | None = None,
        *,
        warning: bool = False,
    ) -> None:
        """One line about ``message``, with its queue id, ID, sender and recipient count."""
        record = message.record
        token = queue_id_var.set(message.queue_id)
        try:
            line = sanitize(what)
            details: dict[str, object] = {"id": message.id}
            if record.sender is not None:
                details["from"] = f"<{record.sender}>"
                details["nrcpt"] = len(record.recipients)
            details.update(fields or {})
            (log.warning if warning else log.info)(line, **details)
        finally:
            queue_id_var.reset(token)

    def _files(self) -> Iterator[Path]:
        for folder in _FOLDERS:
            try:
                entries = list(os.scandir(self.root / folder))
            except FileNotFoundError:
                continue
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)

    def _path_of(self, ident: str) -> Path:
        if not ident or len(ident) > 255 or ident.startswith(".") or _BAD_ID.search(ident):
            raise BadId(_bad_id(ident))
        for path in self._files():
            if message_id(path.name) == ident:
                return path
        raise self._missing(ident)

    def _missing(self, ident: str) -> NoSuchMessage:
        return NoSuchMessage(f"no message {ident} in the quarantine {self.root}")


async def expire_periodically(store: QuarantineStore, max_age: float) -> None:
    """The server's expiry: at start, then every tenth of ``max_age`` (1 s to 1 h); runs until
    cancelled. A failure is logged and tried again next time."""
    period = min(3600.0, max(1.0, max_age / 10))
    while True:
        try:
            await trio.to_thread.run_sync(store.expire, max_age, abandon_on_cancel=True)
        except OSError as exc:
            log.warning(f"quarantine expiry failed: {exc.strerror or exc}", root=store.root)
        await trio.sleep(period)


def message_id(name: str) -> str:
    """A quarantine file's ID: its Maildir name up to the first ``,`` (``,S=size``) or ``:``
    (a mail reader's flags)."""
    return _ID_END.split(name, maxsplit=1)[0]


def _bad_id(text: str) -> str:
    shown = sanitize(text)[:80]
    return f"not a quarantine ID: '{shown}' (IDs are what `filterd quarantine list` shows)"


def _open(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return os.fdopen(fd, "rb")


def _describe(path: Path, file: BinaryIO) -> QuarantinedMessage:
    status = os.fstat(file.fileno())
    file.seek(0)
    record = read_record(file, status.st_size, status.st_mtime)
    return QuarantinedMessage(message_id(path.name), path, record)


def _age_order(message: QuarantinedMessage) -> tuple[float, str]:
    moment = message.record.time
    return (moment.timestamp() if moment is not None else time.time(), message.id)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:900]
