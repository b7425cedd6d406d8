"""Releasing a quarantined message: its stored bytes handed to the configured delivery (the next
hop over SMTP or LMTP, or the Maildir), as the SMTP proxy would have handed them on, without the
chain seeing it again.

The envelope is the one recorded (sender, MAIL parameters but SIZE, recipients with their RCPT
parameters) or, with ``--to``, other recipients; the client the record names goes out in
XFORWARD as it would have. The answer is one reply per recipient: what the next hop said to its
RCPT if it refused it, else its answer to the message.
"""

from __future__ import annotations

from collections.abc import Sequence

from filterd.delivery.interface import Delivery
from filterd.delivery.quarantine_file import QuarantineRecord, StoredRecipient
from filterd.maillog import MailLog, queue_id_var, sanitize
from filterd.model.envelope import (
    Client,
    Recipient,
    Session,
    Transaction,
    Xforwarded,
    new_queue_id,
)
from filterd.model.reply import Reply
from filterd.model.spool import Spool

__all__ = ["release", "release_transaction"]

log = MailLog("quarantine")


def release_transaction(
    record: QuarantineRecord, recipients: Sequence[StoredRecipient]
) -> Transaction:
    """The transaction that hands ``record``'s message to ``recipients``, under its queue id."""
    client = record.client or Client()
    session = Session(id="release", listener="quarantine", peer=client)
    return Transaction(
        queue_id=record.queue_id or new_queue_id(),
        session=session,
        sender=record.sender or "",
        # SIZE was the client's estimate of the message before the chain changed it
        mail_params=tuple(p for p in record.mail_params if p.split("=")[0].upper() != "SIZE"),
        recipients=[Recipient(r.address, r.params) for r in recipients],
        xforward=Xforwarded(dict(record.xforward)) if record.xforward else None,
    )


async def release(
    record: QuarantineRecord,
    recipients: Sequence[StoredRecipient],
    spool: Spool,
    delivery: Delivery,
) -> list[Reply]:
    """Deliver the message in ``spool`` to ``recipients``; one reply per recipient, in order."""
    t = release_transaction(record, recipients)
    t.size = spool.total_size
    token = queue_id_var.set(t.queue_id)
    try:
        return await _deliver(t, spool, delivery)
    finally:
        queue_id_var.reset(token)


async def _deliver(t: Transaction, spool: Spool, delivery: Delivery) -> list[Reply]:
    transaction = delivery.open()
    answer = await transaction.mail(t)
    if not answer.is_positive:
        await transaction.abort()
        log.warning(sanitize(f"release: MAIL FROM:<{t.sender}> refused: {answer}"))
        return [answer] * len(t.recipients)
    for rcpt in t.recipients:
        rcpt.reply = await transaction.rcpt(t, rcpt)
        if not rcpt.reply.is_positive:
            status = "deferred" if rcpt.reply.is_transient else "bounced"
            log.warning(sanitize(f"to=<{rcpt.address}>, status={status} ({rcpt.reply})"))
    if not t.accepted:
        await transaction.abort()
        return [rcpt.reply or answer for rcpt in t.recipients]
    answers = iter(await transaction.data(t, spool))
    return [
        next(answers) if rcpt.reply is not None and rcpt.reply.is_positive else rcpt.reply or answer
        for rcpt in t.recipients
    ]
