"""The milter door's callbacks: ``FilterdMilter``, one per MTA connection, called by
libmilter (through pymilter) on its threads. Each step builds the model exactly as the other
doors do and is answered with what the chain decided (``filterd.protocols.milter_map``).

- **Hop only for the chain**: a stage no plugin implements ends in ``Continue`` with nothing
  (``ChainRunner.has_stage``), so its callback answers on the libmilter thread; the model
  (``Session``, ``Transaction``, macros, spool) is built the same either way. A hop that cannot
  answer (too slow, trio stopping) counts as the chain's ``TempFail``.
- **Stop**: the listener closes at once (new connections are refused: Postfix's
  ``milter_default_action`` applies); on connections already open, new messages are answered
  TEMPFAIL at MAIL (or, if MAIL has no reply, at their next step with one, before any content).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import Milter

from filterd.chain.outcome import NOTHING, Outcome
from filterd.frontdoors.closing import close_chain
from filterd.frontdoors.milter.bridge import HopFailed
from filterd.frontdoors.milter.connection import MilterConnection, guarded
from filterd.frontdoors.milter.message import MilterMessage, log_result, outcome_of, perform
from filterd.maillog import MailLog, queue_id_var, smtpd_line
from filterd.model import metrics, replies
from filterd.model.envelope import new_queue_id
from filterd.model.message import MessageView
from filterd.model.reply import Reply
from filterd.model.verdict import (
    TempFail,
    Verdict,
    disposition_of,
    final_verdict,
    is_refusal,
)
from filterd.protocols.milter_map import (
    ACCEPT,
    CONTINUE,
    FILTER_FAILED,
    SMFIP_NR_BODY,
    SMFIP_NR_EOH,
    SMFIP_NR_HDR,
    SMFIP_NR_HELO,
    SMFIP_NR_MAIL,
    SMFIP_NR_RCPT,
    EomPlan,
    Response,
    apply_helo,
    plan_eom,
    recipient_from_rcpt,
    render_stage,
    session_from_connect,
    transaction_from_mail,
    update_macros,
)

__all__ = ["FilterdMilter"]

log = MailLog("milter")

_GO_ON = EomPlan((), Response(CONTINUE))  # end of message: nothing to change, nothing to say


class FilterdMilter(MilterConnection):
    """One MTA connection: what each of its steps does."""

    def _consult(
        self, stage: str, ask: Callable[[], Coroutine[Any, Any, Outcome]], queue_id: str
    ) -> Outcome:
        """The chain's outcome at an envelope stage if a plugin implements ``stage`` (a hop
        into trio unless it runs inline), else NOTHING at once. A hop that cannot answer is a
        ``TempFail``."""
        view = self.view
        if stage not in view.stages:
            return NOTHING
        try:
            return self.bridge.consult(view, stage, ask, view.settings.command_budget, queue_id)
        except HopFailed as failed:
            return Outcome(TempFail(failed.reply))

    def _answer_step(self, step: str, verdict: Verdict, rcpt: str | None = None) -> int:
        """Answer an envelope step with the chain's verdict, logging a refusal as Postfix
        does. At MAIL and RCPT, ``Accept(final=True)`` with nothing due at end of message
        ends filtering of this message (ACCEPT: no end of message follows)."""
        if is_refusal(verdict):
            self._log_reject(step, verdict.reply, rcpt)
            return self._answer(render_stage(verdict))
        message = self.message
        nothing_due = message is None or (not message.edits and message.disposition is None)
        response = render_stage(verdict, may_accept=step in ("MAIL", "RCPT") and nothing_due)
        if response.code == ACCEPT:
            log.info("accept: the chain accepted the message before its content")
            self._end_message()
        return self._answer(response)

    def _log_reject(self, step: str, reply: Reply, rcpt: str | None = None) -> None:
        assert self.session is not None
        metrics.recorder.refusal("milter", step.lower(), metrics.outcome_of_reply(reply))
        sender = self.message.t.sender if self.message is not None else None
        log.info(smtpd_line("reject", step, self.session.peer, reply, sender=sender, rcpt=rcpt))

    # -------------------------------------------------------------- callbacks
    @guarded("CONNECT")
    def connect(self, hostname: str, family: object, hostaddr: object) -> int:
        del family
        self.session = session = session_from_connect(
            hostname,
            hostaddr,
            self._macros(),
            session_id=new_queue_id(),
            listener=self.view.settings.name,
        )
        log.connect(session.peer.describe())
        refusal = self.bridge.open_connection()
        if refusal is not None:
            return self._refuse(refusal)
        self.counted = True
        chain = self.view.chain
        outcome = self._consult("on_connect", lambda: chain.connect(session), "NOQUEUE")
        self.session_disposition = disposition_of(outcome.verdict)
        return self._answer_step("CONNECT", outcome.verdict)

    @guarded("HELO", quiet=SMFIP_NR_HELO)
    def hello(self, heloname: str) -> int:
        session = self.session
        assert session is not None
        apply_helo(session, heloname, self._macros())
        chain = self.view.chain
        outcome = self._consult("on_helo", lambda: chain.helo(session, heloname), "NOQUEUE")
        self.session_disposition = self.session_disposition or disposition_of(outcome.verdict)
        return self._answer_step("HELO", outcome.verdict)

    def envfrom_bytes(self, mailfrom: bytes, *params: bytes) -> int:
        """What pymilter calls at MAIL (``Milter.Base.envfrom_bytes`` does the same, through a
        look-up of a decoding strategy and a list per call): UTF-8, bad bytes kept as
        surrogates."""
        return self.envfrom(
            mailfrom.decode("utf-8", "surrogateescape"),
            *[param.decode("utf-8", "surrogateescape") for param in params],
        )

    def envrcpt_bytes(self, to: bytes, *params: bytes) -> int:
        """What pymilter calls at RCPT: as ``envfrom_bytes``."""
        return self.envrcpt(
            to.decode("utf-8", "surrogateescape"),
            *[param.decode("utf-8", "surrogateescape") for param in params],
        )

    @guarded("MAIL", quiet=SMFIP_NR_MAIL)
    def envfrom(self, mailfrom: str, *params: str) -> int:
        session = self.session
        assert session is not None
        if self.message is not None:
            self._end_message()
        quiet = bool(self.view.protocol & SMFIP_NR_MAIL)  # never refuse here (guarded)
        if self.broken:
            if quiet:
                return CONTINUE  # refused at the next step with a reply
            log.warning("an earlier step failed: tempfail at MAIL")
            return self._refuse(FILTER_FAILED)
        view = self.view
        t = transaction_from_mail(session, mailfrom, params, self._macros(view.mail_macros))
        queue_id_var.set(t.queue_id)
        settings = view.settings
        self.message = message = MilterMessage(t, settings.spool_memory, settings.spool_dir)
        refusal = self.bridge.begin_message()
        if refusal is not None:  # stopping: no new message
            if quiet:
                message.refusal = refusal  # refused at RCPT or DATA, before any content
                return CONTINUE
            self._end_message()
            return self._refuse(refusal)
        message.counted = True  # _end_message balances the count
        if "on_mail_from" not in view.stages:  # what NOTHING would give, without the steps
            message.disposition = self.session_disposition
            return CONTINUE
        chain = view.chain
        outcome = self._consult("on_mail_from", lambda: chain.mail_from(t), t.queue_id)
        message.edits.extend(outcome.edits)
        message.disposition = self.session_disposition or disposition_of(outcome.verdict)
        code = self._answer_step("MAIL", outcome.verdict)
        if is_refusal(outcome.verdict):
            self._end_message()
        return code

    @guarded("RCPT", quiet=SMFIP_NR_RCPT)
    def envrcpt(self, to: str, *params: str) -> int:
        quiet = bool(self.view.protocol & SMFIP_NR_RCPT)  # never refuse here (guarded)
        pending = None if quiet else self._pending_refusal()
        if pending is not None:
            return self._refuse_pending("RCPT", pending)
        message = self.message
        if message is None:  # the message was refused or accepted for good at MAIL
            return CONTINUE
        if message.refusal is not None:  # answered at DATA
            return CONTINUE
        t = message.t
        rcpt = recipient_from_rcpt(to, params)
        view = self.view
        if "on_rcpt" not in view.stages:  # what NOTHING would give, without the steps
            rcpt.reply = replies.RCPT_OK
            t.recipients.append(rcpt)
            return CONTINUE
        # Else the end of message reads them: libmilter keeps the last RCPT's macros.
        update_macros(t.session, self._macros())
        chain = view.chain
        outcome = self._consult("on_rcpt", lambda: chain.rcpt(t, rcpt), t.queue_id)
        verdict = outcome.verdict
        # ours, if not a refusal: Postfix or a later milter may still refuse it
        rcpt.reply = verdict.reply if is_refusal(verdict) else replies.RCPT_OK
        t.recipients.append(rcpt)
        if not is_refusal(verdict):
            message.edits.extend(outcome.edits)
            message.disposition = message.disposition or disposition_of(verdict)
        return self._answer_step("RCPT", verdict, rcpt.address)

    @guarded("DATA")
    def data(self) -> int:
        pending = self._pending_refusal()
        if pending is not None:
            code = self._refuse_pending("DATA", pending)
            # A refusal at DATA ends the transaction and libmilter sends no abort for it: the
            # message stops counting (a stop need not wait for it), but stays, so that any
            # later step of it is refused too.
            self._uncount_message()
            return code
        message = self.message
        if message is not None:
            # Only the queue id: the end of message reads every macro (libmilter keeps them).
            queue_id = self._ctx.getsymval("i")
            if queue_id:
                message.t.queue_id = str(queue_id)
                queue_id_var.set(message.t.queue_id)
            message.spool()
        return CONTINUE

    @Milter.decode("bytes")  # type: ignore[untyped-decorator]
    @guarded("HEADER", quiet=SMFIP_NR_HDR)
    def header(self, name: str, value: bytes) -> int:
        if self.message is not None:
            self.message.write_header(name, value)
        return CONTINUE

    @guarded("EOH", quiet=SMFIP_NR_EOH)
    def eoh(self) -> int:  # only when the MTA cannot skip it (SMFIP_NOEOH not offered)
        if self.message is not None:
            self.message.end_headers()
        return CONTINUE

    @guarded("BODY", quiet=SMFIP_NR_BODY)
    def body(self, chunk: bytes) -> int:
        message = self.message
        if message is not None:
            message.end_headers().write(chunk)
        return CONTINUE

    @guarded("END-OF-MESSAGE")
    def eom(self) -> int:
        pending = self._pending_refusal()
        if pending is not None:
            self._end_message()
            metrics.recorder.message("milter", metrics.outcome_of_reply(pending))
            return self._refuse_pending("END-OF-MESSAGE", pending)
        message = self.message
        if message is None:
            return CONTINUE
        try:
            t = message.t
            macros = self._macros()
            update_macros(t.session, macros)
            t.queue_id = macros.get("i") or t.queue_id
            queue_id_var.set(t.queue_id)
            spool = message.end_headers()
            t.size = spool.size
            view: MessageView | None = None
            if "on_message" in self.view.stages:
                view = MessageView(spool)
                budget = self.view.settings.content_budget
                try:
                    outcome = self.bridge.consult(
                        self.view,
                        "on_message",
                        lambda: self.view.chain.message(t, view),
                        budget,
                        t.queue_id,
                    )
                except HopFailed as failed:
                    metrics.recorder.message("milter", metrics.outcome_of_reply(failed.reply))
                    return self._refuse(failed.reply)
            else:
                outcome = NOTHING
            # The header names as the chain saw them: parsed only for an edit (else a chain
            # that never looks at the headers would cost the message a parse for nothing).
            edits = message.edits or outcome.edits
            names = [h.name for h in (view or MessageView(spool)).headers] if edits else []
            if outcome is NOTHING and not message.edits and message.disposition is None:
                plan = _GO_ON  # what plan_eom gives for it, without the steps
            else:
                plan = plan_eom(
                    outcome,
                    names,
                    earlier_edits=message.edits,
                    disposition=message.disposition,
                    recipients=[r.address for r in t.accepted],
                )
            perform(plan, self)
            metrics.recorder.message("milter", outcome_of(plan))
            if log.enabled_for_info():
                log_result(t, plan, final_verdict(outcome.verdict, message.disposition))
            return self._answer(plan.response)
        finally:
            self._end_message()

    @guarded("ABORT")
    def abort(self) -> int:
        self._end_message()
        return CONTINUE

    @guarded("CLOSE")
    def close(self) -> int:
        try:
            self._end_message()
            if self.counted:
                self.counted = False
                self.bridge.close_connection()
            session = self.session
            if session is None:
                return CONTINUE
            if "on_close" in self.view.stages:
                chain = self.view.chain
                self.bridge.run_quietly(lambda: close_chain(chain, session), "NOQUEUE")
            log.disconnect(session.peer.describe())
            return CONTINUE
        finally:
            self._detach()
