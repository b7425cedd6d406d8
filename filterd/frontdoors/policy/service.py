"""The Postfix policy front door: one trio task per policy connection, many requests on each.

Postfix (``check_policy_service inet:host:port``) keeps a connection per smtpd process and sends
one request per check, one at a time (Postfix SMTPD_POLICY_README). For each request this shell:

1. builds the model with ``policy_map.request_to_envelope`` (none when no plugin of the
   chain implements a stage this door runs, decides each request or has ``on_close``:
   nothing could read it, and the answer is ``DUNNO``, logged and counted as any);
2. runs the chain's stages for the request's ``protocol_state`` in SMTP order (connect, helo,
   mail_from, rcpt), stopping at the first ``Reject``/``TempFail``, so plugins see what the
   SMTP proxy shows them. Stages run **once per message**: requests of one message (RCPT,
   DATA, END-OF-MESSAGE with the same ``instance``, client and sender) share one ``Session``
   and ``Transaction`` — notes carry over, ``on_mail_from`` runs once, ``on_rcpt`` once per
   recipient, ``Transaction.recipients`` grows — and a later request reuses the verdicts of
   stages that already ran. Plugins that decide every request afresh, as postfwd and
   Postfix's ``check_*_access`` do (``Plugin.decides_each_policy_request``: rules, access),
   get the request's last stage run again when it was reused (``ChainRunner.only`` builds
   their runner once per listener; none configured, nothing runs twice): their verdict
   comes after the reused one (first refusal wins), replaces a reused decision of their own,
   and their ``Accept(final=True)`` ends the checks of its request only. Requests before
   RCPT cannot be tied to a message (Postfix sets ``instance`` only after MAIL FROM
   succeeds) and are each answered on their own. A request for another message ends the
   previous one: ``on_close`` runs for its session.
3. renders one action with ``policy_map.plan_action``: the first refusal, else a Discard or
   Quarantine, else Accept (``DUNNO`` unless ``accept_as_ok``), else Continue; ``PREPEND``
   carries one header per answer, and a header already prepended for the message is not sent
   again (so a per-recipient header appears once in multi-recipient mail), except by the
   per-request plugins deciding a reused stage again (they answer it each time).

Trouble — malformed input, a request over a limit, the request deadline, a bug of ours — is
answered with **nothing**: per SMTPD_POLICY_README the server logs and disconnects; Postfix
retries (``smtpd_policy_service_try_limit``) and then applies
``smtpd_policy_service_default_action`` (451 4.3.5 unless the admin chose e.g. DUNNO), so the
admin, not filterd, picks fail-open or fail-closed. Plugin crashes and timeouts are not
trouble: the chain turns them into verdicts (451 4.3.0 / 4.4.5 by default) that are answered.

Deadlines: ``idle_timeout`` (330 s) between requests — longer than Postfix's
``smtpd_policy_service_max_idle`` (300 s) so Postfix, not us, closes idle connections — and
``request_timeout`` (90 s) from a request's first byte to its answer, under Postfix's
``smtpd_policy_service_timeout`` (100 s) so an answer is never late for a waiting smtpd.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field

import trio

from filterd.chain.outcome import NOTHING, Outcome
from filterd.chain.runner import FINAL_ACCEPT, ChainRunner
from filterd.config.schema import LimitsConfig, ListenConfig
from filterd.frontdoors.closing import CLOSE_TIMEOUT, close_chain
from filterd.frontdoors.policy.message import Message, combine, decider
from filterd.frontdoors.shutdown import Shutdown
from filterd.maillog import MailLog, queue_id_var, sanitize, smtpd_line
from filterd.model import metrics, replies
from filterd.model.envelope import Recipient, Session, Transaction, new_queue_id
from filterd.model.verdict import (
    Accept,
    Continue,
    Quarantine,
    is_refusal,
)
from filterd.protocols.policy import (
    ConnectionClosed,
    NeedData,
    PolicyLimits,
    PolicyRequest,
    PolicyServer,
    RemoteProtocolError,
)
from filterd.protocols.policy_map import (
    STAGE_ORDER,
    PolicyAction,
    PolicyEnvelope,
    Stage,
    header_key,
    message_key,
    plan_action,
    prepend_allowed,
    request_to_envelope,
)
from filterd.protocols.smtp.common import RECEIVE_SIZE

__all__ = [
    "PolicyConnection",
    "PolicyHandler",
    "PolicySettings",
    "close_over_limit",
    "per_request_runner",
    "serve_policy_connection",
]

log = MailLog("policy")

_WATCH_STEP = 0.01  # seconds: the shortest sleep of a connection's watchdog (_watch)
_NOTHING_PLAN = PolicyAction("DUNNO")  # plan_action(NOTHING), whatever the settings
_NOTHING_METRIC = metrics.outcome_of_verdict(NOTHING.verdict)


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """What a policy listener needs, derived once at start-up from its configuration
    (``from_config``: the schema holds every default)."""

    name: str  # Session.listener: the address as configured, for logs and plugins
    accept_as_ok: bool  # render Accept as OK (ends Postfix's restriction list)
    request_timeout: float  # first byte of a request → its answer
    idle_timeout: float  # between requests
    max_connections: int  # more are closed at once (Postfix retries, then default_action)
    limits: PolicyLimits = field(default_factory=PolicyLimits)  # the codec's, not configured

    @classmethod
    def from_config(cls, listen: ListenConfig, limits: LimitsConfig) -> PolicySettings:
        return cls(
            name=str(listen.address),
            accept_as_ok=listen.accept_as_ok,
            request_timeout=limits.policy_request_timeout,
            idle_timeout=limits.policy_idle_timeout,
            max_connections=listen.max_connections,
        )


def per_request_runner(chain: ChainRunner) -> ChainRunner | None:
    """The chain's plugins that decide every policy request afresh
    (``Plugin.decides_each_policy_request``), or None when there is none."""
    per_request = chain.only(lambda entry: type(entry.plugin).decides_each_policy_request)
    return per_request if per_request.entries else None


FROM_CHAIN = ChainRunner()
"""``per_request`` not given: ``per_request_runner(chain)`` is built for the connection."""


class PolicyConnection:
    """One connection from Postfix's policy client."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        chain: ChainRunner,
        settings: PolicySettings,
        *,
        shutdown: Shutdown | None = None,
        per_request: ChainRunner | None = FROM_CHAIN,
    ) -> None:
        self.stream = stream
        self.chain = chain
        # the plugins that decide every request afresh (None: none is configured)
        self.per_request = per_request_runner(chain) if per_request is FROM_CHAIN else per_request
        self._per_request_labels = frozenset(
            entry.label for entry in (self.per_request.entries if self.per_request else ())
        )
        self.settings = settings
        self.shutdown = shutdown or Shutdown()
        self.codec = PolicyServer(settings.limits)
        self.peer = _describe_peer(stream)
        # Stages no plugin implements always end in Continue with nothing: skip their work.
        self._closes = chain.has_stage("on_close")
        self._live = frozenset(s for s in STAGE_ORDER if chain.has_stage(f"on_{s}"))
        # No plugin implements a stage this door runs, decides each request or has on_close:
        # no plugin can see a request's model, so none is built (the answer is always DUNNO).
        self._inert = not self._live and self.per_request is None and not self._closes
        self._message: Message | None = None
        self._started = 0.0  # when the request being read began
        self._scope = trio.CancelScope()  # the connection's (see _serve)
        self._due = math.inf  # when _watch cancels the connection's scope (see _serve)
        self._idle = False  # waiting for a request (under the idle timeout)
        self._answering = False  # a whole request arrived; answering it
        self._late = False  # it arrived as the connection's scope was cancelled
        # the descriptor of a socket stream, for _send (memory streams in tests have none)
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        log.connect(self.peer)
        try:
            await self._serve()
        except RemoteProtocolError as exc:
            log.warning(
                f"protocol error from {self.peer}: {sanitize(exc)}; closing without an answer"
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            log.info(f"lost connection with {self.peer}")
        except Exception:
            log.exception(f"internal error serving {self.peer}; closing without an answer")
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                await self._end_message()
                await self.stream.aclose()
            queue_id_var.set("NOQUEUE")
            log.disconnect(self.peer, requests=self.codec.requests)

    async def _serve(self) -> None:
        # One cancel scope for the whole connection, cancelled by _watch at the connection's
        # deadline (``_due``): the idle timeout while waiting for a request, the request
        # deadline from a request's first byte to its answer (a float stored per request: a
        # scope deadline moved twice per request cost more than the rest of the loop); and by
        # _watch when shutdown begins while a request is awaited.
        failure: Exception | None = None
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as watching:
                watching.start_soon(self._watch)
                try:
                    await self._requests()
                except Exception as exc:  # raised as it is (not in an exception group)
                    failure = exc
                finally:
                    watching.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if scope.cancelled_caught:
            if self._idle:
                why = "shutting down" if self.shutdown.stopping else "idle timeout"
                log.info(f"{why}: closing idle connection from {self.peer}")
            elif self._answering:
                self._log_unanswered()
            elif self.shutdown.stopping:
                log.info(f"shutting down: closing {self.peer} in the middle of a request")
            else:
                log.warning(f"timeout reading a request from {self.peer}")

    async def _watch(self) -> None:
        """Cancel the connection's scope at its deadline, or when shutdown begins (or has
        begun) while the connection waits for a request. It sleeps at most the shorter of the
        two timeouts at a time: a deadline set while it sleeps is at least that far from when
        it fell asleep, so it never wakes after one; it wakes once per timeout at most, not
        per request. (At least ``_WATCH_STEP`` at a time: a timeout of 0, which the
        configuration allows, would make it spin; such a deadline is met within that.)"""
        settings, shutdown, scope = self.settings, self.shutdown, self._scope
        step = max(min(settings.request_timeout, settings.idle_timeout), _WATCH_STEP)
        while True:
            now = trio.current_time()
            if now >= self._due or (shutdown.stopping and self._idle):
                scope.cancel()
                return
            with trio.CancelScope(deadline=min(self._due, now + step)):
                if shutdown.stopping:  # let a request in progress be answered
                    await trio.sleep_forever()
                else:
                    await shutdown.event.wait()

    async def _requests(self) -> None:
        while True:
            event = await self._next_event()
            if isinstance(event, ConnectionClosed):
                return
            self._answering = True
            if self._late:
                await self._answer_late(event)
                return  # the connection's scope is cancelled: nothing more on it
            action = await self._answer(event)
            await self._send(self.codec.send(action))
            self._answering = False
            queue_id_var.set("NOQUEUE")
            if self.shutdown.stopping:
                return
            if self.codec.in_request:  # a pipelined request began already: its deadline runs
                self._started = trio.current_time()  # from now; let the others run first
                self._due = self._started + self.settings.request_timeout
                await trio.lowlevel.checkpoint()
            # (else _next_event sets the idle deadline while waiting, then the request's)

    async def _send(self, answer: bytes) -> None:
        """The answer (a few hundred bytes), written straight to the socket when it takes it
        all, as it nearly always does; trio's ``send_all`` for the rest, and for any trouble
        (it raises trio's errors). This skips trio's trip through the scheduler after a send:
        one scheduler pass and one ``epoll_wait`` per request. Reading the next request is
        still a checkpoint, and when it is already buffered (pipelined), ``_requests`` makes
        one, so other connections get their turn after every answer."""
        fd = self._fd
        if fd is not None:
            try:
                answer = answer[os.write(fd, answer) :]
            except OSError:  # would block, or the connection's trouble: let trio say which
                pass
            if not answer:
                return
        await self.stream.send_all(answer)

    def _log_unanswered(self) -> None:
        log.warning(
            f"request from {self.peer} not answered within "
            f"{self.settings.request_timeout:g}s; closing without an answer"
        )

    async def _answer_late(self, request: PolicyRequest) -> None:
        deadline = self._started + self.settings.request_timeout
        with trio.CancelScope(shield=True, deadline=deadline) as rescue:
            action = await self._answer(request)
            await self.stream.send_all(self.codec.send(action))
        if rescue.cancelled_caught:
            self._log_unanswered()

    async def _next_event(self) -> PolicyRequest | ConnectionClosed:
        while True:
            event = self.codec.next_event()
            if not isinstance(event, NeedData):
                return event
            if self.codec.in_request:
                data = await self._receive()
            else:
                data = await self._receive_idle()
                self._started = trio.current_time()
                self._due = self._started + self.settings.request_timeout
            self.codec.receive_data(data)

    async def _receive(self) -> bytes:
        """What has arrived, once something has (``b""``: the peer closed). From a socket
        straight: trio's stream wraps each read in context managers that cost as much as the
        rest of a request's handling. The wait is a checkpoint (cancellation; other tasks'
        turn); trouble is an ``OSError`` (``run`` logs it as trio's errors)."""
        fd = self._fd
        if fd is None:
            return bytes(await self.stream.receive_some(RECEIVE_SIZE))
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                return os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:  # woken, yet nothing to read after all
                continue

    async def _receive_idle(self) -> bytes:
        """Wait for a request under the idle timeout (the connection's deadline; _watch
        cancels the connection's scope at it, or when shutdown begins while it waits here)."""
        self._due = trio.current_time() + self.settings.idle_timeout
        self._idle = True
        if self.shutdown.stopping:  # (as shutdown would have cancelled a waiting one)
            self._scope.cancel()
        data = await self._receive()
        self._idle = False  # (left set when the wait was cancelled: _serve logs why)
        # Bytes that arrived in the instant the scope was cancelled (shutdown, idle timeout):
        # cancelling is permanent, so that request is answered under a shielded scope.
        self._late = self._scope.cancel_called
        return data

    # -------------------------------------------------------------- requests
    async def _answer(self, request: PolicyRequest) -> str:
        attrs = request.attributes
        state = attrs.get("protocol_state", "").upper()
        queue_id_var.set(attrs.get("queue_id") or "NOQUEUE")
        if self._inert:  # nothing can see the model: every answer is plan_action(NOTHING)
            if log.enabled_for_debug():
                envelope = request_to_envelope(
                    attrs, session_id=new_queue_id(), listener=self.settings.name
                )
                self._log_answer(state, envelope, _NOTHING_PLAN.action, NOTHING)
            metrics.recorder.message("policy", _NOTHING_METRIC)
            return _NOTHING_PLAN.action
        envelope = request_to_envelope(
            attrs, session_id=new_queue_id(), listener=self.settings.name
        )
        key = message_key(attrs)
        message = self._same_message(key, envelope)
        if message is None:  # a message of its own: the open one (if any) ends
            if self._message is not None and self._closes:
                await self._end_message()
            message = Message(key, envelope.session, envelope.transaction)
            self._message = message if key is not None else None
        try:
            outcome, again = await self._run_stages(message, envelope)
        finally:
            if message.key is None and self._closes:
                await close_chain(self.chain, message.session)
        if outcome is NOTHING:  # no plugin ran, or none had anything to say
            plan = _NOTHING_PLAN
        else:
            plan = plan_action(
                outcome,
                accept_as_ok=self.settings.accept_as_ok,
                prepend=prepend_allowed(state),
                # decided again by per-request plugins: their header, as they answer it each
                # time
                already_prepended=() if again else message.prepended,
            )
        if plan.header is not None:
            message.prepended.add(header_key(plan.header))
        if plan.dropped and isinstance(outcome.verdict, Continue | Accept | Quarantine):
            log.info(
                "edits the policy protocol cannot apply here were dropped: "
                + ", ".join(type(e).__name__ for e in plan.dropped),
                decided_by=outcome.decided_by or "-",
            )
        self._log_answer(state, envelope, plan.action, outcome)
        metrics.recorder.message("policy", metrics.outcome_of_verdict(outcome.verdict))
        return plan.action

    def _same_message(
        self, key: tuple[str, ...] | None, envelope: PolicyEnvelope
    ) -> Message | None:
        """The open message when the request belongs to it (refreshed with what it says)."""
        current = self._message
        if key is not None and current is not None and current.key == key:
            current.refresh(envelope)
            return current
        return None

    async def _end_message(self) -> None:
        message, self._message = self._message, None
        if message is not None and self._closes:
            await close_chain(self.chain, message.session)

    async def _run_stages(self, message: Message, envelope: PolicyEnvelope) -> tuple[Outcome, bool]:
        """The request's outcome, and whether its last stage was reused and decided again by
        the per-request plugins (then every edit in it is theirs)."""
        session, t = message.session, message.transaction
        steps: list[tuple[Outcome, bool]] = []
        for stage in envelope.stages:
            if stage == "rcpt":
                assert envelope.recipient is not None, "the rcpt stage needs a recipient"
                step = await self._rcpt(message, envelope.recipient)
            else:
                cached = message.outcomes.get(stage)
                if cached is not None:
                    step = (cached, False)
                else:
                    if stage in self._live:
                        outcome = self._for_this_request(await self._stage(stage, session, t), t)
                    else:  # no plugin implements it (the common case for all but rcpt)
                        outcome = NOTHING
                    message.outcomes[stage] = outcome
                    step = (outcome, True)
            steps.append(step)
            if step[0] is not NOTHING and is_refusal(step[0].verdict):
                break
        reused, fresh = steps[-1]
        if fresh or self.per_request is None or len(steps) < len(envelope.stages):
            return combine(steps), False
        # The request's last stage was answered from an earlier request of the message: the
        # plugins that decide every request decide this one too. What one of them decided
        # for that earlier request (a refusal too) is not this request's answer.
        theirs = decider(reused) in self._per_request_labels
        if is_refusal(reused.verdict) and not theirs:
            return combine(steps), False  # another plugin's refusal stands for the message
        again = (await self._again(envelope, message), True)
        if theirs:
            steps[-1] = again
        else:
            steps.append(again)
        return combine(steps), True

    async def _again(self, envelope: PolicyEnvelope, message: Message) -> Outcome:
        """The request's last stage (``mail_from`` or ``rcpt``: earlier ones are never reused
        as the last) run again for the per-request plugins only."""
        chain = self.per_request
        assert chain is not None
        t = message.transaction
        if envelope.recipient is None:
            outcome = await chain.mail_from(t) if chain.has_stage("on_mail_from") else NOTHING
        else:
            address = envelope.recipient.address
            rcpt = next((r for r in t.recipients if r.address == address), Recipient(address))
            outcome = await chain.rcpt(t, rcpt)
        return self._for_this_request(outcome, t)

    def _for_this_request(self, outcome: Outcome, t: Transaction) -> Outcome:
        """A per-request plugin's ``Accept(final=True)`` (an OK that ends Postfix's
        restriction list) ends this request's checks only: the message's later requests are
        checked again, as Postfix checks them. (One of another plugin holds for the message.)"""
        verdict = outcome.verdict
        final = isinstance(verdict, Accept) and verdict.final
        if final and outcome.decided_by in self._per_request_labels:
            t.notes.set(FINAL_ACCEPT, False)  # it was not set before: the stage ran
        return outcome

    async def _stage(self, stage: Stage, session: Session, t: Transaction) -> Outcome:
        """A stage some plugin implements (``_live``: ``_run_stages`` skips the others)."""
        match stage:
            case "connect":
                return await self.chain.connect(session)
            case "helo":
                return await self.chain.helo(session, session.peer.helo or "")
            case "mail_from":
                return await self.chain.mail_from(t)
            case "rcpt":
                raise AssertionError("rcpt runs per recipient")

    async def _rcpt(self, message: Message, rcpt: Recipient) -> tuple[Outcome, bool]:
        """The recipient's outcome (``rcpt``: the request's, added to the transaction when its
        stage runs)."""
        address = rcpt.address
        cached = message.rcpt_outcomes.get(address)
        if cached is not None:
            return cached, False
        t = message.transaction
        outcome = await self.chain.rcpt(t, rcpt) if "rcpt" in self._live else NOTHING
        outcome = self._for_this_request(outcome, t)
        verdict = outcome.verdict
        # Our answer, not Postfix's: a later restriction may still refuse what we let pass.
        rcpt.reply = verdict.reply if is_refusal(verdict) else replies.RCPT_OK
        t.recipients.append(rcpt)
        message.rcpt_outcomes[address] = outcome
        return outcome, True

    def _log_answer(
        self, state: str, envelope: PolicyEnvelope, action: str, outcome: Outcome
    ) -> None:
        quiet = action == "DUNNO"  # the common answer is logged at debug level only
        if not (log.enabled_for_debug() if quiet else log.enabled_for_info()):
            return
        line = smtpd_line(
            "reject" if is_refusal(outcome.verdict) else "action",
            state or "UNKNOWN",
            envelope.session.peer,
            action,
            sender=envelope.transaction.sender,
            rcpt=envelope.recipient.address if envelope.recipient is not None else None,
        )
        if quiet:
            log.debug(line)
        else:
            log.info(line, decided_by=outcome.decided_by or "-")


def _describe_peer(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return "unknown[unknown]"
    if sock.family == socket.AF_UNIX:
        return "local[unix]"
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "unknown[unknown]"
    return f"[{host}]:{port}"


async def serve_policy_connection(
    stream: trio.abc.Stream,
    chain: ChainRunner,
    settings: PolicySettings,
    *,
    shutdown: Shutdown | None = None,
    per_request: ChainRunner | None = FROM_CHAIN,
) -> None:
    """Serve one policy connection until Postfix closes it, a timeout, trouble or shutdown.
    Never raises for what happens on the connection (other connections keep being served).
    ``per_request``: ``per_request_runner(chain)``, when the caller built it already."""
    await PolicyConnection(
        stream, chain, settings, shutdown=shutdown, per_request=per_request
    ).run()


class PolicyHandler:
    """A connection handler with the ``ConnectionHandler`` shape (``over_limit()``,
    ``await handler(stream)``). Beyond ``max_connections`` a connection is closed at once —
    a policy client gets no 421 line; Postfix retries, then applies its default_action — so
    ``over_limit`` is always False and the limit is enforced here."""

    def __init__(
        self, chain: ChainRunner, settings: PolicySettings, shutdown: Shutdown | None = None
    ) -> None:
        self.chain = chain
        self.settings = settings
        self.shutdown = shutdown or Shutdown()
        self.active = 0
        self.per_request = per_request_runner(chain)  # once, not per connection

    def over_limit(self) -> bool:
        return False

    async def refuse(self, stream: trio.abc.Stream) -> None:
        await close_over_limit(stream, self.active)

    async def refuse_over_limit(self, stream: trio.abc.Stream, active: int) -> None:
        """Beyond ``max_connections`` (``active`` open, in every process of the listener)."""
        await close_over_limit(stream, active)

    async def __call__(self, stream: trio.abc.Stream) -> None:
        if self.active >= self.settings.max_connections:
            await close_over_limit(stream, self.active)
            return
        self.active += 1
        metrics.recorder.session("policy", 1)
        try:
            await serve_policy_connection(
                stream,
                self.chain,
                self.settings,
                shutdown=self.shutdown,
                per_request=self.per_request,
            )
        finally:
            self.active -= 1
            metrics.recorder.session("policy", -1)


async def close_over_limit(stream: trio.abc.Stream, active: int) -> None:
    """Beyond ``max_connections``: log and close at once (a policy client gets no reply line;
    Postfix retries, then applies its default_action)."""
    log.warning(f"too many policy connections ({active}): closing {_describe_peer(stream)}")
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        await stream.aclose()
