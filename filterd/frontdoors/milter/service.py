"""The milter front door: Postfix's ``smtpd_milters`` talks to libmilter (via pymilter) in this
process; a callback hops into trio only to run a chain stage that some plugin implements
(contracts.md §3.5, option C; the reasons are in docs/architecture.md, "The milter front door").

```
trio thread                                  libmilter threads (one per MTA connection here;
                                             a connection's callbacks run one at a time)
serve_milter ── starts ──▶ "libmilter" thread: smfi_main()
MilterBridge._call ◀─ trio.from_thread.run ─ connect/hello/envfrom/envrcpt/eom/close, each only
   deadline (budget), the chain stage          if a plugin implements its stage
                                             the model, the spool, the counters: no hop
```
Rules kept here:

- **Hop only for the chain**: a stage no plugin implements ends in ``Continue`` with nothing
  (``ChainRunner.has_stage``), so its callback answers on the libmilter thread; the model
  (``Session``, ``Transaction``, macros, spool) is built the same either way. Bookkeeping
  (connection and message counts, the stop check) is under a ``threading.Lock``, not a hop.
- **Negotiation** (``milter_map.protocol_flags``): no reply to headers and body chunks, no
  end-of-headers step, and no reply to HELO/MAIL/RCPT when no plugin implements the stage.
  Such a callback never refuses (libmilter would drop the reply and lose step with the MTA):
  a failure there, or a stop that began before a MAIL without reply, is answered TEMPFAIL at
  the next step that has one — RCPT (with a plugin), DATA or end of message — and every later
  step of that message with a reply is refused too.
- **Timeouts inside the hop**: a hop runs as a trio system task that no cancel scope of ours
  reaches, so each hop has its own deadline: ``command_budget`` (under Postfix's
  ``milter_command_timeout``, 30 s) for CONNECT..RCPT, ``content_budget`` (under
  ``milter_content_timeout``, 300 s) at end of message. Too slow → TEMPFAIL 451 4.4.5.
- **Overload**: at most ``max_connections`` MTA connections; one more is answered TEMPFAIL
  451 4.3.2 at CONNECT, never queued.
- **Shutdown**: trio owns SIGTERM/SIGINT (libmilter blocks them in its threads; the supervisor's
  signal watcher gets them) and calls ``milter.stop()``; libmilter notices within ~5 s
  (MI_CHK_TIME). New connections are answered TEMPFAIL at once, new messages at MAIL (or, if
  MAIL has no reply, at their next step with one, before any content); messages in progress
  get ``shutdown_grace`` to reach end of message. A hop that finds trio gone or going
  (``RunFinishedError``, ``Cancelled``) answers TEMPFAIL — never ACCEPT — so nothing is lost.
- **Per-connection state only on the FilterdMilter object** (a connection's callbacks may run
  on different OS threads, one at a time); shared counters only under the bridge's lock.
- Every callback catches its own failures and answers TEMPFAIL 451 4.3.0 with a log line
  (pymilter's default would be "untrapped exception").
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import Milter
import milter
import trio

from filterd.chain.outcome import NOTHING, Outcome
from filterd.chain.runner import ChainRunner
from filterd.frontdoors.shutdown import Shutdown
from filterd.maillog import MailLog, queue_id_var
from filterd.model import replies
from filterd.model.edits import Edit
from filterd.model.envelope import Session, Transaction, new_queue_id
from filterd.model.message import MessageView
from filterd.model.reply import Reply
from filterd.model.spool import Spool
from filterd.model.verdict import Discard, Quarantine, Reject, TempFail
from filterd.protocols.milter_map import (
    ACCEPT,
    CONTINUE,
    FILTER_BUSY,
    FILTER_FAILED,
    FILTER_STOPPING,
    FILTER_TIMEOUT,
    MACRO_NAMES,
    NOREPLY,
    SMFIP_NR_BODY,
    SMFIP_NR_EOH,
    SMFIP_NR_HDR,
    SMFIP_NR_HELO,
    SMFIP_NR_MAIL,
    SMFIP_NR_RCPT,
    TEMPFAIL,
    AddHeaderAction,
    AddRcptAction,
    ChangeFromAction,
    ChangeHeaderAction,
    DelRcptAction,
    EomPlan,
    InsertHeaderAction,
    MilterAction,
    QuarantineAction,
    ReplaceBodyAction,
    Response,
    apply_helo,
    disposition_of,
    plan_eom,
    protocol_flags,
    recipient_from_rcpt,
    render_refusal,
    render_stage,
    session_from_connect,
    transaction_from_mail,
    update_macros,
)
from filterd.sdk.stages import STAGES

__all__ = ["FilterdMilter", "MilterBridge", "MilterSettings", "serve_milter"]

log = MailLog("milter")

T = TypeVar("T")

MILTER_NAME = "filterd"
# Every modification Postfix >= 2.6 implements; negotiation keeps what the MTA offers.
ACTION_FLAGS = (
    milter.ADDHDRS
    | milter.CHGHDRS
    | milter.CHGBODY
    | milter.ADDRCPT
    | milter.ADDRCPT_PAR
    | milter.DELRCPT
    | milter.CHGFROM
    | milter.QUARANTINE
)
STOP_JOIN_TIMEOUT = 15.0  # libmilter polls its stop flag every 5 s (MI_CHK_TIME)
CLOSE_BUDGET = 5.0


@dataclass(frozen=True, slots=True)
class MilterSettings:
    """What the milter listener needs; derived once at start-up."""

    name: str  # Session.listener: the address as configured
    socket: str  # libmilter syntax: inet:PORT@HOST or unix:/path
    max_connections: int = 100
    command_budget: float = 25.0  # < milter_command_timeout (30 s)
    content_budget: float = 280.0  # < milter_content_timeout (300 s)
    mta_timeout: int = 600  # smfi_settimeout: how long libmilter waits for the MTA
    spool_memory: int = 1024 * 1024
    spool_dir: Path | None = None
    shutdown_grace: float = 30.0


class _Refused(Exception):
    """A hop could not give the chain's answer; ``reply`` is what to tell Postfix."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class MilterBridge:
    """What the libmilter threads share: the chain (reached by a hop into trio), the counters
    (under ``_lock``) and the stop flag."""

    def __init__(
        self,
        chain: ChainRunner,
        settings: MilterSettings,
        shutdown: Shutdown,
        token: trio.lowlevel.TrioToken,
    ) -> None:
        self.chain = chain
        self.settings = settings
        self.shutdown = shutdown
        self.token = token
        self.connections = 0
        self.messages = 0
        self._lock = threading.Lock()
        self._draining = False  # a stop waits for the messages in progress: tell it when done
        self._drained = trio.Event()
        # The chain is fixed once serving starts: which stages need a hop, what to negotiate.
        self.stages = frozenset(stage for stage in STAGES if chain.has_stage(stage))
        self.protocol = protocol_flags(self.stages)

    # ------------------------------------------------------------- libmilter threads
    def run(self, fn: Callable[[], Awaitable[T]], budget: float, queue_id: str) -> T:
        """Run ``fn`` on the trio thread under ``budget`` seconds; failures → ``_Refused``."""
        try:
            return trio.from_thread.run(self._call, fn, budget, queue_id, trio_token=self.token)
        except trio.TooSlowError:
            log.warning(f"chain did not answer within {budget:g}s: tempfail")
            raise _Refused(FILTER_TIMEOUT) from None
        except (trio.RunFinishedError, trio.Cancelled):
            raise _Refused(FILTER_STOPPING) from None

    def run_quietly(self, fn: Callable[[], Awaitable[None]], queue_id: str) -> None:
        """For endings (close): trio being gone is not worth a line."""
        try:
            self.run(fn, CLOSE_BUDGET, queue_id)
        except _Refused:
            pass

    def open_connection(self) -> Reply | None:
        """Admit one more MTA connection, or say why not (stopping, too many)."""
        with self._lock:
            if self.shutdown.stopping:
                return FILTER_STOPPING
            if self.connections >= self.settings.max_connections:
                busy = self.connections
            else:
                self.connections += 1
                return None
        log.warning(f"too many milter connections ({busy}): tempfail")
        return FILTER_BUSY

    def close_connection(self) -> None:
        with self._lock:
            self.connections -= 1

    def begin_message(self) -> Reply | None:
        """Count one more message in progress, or refuse it while stopping. A stop reads the
        count under the same lock after setting ``stopping``, so it never misses one."""
        with self._lock:
            if self.shutdown.stopping:
                return FILTER_STOPPING
            self.messages += 1
            return None

    def end_message(self) -> None:
        with self._lock:
            self.messages -= 1
            drained = self._draining and self.messages == 0
        if drained:
            try:
                self.token.run_sync_soon(self._drained.set)
            except trio.RunFinishedError:
                pass

    # ------------------------------------------------------------------ trio thread
    async def _call(self, fn: Callable[[], Awaitable[T]], budget: float, queue_id: str) -> T:
        queue_id_var.set(queue_id)
        with trio.CancelScope(deadline=trio.current_time() + budget):  # cheaper than fail_after
            return await fn()
        raise trio.TooSlowError

    def in_progress(self) -> int:
        with self._lock:
            return self.messages

    async def wait_for_messages(self) -> None:
        """Until no message is in progress (while stopping, no new one can begin)."""
        with self._lock:
            if self.messages == 0:
                return
            self._draining = True
        await self._drained.wait()


