"""Delivery into local Maildirs as Postfix's virtual(8) does it (``method = "maildir"``).

At RCPT the recipient is resolved (``filterd.delivery.mailboxes``, with tables
``virtual_maps``): an address that names no Maildir is refused there, a table that cannot
answer gives 451 4.3.0. At DATA each recipient is resolved again (virtual(8) looks up at
delivery what smtpd checked at RCPT): a table failing in between defers that recipient.
Each mailbox gets its own file (``maildir_files``): the header lines mail_copy() adds
(``delivery_headers``), the message with LF line ends, fsynced, linked into ``new/`` of the
inbox or of the folder a filing rule or the address extension chooses. 250 only after the
fsync. A message that already carries ``Delivered-To:`` for the recipient is refused as a mail
loop (554 5.4.6, as local(8)); a mailbox over quota or a file over mailbox_limit 552 5.2.2;
disk full 452 4.3.1; any other write error 451.
"""

from __future__ import annotations

import errno
import os
import time

import trio

from filterd.config.schema import MaildirDelivery, is_maildir_folder
from filterd.delivery.delivery_headers import delivery_header, forwarding_loop, has_delivered_to
from filterd.delivery.filing import folder_for
from filterd.delivery.interface import collapse_replies
from filterd.delivery.mailboxes import (
    BAD_MAILBOX,
    CONFIGURATION_ERROR,
    Mailbox,
    MailboxResolver,
    TableOpenError,
    lookup_failure,
    open_resolver,
)
from filterd.delivery.maildir_files import (
    PRIVATE_DIRECTORY,
    FileJob,
    MaildirWriteError,
    deliver_file,
    write_to_maildirs,
)
from filterd.delivery.maildir_files import fsync_dir as _fsync_dir
from filterd.delivery.maildir_files import unique_name as unique_name
from filterd.maillog import MailLog
from filterd.maillog.lines import delivery_line, envelope_line, timing
from filterd.model import replies
from filterd.model.envelope import Recipient, Transaction
from filterd.model.findings import MESSAGE_FINDINGS
from filterd.model.headers import Header, parse_header_section
from filterd.model.reply import Reply
from filterd.model.spool import Spool
from filterd.sdk.tables import TableFailure

__all__ = [
    "BAD_MAILBOX",
    "DELIVERED",
    "PRIVATE_DIRECTORY",
    "Maildir",
    "MaildirTransaction",
    "_fsync_dir",
    "unique_name",
    "write_to_maildirs",
]

log = MailLog("maildir")

DELIVERED = "Ok: delivered to maildir"
HEAD_LIMIT = 256 * 1024
"""Bytes of the message read for its header section (loop check, filing rules)."""


def smtputf8(t: Transaction) -> bool:
    """The client gave MAIL FROM ... SMTPUTF8 (RFC 6531)."""
    return any(param.upper() == "SMTPUTF8" for param in t.mail_params)


class Maildir:
    """The ``Delivery`` for ``method = "maildir"``. ``resolver``: who the recipients are
    (default: what ``open_resolver`` makes of the configuration)."""

    def __init__(self, config: MaildirDelivery, resolver: MailboxResolver | None = None) -> None:
        self.config = config
        self.root = config.base
        self.resolver = resolver if resolver is not None else open_resolver(config)
        self.limiter = trio.CapacityLimiter(4)
        self.as_root = os.geteuid() == 0

    def open(self) -> MaildirTransaction:
        return MaildirTransaction(self)

    async def aclose(self) -> None:
        await self.resolver.aclose()


