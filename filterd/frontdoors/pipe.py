"""The pipe(8) door: one message from Postfix's pipe transport, through the chain, to the next
stage; the answer is one reply, which ``filterd pipe`` makes its exit status
(``filterd.protocols.pipe_map``).

pipe(8) gives the envelope on the command line and the message on standard input, and takes
one status for all the recipients of the batch. So: the chain's envelope stages run as in the
other doors (connect, HELO when the client's name is given, MAIL, each RCPT), then the message
is read (LF or CRLF line ends, bounded by ``[limits] max_message_size``) into a spool with CRLF
line ends, the ``on_message`` stage runs and its edits are applied, and only then is the next
stage's transaction opened, with the final envelope: MAIL, each RCPT, the message. A refusal of
any recipient refuses the message for all of them (a per-recipient answer needs
``<transport>_destination_recipient_limit = 1`` in main.cf); recipients that end with different
results collapse as ``collapse_replies`` says (a success for some and a failure for others is a
4xx: nobody's copy is lost). Discard answers a success and hands nothing on; Quarantine keeps
the message in the quarantine, as the SMTP door does.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from filterd.chain.outcome import Outcome
from filterd.chain.runner import ChainRunner
from filterd.config.schema import LimitsConfig
from filterd.delivery.interface import Delivery, collapse_replies
from filterd.delivery.quarantine import QuarantineStore
from filterd.frontdoors.closing import close_chain
from filterd.maillog import MailLog, queue_id_var, smtpd_line
from filterd.maillog.lines import envelope_line
from filterd.model import replies
from filterd.model.editing import apply_content_edits, apply_envelope_edits
from filterd.model.edits import Edit
from filterd.model.envelope import Client, Recipient, Session, Transaction, new_queue_id
from filterd.model.message import MessageView
from filterd.model.reply import Reply
from filterd.model.spool import Spool
from filterd.model.verdict import (
    Discard,
    Disposition,
    Quarantine,
    disposition_of,
    final_verdict,
    is_refusal,
)
from filterd.protocols.pipe_map import batch_refusal

__all__ = ["PipeDoor", "PipeRequest", "read_message"]

log = MailLog("pipe")

READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class PipeRequest:
    """What pipe(8) said on the command line: the envelope and, when the master.cf entry
    passes them, the original client (``${client_address}``, ``${client_hostname}``,
    ``${client_helo}``) and Postfix's queue id."""

    sender: str
    recipients: tuple[str, ...]
    client: Client
    queue_id: str | None = None


class _TooBig(Exception):
    pass