@dataclass(slots=True)
class _Message:
    """The message in progress on one MTA connection."""

    t: Transaction
    edits: list[Edit] = field(default_factory=list)  # from MAIL/RCPT, sent at end of message
    disposition: Discard | Quarantine | None = None
    spool: Spool | None = None
    counted: bool = False  # in bridge.messages (a stop waits for it)
    in_body: bool = False  # the blank line after the headers is spooled
    # Why the message must be refused at its next step with a reply: a stop that began
    # before a MAIL without reply, or a failure in a step without reply.
    refusal: Reply | None = None

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


def _guarded(stage: str, quiet: int = 0) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """A callback never lets an exception reach pymilter: log it and answer TEMPFAIL.

    ``quiet``: the step's ``SMFIP_NR_*`` bit. If filterd asks for it with this chain
    (``bridge.protocol``), the step never refuses: a failure is kept for the next step that
    has a reply (RCPT with a plugin, DATA, end of message). The answer is NOREPLY if the bit
    was negotiated on this connection, else CONTINUE — never NOREPLY to a step the MTA waits
    for, and never a refusal libmilter would drop (it forces NOREPLY on a "no reply" step, and
    keeps a CONTINUE there in step). That holds even for a connection that skipped negotiation
    (a new SMTP session on the same milter connection, SMFIC_QUIT_NC: ``_protocol`` is 0)."""

    def decorate(callback: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(callback)
        def wrapper(self: FilterdMilter, *args: object) -> int:
            deferring = self.bridge.protocol & quiet
            try:
                code = callback(self, *args)
            except Exception:
                if not deferring:
                    log.exception(f"internal error in {stage}: tempfail")
                    return self._answer(render_refusal(TEMPFAIL, FILTER_FAILED))
                log.exception(f"internal error in {stage}: tempfail at the next reply")
                self._fail_quietly()
                code = CONTINUE
            if not deferring:
                return code
            if code != CONTINUE:  # a bug: this step must not refuse
                log.error(f"{stage} answered {code} without a reply: tempfail at the next reply")
                self._fail_quietly()
            return NOREPLY if self._protocol & quiet else CONTINUE

        return wrapper

    return decorate


class FilterdMilter(Milter.Base):  # type: ignore[misc]  # pymilter has no type stubs
    """One MTA connection. All its state lives here (contracts.md §3.5 pitfall 5)."""

    def __init__(self, bridge: MilterBridge) -> None:
        self.bridge = bridge
        self._protocol = 0  # the negotiated SMFIP_* bits (pymilter's name; set by negotiate)
        self.counted = False  # admitted at CONNECT: counted in bridge.connections
        self.broken = False  # a step without reply failed outside a message: refuse them all
        self.session: Session | None = None
        self.message: _Message | None = None
        self.session_disposition: Discard | Quarantine | None = None

    # ---------------------------------------------------------------- helpers
    def _macros(self) -> dict[str, str]:
        getsymval = self._ctx.getsymval
        found: dict[str, str] = {}
        for name in MACRO_NAMES:
            value = getsymval(name)
            if value:
                found[name] = str(value)
        return found

    def _answer(self, response: Response) -> int:
        if response.reply is not None:
            reply = response.reply
            self.setreply(reply.rcode, reply.xcode, *reply.lines)
        return response.code

    def _refuse(self, reply: Reply) -> int:
        return self._answer(render_refusal(TEMPFAIL, reply))

    def _fail_quietly(self) -> None:
        if self.message is not None:
            self.message.refusal = FILTER_FAILED
        else:
            self.broken = True

    def _pending_refusal(self) -> Reply | None:
        """What a step with a reply must answer for an earlier step without one."""
        if self.broken:
            return FILTER_FAILED
        return self.message.refusal if self.message is not None else None

    def _refuse_pending(self, stage: str, reply: Reply) -> int:
        """Refuse without ending the message: Postfix may still send more of it (another
        RCPT), and every step of it that has a reply must be refused too."""
        if reply is FILTER_FAILED:
            log.warning(f"an earlier step failed: tempfail at {stage}")
        return self._refuse(reply)

    def _queue_id(self) -> str:
        return self.message.t.queue_id if self.message is not None else "NOQUEUE"

    def _uncount_message(self) -> None:
        message = self.message
        if message is not None and message.counted:
            message.counted = False
            self.bridge.end_message()

    def _end_message(self) -> None:
        message, self.message = self.message, None
        if message is not None:
            message.close()
            if message.counted:
                self.bridge.end_message()
        queue_id_var.set("NOQUEUE")

    def _log_reject(self, stage: str, reply: Reply, rcpt: str | None = None) -> None:
        assert self.session is not None
        peer = self.session.peer
        sender = f" from=<{self.message.t.sender}>" if self.message is not None else ""
        to = f" to=<{rcpt}>" if rcpt is not None else ""
        log.info(
            f"reject: {stage} from {peer.describe()}: {reply};{sender}{to}"
            f" proto={peer.protocol} helo=<{peer.helo or ''}>"
        )

    # ------------------------------------------------------------ negotiation
    def negotiate(self, opts: list[int]) -> int:
        """Ask for the steps of ``milter_map.protocol_flags`` (replaces pymilter's default,
        which derives them from decorators on the class), as far as the MTA offers them; keep
        every action the MTA offers. ``opts``: [actions, protocol, reserved, reserved],
        changed in place."""
        try:
            self._actions = opts[0]
            self._protocol = opts[1] & self.bridge.protocol
            opts[1] = self._protocol
            opts[2] = 0
            opts[3] = 0
        except Exception:
            log.exception("internal error in NEGOTIATE: every step with a reply")
            self._protocol = 0
            return int(milter.ALL_OPTS)
        return CONTINUE

    # -------------------------------------------------------------- callbacks
    @_guarded("CONNECT")
    def connect(self, hostname: str, family: object, hostaddr: object) -> int:
        del family
        session = session_from_connect(
            hostname,
            hostaddr,
            self._macros(),
            session_id=new_queue_id(),
            listener=self.bridge.settings.name,
        )
        self.session = session
        if log.enabled_for_info():
            log.plain(f"connect from {session.peer.describe()}")
        refusal = self.bridge.open_connection()
        if refusal is not None:
            return self._refuse(refusal)
        self.counted = True
        if "on_connect" not in self.bridge.stages:
            return CONTINUE
        budget = self.bridge.settings.command_budget
        try:
            outcome = self.bridge.run(lambda: self.bridge.chain.connect(session), budget, "NOQUEUE")
        except _Refused as refused:
            return self._refuse(refused.reply)
        self.session_disposition = disposition_of(outcome.verdict)
        if isinstance(outcome.verdict, Reject | TempFail):
            self._log_reject("CONNECT", outcome.verdict.reply)
        return self._answer(render_stage(outcome.verdict))

    @_guarded("HELO", quiet=SMFIP_NR_HELO)
    def hello(self, heloname: str) -> int:
        session = self.session
        assert session is not None
        apply_helo(session, heloname, self._macros())
        if "on_helo" not in self.bridge.stages:
            return CONTINUE
        budget = self.bridge.settings.command_budget
        try:
            outcome = self.bridge.run(
                lambda: self.bridge.chain.helo(session, heloname), budget, "NOQUEUE"
            )
        except _Refused as refused:
            return self._refuse(refused.reply)
        self.session_disposition = self.session_disposition or disposition_of(outcome.verdict)
        if isinstance(outcome.verdict, Reject | TempFail):
            self._log_reject("HELO", outcome.verdict.reply)
        return self._answer(render_stage(outcome.verdict))

    @_guarded("MAIL", quiet=SMFIP_NR_MAIL)
    def envfrom(self, mailfrom: str, *params: str) -> int:
        session = self.session
        assert session is not None
        self._end_message()
        quiet = bool(self.bridge.protocol & SMFIP_NR_MAIL)  # never refuse here (_guarded)
        if self.broken:
            if quiet:
                return CONTINUE  # refused at the next step with a reply
            log.warning("an earlier step failed: tempfail at MAIL")
            return self._refuse(FILTER_FAILED)
        t = transaction_from_mail(session, mailfrom, params, self._macros())
        queue_id_var.set(t.queue_id)
        self.message = message = _Message(t)
        refusal = self.bridge.begin_message()
        if refusal is not None:  # stopping: no new message
            if quiet:
                message.refusal = refusal  # refused at RCPT or DATA, before any content
                return CONTINUE
            self._end_message()
            return self._refuse(refusal)
        message.counted = True  # _end_message balances the count
        if "on_mail_from" in self.bridge.stages:
            budget = self.bridge.settings.command_budget
            try:
                outcome = self.bridge.run(
                    lambda: self.bridge.chain.mail_from(t), budget, t.queue_id
                )
            except _Refused as refused:
                self._end_message()
                return self._refuse(refused.reply)
        else:
            outcome = NOTHING
        message.edits.extend(outcome.edits)
        message.disposition = self.session_disposition or disposition_of(outcome.verdict)
        if isinstance(outcome.verdict, Reject | TempFail):
            self._log_reject("MAIL", outcome.verdict.reply)
            self._end_message()
            return self._answer(render_stage(outcome.verdict))
        return self._finish_early(render_stage(outcome.verdict, may_accept=self._nothing_due()))

    @_guarded("RCPT", quiet=SMFIP_NR_RCPT)
    def envrcpt(self, to: str, *params: str) -> int:
        quiet = bool(self.bridge.protocol & SMFIP_NR_RCPT)  # never refuse here (_guarded)
        pending = None if quiet else self._pending_refusal()
        if pending is not None:
            return self._refuse_pending("RCPT", pending)
        message = self.message
        if message is None:  # the message was refused or accepted for good at MAIL
            return CONTINUE
        if message.refusal is not None:  # answered at DATA
            return CONTINUE
        t = message.t
        update_macros(t.session, self._macros())
        rcpt = recipient_from_rcpt(to, params)
        if "on_rcpt" not in self.bridge.stages:
            rcpt.reply = replies.RCPT_OK  # ours: Postfix or a later milter may still refuse it
            t.recipients.append(rcpt)
            return CONTINUE
        budget = self.bridge.settings.command_budget
        try:
            outcome = self.bridge.run(lambda: self.bridge.chain.rcpt(t, rcpt), budget, t.queue_id)
        except _Refused as refused:
            return self._refuse(refused.reply)
        verdict = outcome.verdict
        if isinstance(verdict, Reject | TempFail):
            rcpt.reply = verdict.reply
            t.recipients.append(rcpt)
            self._log_reject("RCPT", verdict.reply, rcpt.address)
            return self._answer(render_stage(verdict))
        rcpt.reply = replies.RCPT_OK  # ours: Postfix or a later milter may still refuse it
        t.recipients.append(rcpt)
        message.edits.extend(outcome.edits)
        message.disposition = message.disposition or disposition_of(verdict)
        return self._finish_early(render_stage(verdict, may_accept=self._nothing_due()))

    def _nothing_due(self) -> bool:
        message = self.message
        return message is None or (not message.edits and message.disposition is None)

    def _finish_early(self, response: Response) -> int:
        """ACCEPT before end of message ends filtering of this message: no eom follows."""
        if response.code == ACCEPT:
            log.info("accept: the chain accepted the message before its content")
            self._end_message()
        return self._answer(response)

    @_guarded("DATA")
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
            macros = self._macros()
            update_macros(message.t.session, macros)
            if macros.get("i"):
                message.t.queue_id = macros["i"]
                queue_id_var.set(message.t.queue_id)
            self._spool(message)
        return CONTINUE

    def _spool(self, message: _Message) -> Spool:
        if message.spool is None:
            settings = self.bridge.settings
            message.spool = Spool(settings.spool_memory, settings.spool_dir)
        return message.spool

    @Milter.decode("bytes")  # type: ignore[untyped-decorator]
    @_guarded("HEADER", quiet=SMFIP_NR_HDR)
    def header(self, name: str, value: bytes) -> int:
        message = self.message
        if message is not None:
            spool = message.spool or self._spool(message)
            spool.write(
                b"".join(
                    (
                        name.encode("utf-8", "surrogateescape"),
                        b": ",
                        value.replace(b"\n", b"\r\n"),
                        b"\r\n",
                    )
                )
            )
        return CONTINUE

    def _end_headers(self, message: _Message) -> Spool:
        """The blank line after the headers, once: at EOH, or (EOH not sent, SMFIP_NOEOH)
        before the first body chunk or at end of message."""
        spool = message.spool or self._spool(message)
        if not message.in_body:
            message.in_body = True
            spool.write(b"\r\n")
        return spool

    @_guarded("EOH", quiet=SMFIP_NR_EOH)
    def eoh(self) -> int:  # only when the MTA cannot skip it (SMFIP_NOEOH not offered)
        if self.message is not None:
            self._end_headers(self.message)
        return CONTINUE

    @_guarded("BODY", quiet=SMFIP_NR_BODY)
    def body(self, chunk: bytes) -> int:
        message = self.message
        if message is not None:
            self._end_headers(message).write(chunk)
        return CONTINUE

    @_guarded("END-OF-MESSAGE")
    def eom(self) -> int:
        pending = self._pending_refusal()
        if pending is not None:
            self._end_message()
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
            spool = self._end_headers(message)
            t.size = spool.size
            if "on_message" in self.bridge.stages:
                budget = self.bridge.settings.content_budget
                try:
                    outcome, names = self.bridge.run(
                        lambda: self._check_message(t, spool), budget, t.queue_id
                    )
                except _Refused as refused:
                    return self._refuse(refused.reply)
            else:  # edits from MAIL/RCPT may still name headers
                outcome = NOTHING
                names = [h.name for h in MessageView(spool).headers] if message.edits else []
            plan = plan_eom(
                outcome, names, earlier_edits=message.edits, disposition=message.disposition
            )
            self._perform(plan)
            if log.enabled_for_info():
                self._log_result(t, plan, outcome)
            return self._answer(plan.response)
        finally:
            self._end_message()

    async def _check_message(self, t: Transaction, spool: Spool) -> tuple[Outcome, list[str]]:
        view = MessageView(spool)
        outcome = await self.bridge.chain.message(t, view)
        return outcome, [h.name for h in view.headers]

    def _perform(self, plan: EomPlan) -> None:
        for action in plan.actions:
            self._act(action)

    def _act(self, action: MilterAction) -> None:
        match action:
            case AddHeaderAction(name=name, value=value):
                self.addheader(name, value)
            case InsertHeaderAction(index=index, name=name, value=value):
                self.addheader(name, value, index)
            case ChangeHeaderAction(name=name, index=index, value=value):
                self.chgheader(name, index, value)
            case AddRcptAction(rcpt=rcpt, params=params):
                self.addrcpt(rcpt, " ".join(params) if params else None)
            case DelRcptAction(rcpt=rcpt):
                self.delrcpt(rcpt)
            case ChangeFromAction(sender=sender, params=params):
                self.chgfrom(sender, " ".join(params) if params else None)
            case ReplaceBodyAction(chunk=chunk):
                self.replacebody(chunk)
            case QuarantineAction(reason=reason):
                self.quarantine(reason)

    def _log_result(self, t: Transaction, plan: EomPlan, outcome: Outcome) -> None:
        log.info(f"from=<{t.sender}>", size=t.size, nrcpt=len(t.accepted))
        code = plan.response.code
        what = {0: "continue", 1: "reject", 2: "discard", 3: "accept", 4: "tempfail"}[code]
        if any(isinstance(a, QuarantineAction) for a in plan.actions):
            what = "hold"
        detail = (
            f" ({plan.response.reply.rcode} {plan.response.reply.xcode})"
            if (plan.response.reply is not None)
            else ""
        )
        log.info(
            f"{what}: END-OF-MESSAGE{detail}",
            modifications=len(plan.actions),
            decided_by=outcome.decided_by or "-",
        )

    @_guarded("ABORT")
    def abort(self) -> int:
        self._end_message()
        return CONTINUE

    @_guarded("CLOSE")
    def close(self) -> int:
        self._end_message()
        if self.counted:
            self.counted = False
            self.bridge.close_connection()
        session = self.session
        if session is None:
            return CONTINUE
        if "on_close" in self.bridge.stages:
            self.bridge.run_quietly(lambda: self._close_chain(session), "NOQUEUE")
        if log.enabled_for_info():
            log.plain(f"disconnect from {session.peer.describe()}")
        return CONTINUE

    async def _close_chain(self, session: Session) -> None:
        with trio.CancelScope(shield=True):
            await self.bridge.chain.close(session)


def _register(bridge: MilterBridge) -> None:
    """What ``Milter.runmilter`` does before ``milter.main()``, done on the trio thread so a
    bad address or a port in use fails start-up (and the socket is listening once this
    returns)."""
    settings = bridge.settings
    Milter.factory = functools.partial(FilterdMilter, bridge)
    milter.set_flags(ACTION_FLAGS)
    milter.set_connect_callback(Milter.connect_callback)
    milter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    milter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    milter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    # header() takes the raw bytes (@Milter.decode("bytes")): no detour through header_bytes.
    milter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header(f, v))
    milter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    milter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    milter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    milter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    milter.set_close_callback(Milter.close_callback)
    milter.setconn(settings.socket)
    milter.settimeout(settings.mta_timeout)
    milter.register(
        MILTER_NAME,
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
        negotiate=Milter.negotiate_callback,
    )
    milter.opensocket(True)  # True: remove a stale unix socket first


