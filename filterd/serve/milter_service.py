"""The milter front door: Postfix's ``smtpd_milters`` talks to libmilter (via pymilter) in this
process; each callback hops into trio to run the chain (contracts.md §3.5, option C; the reasons
are in docs/architecture.md, "The milter front door").

```
trio thread                                  libmilter threads (one callback at a time per MTA
                                             connection, on any worker thread)
serve_milter ── starts ──▶ "libmilter" thread: smfi_main()
MilterBridge.call ◀── trio.from_thread.run ── FilterdMilter.connect/hello/envfrom/envrcpt/eom/close
   fail_after(budget), capacity limit,        header/body: written to a Spool, no hop
   chain stages                               abort: ends the message
```
Rules kept here:

- **Timeouts inside the hop**: a hop runs as a trio system task that no cancel scope of ours
  reaches, so each hop has its own ``fail_after``: ``command_budget`` (under Postfix's
  ``milter_command_timeout``, 30 s) for CONNECT..RCPT, ``content_budget`` (under
  ``milter_content_timeout``, 300 s) at end of message. Too slow → TEMPFAIL 451 4.4.5.
- **Overload**: at most ``max_connections`` MTA connections (each pins a libmilter worker
  while it waits); one more is answered TEMPFAIL 451 4.3.2 at CONNECT, never queued.
- **Shutdown**: trio owns SIGTERM/SIGINT (libmilter blocks them in its threads; the supervisor's
  signal watcher gets them) and calls ``milter.stop()``; libmilter notices within ~5 s
  (MI_CHK_TIME). New messages are answered TEMPFAIL at once; messages in progress get
  ``shutdown_grace`` to reach end of message. A hop that finds trio gone or going
  (``RunFinishedError``, ``Cancelled``) answers TEMPFAIL — never ACCEPT — so nothing is lost.
- **Per-connection state only on the FilterdMilter object** (a connection's callbacks run on
  different OS threads); the counters live on the bridge and change only on the trio thread.
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

from filterd.chain.outcome import Outcome
from filterd.chain.runner import ChainRunner
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
    recipient_from_rcpt,
    render_refusal,
    render_stage,
    session_from_connect,
    transaction_from_mail,
    update_macros,
)
from filterd.serve.shutdown import Shutdown

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
    """The trio side. Its counters change only on the trio thread."""

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
        self._changed = trio.Event()

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
        """For endings (abort, close): trio being gone is not worth a line."""
        try:
            self.run(fn, CLOSE_BUDGET, queue_id)
        except _Refused:
            pass

    # ------------------------------------------------------------------ trio thread
    async def _call(self, fn: Callable[[], Awaitable[T]], budget: float, queue_id: str) -> T:
        queue_id_var.set(queue_id)
        with trio.fail_after(budget):
            return await fn()

    async def open_connection(self, conn: FilterdMilter, session: Session) -> Outcome:
        if self.shutdown.stopping:
            raise _Refused(FILTER_STOPPING)
        if self.connections >= self.settings.max_connections:
            log.warning(f"too many milter connections ({self.connections}): tempfail")
            raise _Refused(FILTER_BUSY)
        self.connections += 1
        conn.counted = True
        return await self.chain.connect(session)

    async def close_connection(self, conn: FilterdMilter, session: Session | None) -> None:
        if conn.counted:
            conn.counted = False
            self.connections -= 1
        if session is not None:
            with trio.CancelScope(shield=True):
                await self.chain.close(session)

    async def begin_message(self, t: Transaction) -> Outcome:
        if self.shutdown.stopping:
            raise _Refused(FILTER_STOPPING)
        self.messages += 1
        return await self.chain.mail_from(t)

    async def end_message(self) -> None:
        self.messages -= 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_messages(self) -> None:
        while self.messages > 0:
            await self._changed.wait()


@dataclass(slots=True)
class _Message:
    """The message in progress on one MTA connection."""

    t: Transaction
    edits: list[Edit] = field(default_factory=list)  # from MAIL/RCPT, sent at end of message
    disposition: Discard | Quarantine | None = None
    spool: Spool | None = None

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


def _guarded(stage: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """A callback never lets an exception reach pymilter: log it and answer TEMPFAIL."""

    def decorate(callback: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(callback)
        def wrapper(self: FilterdMilter, *args: object) -> int:
            try:
                return callback(self, *args)
            except Exception:
                log.exception(f"internal error in {stage}: tempfail")
                return self._answer(render_refusal(TEMPFAIL, FILTER_FAILED))

        return wrapper

    return decorate


class FilterdMilter(Milter.Base):  # type: ignore[misc]  # pymilter has no type stubs
    """One MTA connection. All its state lives here (contracts.md §3.5 pitfall 5)."""

    def __init__(self, bridge: MilterBridge) -> None:
        self.bridge = bridge
        self.counted = False  # set on the trio thread when the connection was admitted
        self.session: Session | None = None
        self.message: _Message | None = None
        self.session_disposition: Discard | Quarantine | None = None

    # ---------------------------------------------------------------- helpers
    def _macros(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for name in MACRO_NAMES:
            value = self.getsymval(name)
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

    def _queue_id(self) -> str:
        return self.message.t.queue_id if self.message is not None else "NOQUEUE"

    def _end_message(self) -> None:
        message, self.message = self.message, None
        if message is not None:
            message.close()
            self.bridge.run_quietly(self.bridge.end_message, message.t.queue_id)
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
        log.plain(f"connect from {session.peer.describe()}")
        budget = self.bridge.settings.command_budget
        try:
            outcome = self.bridge.run(
                lambda: self.bridge.open_connection(self, session), budget, "NOQUEUE"
            )
        except _Refused as refused:
            return self._refuse(refused.reply)
        self.session_disposition = disposition_of(outcome.verdict)
        if isinstance(outcome.verdict, Reject | TempFail):
            self._log_reject("CONNECT", outcome.verdict.reply)
        return self._answer(render_stage(outcome.verdict))

    @_guarded("HELO")
    def hello(self, heloname: str) -> int:
        session = self.session
        assert session is not None
        apply_helo(session, heloname, self._macros())
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

    @_guarded("MAIL")
    def envfrom(self, mailfrom: str, *params: str) -> int:
        session = self.session
        assert session is not None
        self._end_message()
        t = transaction_from_mail(session, mailfrom, params, self._macros())
        queue_id_var.set(t.queue_id)
        budget = self.bridge.settings.command_budget
        try:
            outcome = self.bridge.run(lambda: self.bridge.begin_message(t), budget, t.queue_id)
        except _Refused as refused:
            if refused.reply is FILTER_STOPPING:
                return self._refuse(refused.reply)  # no message was begun
            self.message = _Message(t)  # begun: end_message balances the count
            self._end_message()
            return self._refuse(refused.reply)
        message = _Message(t, list(outcome.edits))
        message.disposition = self.session_disposition or disposition_of(outcome.verdict)
        self.message = message
        if isinstance(outcome.verdict, Reject | TempFail):
            self._log_reject("MAIL", outcome.verdict.reply)
            self._end_message()
            return self._answer(render_stage(outcome.verdict))
        return self._finish_early(render_stage(outcome.verdict, may_accept=self._nothing_due()))

    @_guarded("RCPT")
    def envrcpt(self, to: str, *params: str) -> int:
        message = self.message
        if message is None:  # the message was refused or accepted for good at MAIL
            return CONTINUE
        t = message.t
        update_macros(t.session, self._macros())
        rcpt = recipient_from_rcpt(to, params)
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
    @_guarded("HEADER")
    def header(self, name: str, value: bytes) -> int:
        if self.message is not None:
            raw = name.encode("utf-8", "surrogateescape") + b": " + value.replace(b"\n", b"\r\n")
            self._spool(self.message).write(raw + b"\r\n")
        return CONTINUE

    @_guarded("EOH")
    def eoh(self) -> int:
        if self.message is not None:
            self._spool(self.message).write(b"\r\n")
        return CONTINUE

    @_guarded("BODY")
    def body(self, chunk: bytes) -> int:
        if self.message is not None:
            self._spool(self.message).write(chunk)
        return CONTINUE

    @_guarded("END-OF-MESSAGE")
    def eom(self) -> int:
        message = self.message
        if message is None:
            return CONTINUE
        t = message.t
        macros = self._macros()
        update_macros(t.session, macros)
        t.queue_id = macros.get("i") or t.queue_id
        queue_id_var.set(t.queue_id)
        spool = self._spool(message)
        t.size = spool.size
        budget = self.bridge.settings.content_budget
        try:
            try:
                outcome, names = self.bridge.run(
                    lambda: self._check_message(t, spool), budget, t.queue_id
                )
            except _Refused as refused:
                return self._refuse(refused.reply)
            plan = plan_eom(
                outcome, names, earlier_edits=message.edits, disposition=message.disposition
            )
            self._perform(plan)
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
        session = self.session
        self.bridge.run_quietly(lambda: self.bridge.close_connection(self, session), "NOQUEUE")
        if session is not None:
            log.plain(f"disconnect from {session.peer.describe()}")
        return CONTINUE


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
    milter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
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
                log.warning(f"{bridge.messages} milter message(s) still open after the grace")
            await trio.to_thread.run_sync(thread.join, STOP_JOIN_TIMEOUT)
        log.plain("milter stopped")