class MaildirTransaction:
    def __init__(self, maildir: Maildir) -> None:
        self.maildir = maildir
        self.resolved: dict[str, list[Mailbox]] = {}

    async def mail(self, t: Transaction) -> Reply:
        return replies.SENDER_OK

    async def rcpt(self, t: Transaction, rcpt: Recipient) -> Reply:
        found = await self._resolve(t, rcpt.address)
        return found if isinstance(found, Reply) else replies.RCPT_OK

    async def _resolve(
        self, t: Transaction, address: str, *, again: bool = False
    ) -> list[Mailbox] | Reply:
        """The recipient's mailboxes; ``again``: looked up anew (at delivery, as virtual(8)
        looks up what smtpd checked at RCPT: a table that fails in between defers it)."""
        if address in self.resolved and not again:
            return self.resolved[address]
        try:
            found = await self.maildir.resolver.resolve(address, smtputf8=smtputf8(t))
        except TableFailure as exc:
            log.warning(f"{t.queue_id}: to=<{address}>: {exc}")
            return lookup_failure(address)
        except TableOpenError as exc:
            log.error(f"{t.queue_id}: to=<{address}>: {exc}")
            return CONFIGURATION_ERROR
        if not isinstance(found, Reply):
            self.resolved[address] = found
        return found

    async def data(self, t: Transaction, spool: Spool) -> list[Reply]:
        if log.enabled_for_info():
            log.line(envelope_line(t.sender, t.size, len(t.accepted)))
        started = time.monotonic()
        headers = await trio.to_thread.run_sync(
            _header_section, spool, limiter=self.maildir.limiter
        )
        findings = t.notes.get(MESSAGE_FINDINGS) or ()
        folder = folder_for(self.maildir.config.filing, headers, findings)
        results = []
        for rcpt in t.accepted:
            found = await self._resolve(t, rcpt.address, again=True)
            if isinstance(found, Reply):
                results.append(found)
                continue
            per = [await self._deliver(t, rcpt, box, spool, headers, folder) for box in found]
            results.append(collapse_replies(per))
        if log.enabled_for_info():
            times = timing(t.arrived, started, time.monotonic())
            for rcpt, result in zip(t.accepted, results, strict=True):
                log.line(delivery_line(rcpt.address, "maildir", times, result))
        return results

    async def _deliver(
        self,
        t: Transaction,
        rcpt: Recipient,
        box: Mailbox,
        spool: Spool,
        headers: tuple[Header, ...],
        folder: str | None,
    ) -> Reply:
        config = self.maildir.config
        if has_delivered_to(headers, box.address):
            return forwarding_loop(box.address)
        if (box.uid is not None and box.uid < config.minimum_uid) or (
            box.gid is not None and box.gid <= 0
        ):
            log.warning(f"recipient {box.address}: bad uid/gid {box.uid}/{box.gid}")
            return CONFIGURATION_ERROR
        owner = None
        if self.maildir.as_root and (box.uid is not None or box.gid is not None):
            owner = (-1 if box.uid is None else box.uid, -1 if box.gid is None else box.gid)
        target = box.maildir
        if folder is None and config.extension_folders and box.extension:
            candidate = f".{box.extension}"
            if is_maildir_folder(candidate) and (box.maildir / candidate).is_dir():
                folder = candidate
        if folder is not None:
            target = box.maildir / folder
        job = FileJob(
            maildir=target,
            header=delivery_header(t.sender, rcpt.address, box.address),
            spool=spool,
            owner=owner,
            size_limit=config.mailbox_limit,
            quota=config.mailbox_quota,
            quota_root=box.maildir,
            folder_marker=folder is not None,
        )
        try:
            name = await trio.to_thread.run_sync(deliver_file, job, limiter=self.maildir.limiter)
        except MaildirWriteError as exc:
            return self._failure(exc, box)
        return Reply(250, "2.0.0", f"{DELIVERED} as {name}")

    def _failure(self, exc: MaildirWriteError, box: Mailbox) -> Reply:
        """virtual(8)'s outcome: EDQUOT and EFBIG bounce (5.2.2), the rest is deferred."""
        text = f"maildir delivery failed: {exc.step}: {exc.strerror}"
        log.error(f"to=<{box.address}>: maildir delivery failed: {exc.step} {exc.path}: "
                  f"{exc.strerror}")  # fmt: skip
        if exc.errno == errno.EACCES:
            log.warning("perhaps you need to create the maildirs in advance")
        if exc.errno == errno.EDQUOT and self.maildir.config.over_quota == "defer":
            return Reply(452, "4.2.2", text)
        if exc.errno in (errno.EDQUOT, errno.EFBIG):
            return Reply(552, "5.2.2", text)
        if exc.errno == errno.ENOSPC:
            return replies.INSUFFICIENT_STORAGE
        if exc.errno in (errno.EAGAIN, errno.ESTALE) or exc.step != "error writing message":
            return Reply(451, "4.2.0", text)
        return Reply(451, "4.3.0", text)

    async def abort(self) -> None:
        return None


def _header_section(spool: Spool) -> tuple[Header, ...]:
    """The header section of the message as it will be delivered (edits applied)."""
    head = b""
    for chunk in spool.chunks():
        head += chunk
        if len(head) >= HEAD_LIMIT:
            break
    complete = len(head) >= spool.total_size
    return parse_header_section(head[:HEAD_LIMIT] if not complete else head, complete).headers
