"""Quarantine for the SMTP proxy: a Maildir that keeps messages out of delivery.

The message is fsynced into ``new/`` with its envelope in headers (so it can be released)
before the client gets its 250; if that fails the client gets a 4xx and keeps the message.
"""

from __future__ import annotations

import errno
from pathlib import Path

import trio

from filterd.delivery.maildir import write_to_maildirs
from filterd.maillog import MailLog
from filterd.model import replies
from filterd.model.envelope import Transaction
from filterd.model.reply import Reply
from filterd.model.spool import Spool

log = MailLog("quarantine")


class QuarantineStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    async def store(self, t: Transaction, spool: Spool, reason: str) -> Reply:
        rcpts = ", ".join(f"<{r.address}>" for r in t.accepted)
        text = (
            f"Return-Path: <{t.sender}>\r\n"
            f"X-Filterd-Quarantine: {_one_line(reason)}\r\n"
            f"X-Filterd-Envelope: queue_id={t.queue_id}; from=<{t.sender}>; to={rcpts}\r\n"
        )
        header = text.encode("utf-8", "surrogateescape")
        try:
            (name,) = await trio.to_thread.run_sync(write_to_maildirs, [self.root], spool, header)
        except OSError as exc:
            log.error(f"quarantine write failed: {exc.strerror or exc}", status="deferred")
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            return replies.INSUFFICIENT_STORAGE if full else replies.QUEUE_WRITE
        log.info(f"hold: {_one_line(reason)}", file=str(self.root / "new" / name))
        return Reply(250, "2.0.0", f"Ok: queued as {t.queue_id}")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:900]