async def read_message(source: trio.abc.ReceiveStream, spool: Spool, limit: int) -> int:
    """The message from ``source`` into ``spool`` with CRLF line ends; its size as read.
    More than ``limit`` bytes (0: no limit) raises ``_TooBig``."""
    size = 0
    carry = b""  # a CR at the end of a read: its LF may begin the next one
    while data := await source.receive_some(READ_SIZE):
        size += len(data)
        if limit and size > limit:
            raise _TooBig
        data = carry + data
        carry = b"\r" if data.endswith(b"\r") else b""
        if carry:
            data = data[:-1]
        spool.write(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    if carry:
        spool.write(carry)
    return size


@dataclass(slots=True)
class _Message:
    t: Transaction
    edits: list[Edit]
    disposition: Disposition | None = None


class PipeDoor:
    """Runs the chain on one message from pipe(8) and hands it on."""

    def __init__(
        self,
        chain: ChainRunner,
        delivery: Delivery,
        quarantine: QuarantineStore,
        limits: LimitsConfig,
    ) -> None:
        self.chain = chain
        self.delivery = delivery
        self.quarantine = quarantine
        self.limits = limits

    async def handle(self, request: PipeRequest, source: trio.abc.ReceiveStream) -> Reply:
        """The message's fate as one reply: 2xx only once the next stage has it (or it was
        discarded or quarantined on purpose)."""
        peer = request.client
        session = Session(id=new_queue_id(), listener="pipe", peer=peer)
        t = Transaction(
            queue_id=request.queue_id or new_queue_id(), session=session, sender=request.sender
        )
        token = queue_id_var.set(t.queue_id)
        try:
            current = _Message(t, [])
            refusal = await self._envelope(current, request)
            if refusal is not None:
                return refusal
            with Spool(self.limits.spool_memory, self.limits.spool_dir) as spool:
                try:
                    t.size = await read_message(source, spool, self.limits.max_message_size)
                except _TooBig:
                    self._log_end("reject", replies.TOO_BIG, t)
                    return replies.TOO_BIG
                log.line(envelope_line(t.sender, t.size, len(t.accepted)))
                return await self._message(current, spool)
        finally:
            await close_chain(self.chain, session)
            queue_id_var.reset(token)

    async def _envelope(self, current: _Message, request: PipeRequest) -> Reply | None:
        """The envelope stages; the refusal that ends the message, if one does."""
        t = current.t
        session = t.session
        outcome = await self.chain.connect(session)
        if (refusal := self._refused("CONNECT", outcome, current)) is not None:
            return refusal
        if session.peer.helo:
            outcome = await self.chain.helo(session, session.peer.helo)
            if (refusal := self._refused("HELO", outcome, current)) is not None:
                return refusal
        outcome = await self.chain.mail_from(t)
        if (refusal := self._refused("MAIL", outcome, current)) is not None:
            return refusal
        refusals: list[Reply] = []
        for address in request.recipients:
            rcpt = Recipient(address)
            outcome = await self.chain.rcpt(t, rcpt)
            t.recipients.append(rcpt)
            refusal = self._refused("RCPT", outcome, current, address)
            rcpt.reply = refusal or replies.RCPT_OK
            if refusal is not None:
                refusals.append(refusal)
        if refusals:  # one status for the whole batch
            return batch_refusal(refusals)
        return None

    def _refused(
        self, step: str, outcome: Outcome, current: _Message, rcpt: str | None = None
    ) -> Reply | None:
        verdict = outcome.verdict
        if is_refusal(verdict):
            t = current.t
            log.line(smtpd_line("reject", step, t.session.peer, verdict.reply,
                                sender=t.sender, rcpt=rcpt))  # fmt: skip
            return verdict.reply
        current.edits.extend(outcome.edits)
        current.disposition = current.disposition or disposition_of(verdict)
        return None

    async def _message(self, current: _Message, spool: Spool) -> Reply:
        t = current.t
        view = MessageView(spool)
        outcome = await self.chain.message(t, view)
        edits = [*current.edits, *outcome.edits]
        verdict = final_verdict(outcome.verdict, current.disposition)
        if is_refusal(verdict):
            self._log_end("reject", verdict.reply, t)
            return verdict.reply
        match verdict:
            case Discard(reason=reason):
                self._log_end("discard", reason, t)
                return _accepted_locally(t)
            case Quarantine(reason=reason):
                apply_content_edits(view, edits)
                plugin = outcome.decided_by if verdict is outcome.verdict else None
                reply = await self.quarantine.store(t, spool, reason, plugin)
                self._log_end("hold" if reply.is_positive else "reject", reason, t)
                return reply
            case _:
                pass
        apply_content_edits(view, edits)
        return await self._deliver(apply_envelope_edits(t, edits), spool)

    async def _deliver(self, t: Transaction, spool: Spool) -> Reply:
        """Hand the message on with its final envelope; one reply for every recipient."""
        if not t.recipients:  # the chain removed every recipient on purpose
            return _accepted_locally(t)
        delivery = self.delivery.open()
        try:
            reply = await delivery.mail(t)
            if not reply.is_positive:
                return reply if reply.is_transient else replies.INTERNAL_ERROR
            for rcpt in t.recipients:
                rcpt.reply = await delivery.rcpt(t, rcpt)
            refused = [r.reply for r in t.recipients if r.reply and not r.reply.is_positive]
            if refused:  # the next stage refuses a recipient: all stay with Postfix
                log.info(f"next stage refused a recipient: {refused[0]}")
                return batch_refusal(refused)
            per = await delivery.data(t, spool)
        except BaseException:
            with trio.CancelScope(shield=True):
                await delivery.abort()
            raise
        if len(per) != len(t.recipients):
            log.error("delivery returned the wrong number of replies", got=len(per))
            return replies.INTERNAL_ERROR
        return collapse_replies(per)

    def _log_end(self, what: str, answer: object, t: Transaction) -> None:
        rcpt = t.recipients[-1].address if t.recipients else None
        log.line(smtpd_line(what, "END-OF-MESSAGE", t.session.peer, answer,
                            sender=t.sender, rcpt=rcpt))  # fmt: skip


def _accepted_locally(t: Transaction) -> Reply:
    return Reply(250, "2.0.0", f"Ok: queued as {t.queue_id}")
