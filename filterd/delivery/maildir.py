"""Delivery into local Maildirs: ``root/<domain>/<user>/{tmp,new,cur}``.

The Maildir protocol: write the message into ``tmp/`` under a unique name, fsync it, link it
into ``new/`` of every recipient, fsync those directories, then remove the ``tmp/`` name. Only
then is the message acknowledged. Disk full answers 452 4.3.1, any other write error 451 4.3.0.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from filterd.config.schema import MaildirDelivery
from filterd.maillog import MailLog
from filterd.maillog.lines import delivery_line, envelope_line, timing
from filterd.model import replies
from filterd.model.envelope import Recipient, Transaction
from filterd.model.reply import Reply
from filterd.model.spool import Spool

log = MailLog("maildir")

BAD_MAILBOX = Reply(550, "5.1.3", "Bad destination mailbox address")
DELIVERED = "Ok: delivered to maildir"

_DOMAIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")
_LOCAL_RE = re.compile(r"^[a-z0-9!#$%&'*+=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+=?^_`{|}~-]+)*$")
_counter = itertools.count()
_HOSTNAME = socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def mailbox_path(root: Path, address: str) -> Path | None:
    """The Maildir of ``address``, or None if it cannot name a safe path under ``root``."""
    local, _, domain = address.lower().rpartition("@")
    if not _LOCAL_RE.match(local) or not _DOMAIN_RE.match(domain):
        return None
    return root / domain / local


def unique_name() -> str:
    """``time.MusecPpidQn.host`` (the Maildir naming convention)."""
    now = time.time()
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{_HOSTNAME}"


@dataclass(frozen=True, slots=True)
class _Job:
    mailboxes: list[Path]
    spool: Spool
    header: bytes


class Maildir:
    """The ``Delivery`` for ``method = "maildir"``."""

    def __init__(self, config: MaildirDelivery) -> None:
        self.root = Path(config.root)
        self.limiter = trio.CapacityLimiter(4)

    def open(self) -> MaildirTransaction:
        return MaildirTransaction(self)

    async def aclose(self) -> None:
        return None


class MaildirTransaction:
    def __init__(self, maildir: Maildir) -> None:
        self.maildir = maildir

    async def mail(self, t: Transaction) -> Reply:
        return replies.SENDER_OK

    async def rcpt(self, t: Transaction, rcpt: Recipient) -> Reply:
        if mailbox_path(self.maildir.root, rcpt.address) is None:
            return BAD_MAILBOX
        return replies.RCPT_OK

    async def data(self, t: Transaction, spool: Spool) -> list[Reply]:
        if log.enabled_for_info():
            log.line(envelope_line(t.sender, t.size, len(t.accepted)))
        started = time.monotonic()
        mailboxes = []
        for rcpt in t.accepted:
            path = mailbox_path(self.maildir.root, rcpt.address)
            assert path is not None, "checked at RCPT"
            mailboxes.append(path)
        header = f"Return-Path: <{t.sender}>\r\n".encode("utf-8", "surrogateescape")
        job = _Job(mailboxes, spool, header)
        try:
            names = await trio.to_thread.run_sync(_deliver, job, limiter=self.maildir.limiter)
        except OSError as exc:
            reply = (
                replies.INSUFFICIENT_STORAGE
                if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                else replies.QUEUE_WRITE
            )
            log.error(f"maildir write failed: {exc.strerror or exc}")
            results = [reply] * len(mailboxes)
        else:
            results = [Reply(250, "2.0.0", f"{DELIVERED} as {name}") for name in names]
        if log.enabled_for_info():
            times = timing(t.arrived, started, time.monotonic())
            for rcpt, result in zip(t.accepted, results, strict=True):
                log.line(delivery_line(rcpt.address, "maildir", times, result))
        return results

    async def abort(self) -> None:
        return None


PRIVATE_DIRECTORY = 0o700
"""Mode of every directory filterd creates on the way to a Maildir: they hold other people's
mail (the files are 0600)."""


def _ensure_maildir(path: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        _private_directories(path / sub)


def _private_directories(path: Path) -> None:
    """``mkdir -p -m 0700``: each missing directory of ``path`` is created 0700 (less the
    umask); those that exist are left as they are."""
    if path.is_dir():
        return
    missing = [path, *itertools.takewhile(lambda parent: not parent.is_dir(), path.parents)]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIRECTORY)
        except FileExistsError:
            if not directory.is_dir():
                raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_to_maildirs(mailboxes: list[Path], spool: Spool, header: bytes) -> list[str]:
    """Blocking (run it in a thread): ``header`` + the message into every Maildir, written
    once into the first one's ``tmp/``, fsynced, linked into every ``new/``. The file names."""
    return _deliver(_Job(mailboxes, spool, header))


def _deliver(job: _Job) -> list[str]:
    """Runs in a worker thread: write once, fsync, link into every ``new/``."""
    for box in job.mailboxes:
        _ensure_maildir(box)
    name = unique_name()
    size = len(job.header) + job.spool.total_size
    tmp = job.mailboxes[0] / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=True) as out:
            out.write(job.header)
            for chunk in job.spool.chunks():
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        names = []
        for box in job.mailboxes:
            final = f"{name},S={size}"
            target = box / "new" / final
            try:
                os.link(tmp, target)
            except FileExistsError:
                final = f"{unique_name()},S={size}"
                target = box / "new" / final
                os.link(tmp, target)
            _fsync_dir(box / "new")
            names.append(final)
        return names
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