async def serve_milter(
    chain: ChainRunner,
    settings: MilterSettings,
    *,
    shutdown: Shutdown | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve Postfix's milter client on ``settings.socket`` until ``shutdown`` begins (forever
    without one). Only one per process: libmilter cannot run twice. The caller owns the
    chain's start/stop."""
    shutdown = shutdown or Shutdown()
    bridge = MilterBridge(chain, settings, shutdown, trio.lowlevel.current_trio_token())
    _register(bridge)
    ended = trio.Event()
    failure: list[BaseException] = []

    def run_libmilter() -> None:
        try:
            milter.main()
        except BaseException as exc:
            failure.append(exc)
        try:
            trio.from_thread.run_sync(ended.set, trio_token=bridge.token)
        except trio.RunFinishedError:
            pass

    thread = threading.Thread(target=run_libmilter, name="libmilter", daemon=True)
    thread.start()
    log.plain(f"milter listening on {settings.socket}")
    task_status.started()
    try:
        async with trio.open_nursery() as waiting:

            async def until_stop() -> None:
                await shutdown.event.wait()
                waiting.cancel_scope.cancel()

            async def until_ended() -> None:
                await ended.wait()
                waiting.cancel_scope.cancel()

            waiting.start_soon(until_stop)
            waiting.start_soon(until_ended)
        if not shutdown.stopping:
            raise RuntimeError(f"libmilter stopped unexpectedly: {failure or 'no error'}")
    finally:
        milter.stop()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(settings.shutdown_grace) as grace:
                await bridge.wait_for_messages()
            if grace.cancelled_caught:
                log.warning(f"{bridge.in_progress()} milter message(s) still open after the grace")
            await trio.to_thread.run_sync(thread.join, STOP_JOIN_TIMEOUT)
        log.plain("milter stopped")
