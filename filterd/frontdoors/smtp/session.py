"""One inbound SMTP/LMTP connection: read, feed the codec, answer its events.

Boring on purpose: the codec decides what is legal; this module does the I/O,
the deadlines, and calls the checks (the plugin chain's seam) and the delivery at each stage.
No 250 is ever given to the end of DATA before the delivery has the message. Who may relay
(``relay_control``) is decided before the chain sees a recipient; SMTP AUTH is ``auth``'s.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn

import trio

from filterd.chain.outcome import Outcome
from filterd.chain.runner import ChainRunner
from filterd.config.schema import LimitsConfig, ListenConfig
from filterd.delivery.interface import Delivery, DeliveryTransaction, collapse_replies
from filterd.delivery.quarantine import QuarantineStore
from filterd.delivery.socket_io import SocketIO
from filterd.frontdoors.closing import CLOSE_TIMEOUT, close_chain
from filterd.frontdoors.shutdown import Shutdown
from filterd.frontdoors.smtp.auth import MECHANISMS, SmtpAuth
from filterd.frontdoors.smtp.dovecot_auth import DovecotAuth
from filterd.frontdoors.smtp.relay_control import RelayControl, relay_undecided
from filterd.maillog import MailLog, queue_id_var, sanitize, smtpd_line
from filterd.maillog.lines import client_line
from filterd.model import metrics, replies
from filterd.model.editing import apply_content_edits, apply_envelope_edits
from filterd.model.edits import ENVELOPE_EDITS, Edit
from filterd.model.envelope import (
    SMTP_LOGIN,
    Recipient,
    Session,
    Transaction,
    Xforwarded,
    new_queue_id,
)
from filterd.model.findings import MESSAGE_FINDINGS
from filterd.model.message import MessageView
from filterd.model.reply import Reply
from filterd.model.spool import Spool
from filterd.model.trace import received_header
from filterd.model.verdict import (
    Discard,
    Disposition,
    Quarantine,
    disposition_of,
    final_verdict,
    is_refusal,
)
from filterd.protocols.smtp import events as ev
from filterd.protocols.smtp.common import RECEIVE_SIZE, NeedData
from filterd.protocols.smtp.server import Capabilities, ServerLimits, SmtpServer, State

log = MailLog("smtpd")


class _SessionEnd(Exception):
    """Raised inside the loop to end the session after the last reply is flushed."""


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a session needs, derived once per listener at start-up."""

    listen: ListenConfig
    limits: LimitsConfig
    ssl_context: ssl.SSLContext | None = None
    # the codec's limits and offers, made once (a session per connection)
    _codec_limits: ServerLimits = field(init=False, repr=False, compare=False)
    _offers: tuple[Capabilities, Capabilities] = field(init=False, repr=False, compare=False)
    relay: RelayControl = field(init=False, repr=False, compare=False)
    dovecot: DovecotAuth | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lim = self.limits
        limits = ServerLimits(
            max_command_line=lim.max_command_line,
            max_text_line=lim.max_text_line,
            max_message_size=lim.max_message_size,
            max_recipients=lim.max_recipients,
            max_errors=lim.max_errors,
            bare_newline=lim.bare_newline,
        )
        auth_socket = self.listen.auth_socket
        offers = tuple(
            Capabilities(
                hostname=self.listen.hostname,
                starttls=self.ssl_context is not None,
                xforward=xforward,
                auth=MECHANISMS if auth_socket is not None else (),
            )
            for xforward in (False, True)
        )
        object.__setattr__(self, "_codec_limits", limits)
        object.__setattr__(self, "_offers", offers)
        object.__setattr__(self, "relay", RelayControl.from_config(self.listen))
        dovecot = DovecotAuth(auth_socket) if auth_socket is not None else None
        object.__setattr__(self, "dovecot", dovecot)

    def server_limits(self) -> ServerLimits:
        return self._codec_limits

    def capabilities(self, *, xforward: bool) -> Capabilities:
        """What the EHLO reply offers; XFORWARD only to clients allowed to send it."""
        return self._offers[xforward]


@dataclass(slots=True)
class _Open:
    """The transaction in progress."""

    t: Transaction
    delivery: DeliveryTransaction | None
    spool: Spool | None = None
    started: float = field(default=0.0)
    edits: list[Edit] = field(default_factory=list)  # from envelope stages, applied at the end
    disposition: Disposition | None = None  # decided before the end of message
    outcome: metrics.Outcome | None = None  # discarded or quarantined (else: by the reply)
    spool_error: OSError | None = None  # the spool could not be written (disk full...)


def _refusal(outcome: Outcome) -> Reply | None:
    verdict = outcome.verdict
    return verdict.reply if is_refusal(verdict) else None


def _first_failure(answers: Iterable[Reply]) -> Reply | None:
    """The first transient refusal among ``answers``, else the first permanent one, else None."""
    failures = [reply for reply in answers if not reply.is_positive]
    transient = [reply for reply in failures if reply.is_transient]
    first = transient or failures
    return first[0] if first else None


def _accepted_locally(t: Transaction) -> Reply:
    """What the client sees for a discarded or quarantined message: a plain success."""
    return Reply(250, "2.0.0", f"Ok: queued as {t.queue_id}")


class SmtpSession:
    def __init__(
        self,
        stream: trio.abc.Stream,
        session: Session,
        settings: SessionSettings,
        chain: ChainRunner,
        delivery: Delivery,
        quarantine: QuarantineStore,
        shutdown: Shutdown,
        *,
        xforward_allowed: bool,
        relay_allowed: bool | None,
    ) -> None:
        self.stream: trio.abc.Stream = stream
        self.io = SocketIO(stream)
        self.session = session
        self.settings = settings
        self.chain = chain
        self.delivery = delivery
        self.quarantine = quarantine
        self.shutdown = shutdown
        listen = settings.listen
        self.lmtp = listen.protocol == "lmtp"
        self.door: metrics.Door = "lmtp" if self.lmtp else "smtp"
        self.codec = SmtpServer(
            settings.server_limits(),
            settings.capabilities(xforward=xforward_allowed),
            lmtp=self.lmtp,
        )
        self._out = bytearray()
        self._open: _Open | None = None
        self._xforward: Xforwarded | None = None
        self._data_deadline = 0.0
        # When the command being read must be complete: set at the first wait for it, so a
        # client sending a byte at a time (slowloris) gets no more time than a silent one.
        self._command_deadline: float | None = None
        self._session_disposition: Disposition | None = None
        # mynetworks (or open_relay); an AUTH can add it; None: a mynetworks table failed
        self._may_relay = relay_allowed
        self.auth: SmtpAuth | None = None
        if settings.dovecot is not None:
            self.auth = SmtpAuth(settings.dovecot, settings.limits, session.peer, _local_ip(stream))

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        peer = self.session.peer
        if log.enabled_for_info():
            log.connect(peer.describe())
        try:
            await self._serve()
        except _SessionEnd:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            log.info("lost connection", state=self.codec.state.value)
        except trio.TooSlowError:
            log.info("timeout sending to the client", state=self.codec.state.value)
        except Exception:
            log.exception("internal error, closing session", state=self.codec.state.value)
            await self._try_send(replies.INTERNAL_ERROR.with_text("Error: internal error"))
        finally:
            if self.auth is not None:
                with trio.CancelScope(shield=True):
                    await self.auth.abandon()
            if (
                self._open is None
                and not self.chain.has_stage("on_close")
                and isinstance(self.stream, trio.SocketStream)
            ):
                # Nothing to abort, no plugin to tell, no TLS to close: closing cannot wait.
                self._xforward = None
                self.stream.socket.close()
            else:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                    await self._abort_transaction()
                    if self.chain.has_stage("on_close"):
                        await close_chain(self.chain, self.session)
                    await self.stream.aclose()
            queue_id_var.set("NOQUEUE")
            if log.enabled_for_info():
                log.disconnect(peer.describe())

    async def _serve(self) -> None:
        outcome = await self.chain.connect(self.session)
        self._session_disposition = disposition_of(outcome.verdict)
        refusal = _refusal(outcome)
        if refusal is not None:
            # RFC 5321 §3.1: a refused connection is greeted with 554 (or 421 to try later).
            if refusal.code not in (421, 554):
                refusal = Reply(554, "5.7.1", refusal.text)
            metrics.recorder.refusal(self.door, "connect", metrics.outcome_of_reply(refusal))
            self._out += refusal.to_bytes()
            await self._flush()
            return
        self._out += self.codec.greeting()
        while True:
            event = self.codec.next_event()
            if isinstance(event, NeedData):
                await self._flush()
                await self._receive()
                continue
            self._command_deadline = None  # the next command gets command_timeout afresh
            await self._handle(event)

    async def _receive(self) -> None:
        """Read more under the right deadline: per command, or per DATA with a minimum rate.
        Bytes there at once or after one checkpoint are taken without a cancel scope."""
        limits = self.settings.limits
        in_data = self.codec.state is State.DATA
        idle = self._open is None and not in_data
        if idle and self.shutdown.stopping:
            await self._close_with(replies.SHUTTING_DOWN)
        data = await self.io.receive_soon(RECEIVE_SIZE)
        if data is None:
            data = await self._receive_waiting(in_data, idle)
        if in_data and data:
            self._data_deadline = min(
                trio.current_time() + limits.data_timeout,
                self._data_deadline + len(data) / max(1, limits.min_data_rate),
            )
        self.codec.receive_data(data)

    async def _receive_waiting(self, in_data: bool, idle: bool) -> bytes:
        """Wait for bytes under the deadline; an idle session (between transactions) can be
        told 421 by a stop while it waits."""
        limits = self.settings.limits
        if in_data:
            deadline = self._data_deadline
        else:
            if self._command_deadline is None:
                self._command_deadline = trio.current_time() + limits.command_timeout
            deadline = self._command_deadline
        with trio.CancelScope(deadline=deadline) as scope:
            if idle:
                self.shutdown.register_idle(scope)
            try:
                return await self.io.receive_waiting(RECEIVE_SIZE)
            finally:
                if idle:
                    self.shutdown.unregister_idle(scope)
        if self.shutdown.stopping and idle:
            await self._close_with(replies.SHUTTING_DOWN)
        log.info("timeout after " + self.codec.state.value.upper())
        await self._close_with(replies.TIMEOUT)

    async def _flush(self) -> None:
        if self._out:
            out, self._out = bytes(self._out), bytearray()
            await self.io.send_all(out, trio.current_time() + self.settings.limits.command_timeout)

    def _reply(self, reply: Reply) -> None:
        self._out += self.codec.send(reply)

    async def _hang_up_after(self, reply: Reply) -> None:
        """A 421 or 521 refusal ends the session after it is sent (RFC 5321 §3.8; Postfix's
        smtpd hangs up after any such reply, e.g. an access(5) ``421 text``)."""
        if reply.code in (421, 521):
            await self._close_with(reply)

    async def _close_with(self, reply: Reply) -> NoReturn:
        await self._abort_transaction()
        self._out += reply.to_bytes()
        await self._try_flush()
        raise _SessionEnd

    async def _try_send(self, reply: Reply) -> None:
        self._out += reply.to_bytes()
        await self._try_flush()

    async def _try_flush(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            try:
                await self._flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, trio.TooSlowError):
                pass

    # ---------------------------------------------------------------- events
    async def _handle(self, event: ev.ServerEvent) -> None:
        match event:
            case ev.BodyChunk(data=data):
                current = self._open
                # After a write error the rest is read on to the dot, and not kept.
                if current is not None and current.spool is not None and not current.spool_error:
                    try:
                        current.spool.write(data)
                    except OSError as exc:
                        log.warning(f"spool write error: {exc}")
                        current.spool_error = exc
            case ev.Hello(verb=verb, name=name):
                await self._hello(verb, name)
            case ev.Xforward(attributes=attributes):
                if self._xforward is None:
                    self._xforward = Xforwarded()
                self._xforward.update(attributes)
                self._reply(replies.XFORWARD_OK)
            case ev.MailFrom():
                await self._mail(event)
            case ev.RcptTo():
                await self._rcpt(event)
            case ev.Data():
                self._data()
            case ev.EndOfData():
                await self._end_of_data(event)
            case ev.Reset():
                await self._abort_transaction()
                self._reply(replies.RESET_OK)
            case ev.Noop():
                self._reply(replies.OK)
            case ev.Vrfy():
                self._reply(replies.VRFY_CANNOT)
            case ev.Help():
                self._reply(replies.HELP)
            case ev.StartTls():
                await self._starttls()
            case ev.Auth() | ev.AuthResponse():
                await self._auth(event)
            case ev.Quit():
                await self._abort_transaction()
                self._reply(replies.BYE)
                await self._flush()
                raise _SessionEnd
            case ev.BadCommand(reply=reply, fatal=fatal):
                if self.auth is not None:
                    await self.auth.abandon()  # a bad line may end an AUTH exchange
                self._reply(reply)
                if fatal:
                    log.info(f"fatal protocol error: {reply}")
                    await self._abort_transaction()
                    await self._try_flush()
                    raise _SessionEnd
            case ev.ConnectionClosed():
                raise _SessionEnd

    async def _hello(self, verb: str, name: str) -> None:
        outcome = await self.chain.helo(self.session, name)
        self._session_disposition = self._session_disposition or disposition_of(outcome.verdict)
        refusal = _refusal(outcome)
        if refusal is not None:
            metrics.recorder.refusal(self.door, "helo", metrics.outcome_of_reply(refusal))
            await self._hang_up_after(refusal)
            self._reply(refusal)
            return
        await self._abort_transaction()
        peer = self.session.peer
        peer.helo = name
        if verb == "HELO":
            peer.protocol = "SMTP"
            self._reply(Reply(250, "", self.settings.listen.hostname))
            return
        peer.protocol = "LMTP" if verb == "LHLO" else "ESMTPS" if self.session.tls else "ESMTP"
        self._reply(self.codec.ehlo_reply())

    async def _mail(self, event: ev.MailFrom) -> None:
        t = Transaction(
            queue_id=new_queue_id(),
            session=self.session,
            sender=event.address,
            mail_params=event.params,
            xforward=self._xforward,
        )
        queue_id_var.set(t.queue_id)
        outcome = await self.chain.mail_from(t)
        reply = _refusal(outcome)
        delivery: DeliveryTransaction | None = None
        if reply is None:
            delivery = self.delivery.open()
            reply = await delivery.mail(t)
            if not reply.is_positive:
                await delivery.abort()
                delivery = None
        if reply.is_positive:
            self._open = _Open(t, delivery, started=trio.current_time())
            self._open.edits.extend(outcome.edits)
            self._open.disposition = self._session_disposition or disposition_of(outcome.verdict)
            if log.enabled_for_info():
                log.line(self._client_line(t) + self._sasl_fields())
        else:
            self._log_reject("MAIL", reply, t.sender, None)
            queue_id_var.set("NOQUEUE")
            await self._hang_up_after(reply)
        self._reply(reply)

    async def _rcpt(self, event: ev.RcptTo) -> None:
        current = self._open
        assert current is not None, "codec allows RCPT only inside a transaction"
        rcpt = Recipient(event.address, event.params)
        if not self._may_relay:
            denied = self.settings.relay.refusal(rcpt.address)
            if denied is not None and self._may_relay is None:
                denied = relay_undecided(rcpt.address)
            if denied is not None:
                rcpt.reply = denied
                current.t.recipients.append(rcpt)
                self._log_relay_denied(current.t, denied, rcpt.address)
                self._reply(denied)
                return
        outcome = await self.chain.rcpt(current.t, rcpt)
        reply = _refusal(outcome)
        if reply is None:
            assert current.delivery is not None
            reply = await current.delivery.rcpt(current.t, rcpt)
        rcpt.reply = reply
        current.t.recipients.append(rcpt)
        if reply.is_positive:
            current.edits.extend(outcome.edits)
            current.disposition = current.disposition or disposition_of(outcome.verdict)
        if not reply.is_positive:
            self._log_reject("RCPT", reply, current.t.sender, rcpt.address)
            await self._hang_up_after(reply)
        self._reply(reply)

    def _data(self) -> None:
        current = self._open
        assert current is not None
        limits = self.settings.limits
        current.spool = Spool(limits.spool_memory, limits.spool_dir)
        current.spool.crlf_only = True  # the codec normalizes or refuses bare CR and LF
        self._data_deadline = trio.current_time() + limits.data_timeout
        self._reply(replies.START_DATA)

    async def _end_of_data(self, event: ev.EndOfData) -> None:
        current = self._open
        assert current is not None
        assert current.spool is not None
        t, spool = current.t, current.spool
        t.size = event.size
        owed = len(t.accepted) if self.lmtp else 1
        if current.spool_error is None:
            try:
                spool.flush()
            except OSError as exc:
                log.warning(f"spool write error: {exc}")
                current.spool_error = exc
        try:
            if event.rejection is not None:
                per = [event.rejection] * owed
                self._log_end("reject", event.rejection, t)
                await self._abort_transaction()
            elif current.spool_error is not None:
                full = current.spool_error.errno in (errno.ENOSPC, errno.EDQUOT)
                per = [replies.INSUFFICIENT_STORAGE if full else replies.QUEUE_WRITE] * owed
                self._log_end("reject", per[0], t)
                await self._abort_transaction()
            else:
                per = await self._deliver(current, spool)
        finally:
            spool.close()
        answer = collapse_replies(per)
        metrics.recorder.message(self.door, current.outcome or metrics.outcome_of_reply(answer))
        if self.lmtp:
            for reply in per:
                self._reply(reply)
        else:
            self._reply(answer)
        self._finish_transaction()

    async def _deliver(self, current: _Open, spool: Spool) -> list[Reply]:
        t = current.t
        accepted = len(t.accepted)
        if self.settings.listen.add_received_header:
            protocol = self.session.peer.protocol
            spool.prefix = received_header(
                t, self.settings.listen.hostname, protocol, datetime.now(UTC)
            )
        view = MessageView(spool)
        outcome = await self.chain.message(t, view)
        t.notes.set(MESSAGE_FINDINGS, outcome.findings)
        edits = [*current.edits, *outcome.edits]
        verdict = final_verdict(outcome.verdict, current.disposition)
        if is_refusal(verdict):
            await self._abort_delivery(current)
            self._log_end("reject", verdict.reply, t)
            return [verdict.reply] * accepted
        match verdict:
            case Discard(reason=reason):
                await self._abort_delivery(current)
                self._log_end("discard", reason, t)
                current.outcome = "discard"
                return [_accepted_locally(t)] * accepted
            case Quarantine(reason=reason):
                await self._abort_delivery(current)
                apply_content_edits(view, edits)
                plugin = outcome.decided_by if verdict is outcome.verdict else None
                reply = await self.quarantine.store(t, spool, reason, plugin)
                if reply.is_positive:
                    current.outcome = "quarantine"
                    self._log_end("hold", reason, t)
                else:
                    self._log_end("reject", reply, t)
                return [reply] * accepted
            case _:
                pass
        apply_content_edits(view, edits)
        if any(isinstance(edit, ENVELOPE_EDITS) for edit in edits):
            return await self._deliver_with_new_envelope(current, spool, edits)
        delivery = current.delivery
        if delivery is None:
            return [replies.INTERNAL_ERROR] * accepted
        per = await delivery.data(t, spool)
        current.delivery = None  # the delivery transaction is complete
        if len(per) != accepted:
            log.error("delivery returned the wrong number of replies", got=len(per))
            return [replies.INTERNAL_ERROR] * accepted
        return per

    async def _deliver_with_new_envelope(
        self, current: _Open, spool: Spool, edits: list[Edit]
    ) -> list[Reply]:
        """Sender or recipients were edited: the next stage's transaction so far carries the
        old envelope, so it is dropped and the message handed on in a new one."""
        await self._abort_delivery(current)
        t = current.t
        edited = apply_envelope_edits(t, edits)
        delivery = self.delivery.open()
        reply = await delivery.mail(edited)
        if not reply.is_positive:
            await delivery.abort()
            return [reply if reply.is_transient else replies.INTERNAL_ERROR] * len(t.accepted)
        for rcpt in edited.recipients:
            rcpt.reply = await delivery.rcpt(edited, rcpt)
            log.info(f"envelope edit: to=<{rcpt.address}>", reply=rcpt.reply)
        # A recipient of the new envelope the next hop refuses has no one to bounce it but
        # the client: its refusal goes to every recipient the client gave (a 250 would lose
        # the message for it, e.g. a REDIRECT to an address the next hop refuses).
        refused = _first_failure(r.reply for r in edited.recipients if r.reply is not None)
        if refused is not None or not edited.accepted:
            await delivery.abort()
            if refused is None:  # every recipient removed on purpose (like milter delrcpt)
                return [_accepted_locally(t)] * len(t.accepted)
            return [replies.INTERNAL_ERROR if refused.is_transient else refused] * len(t.accepted)
        per = dict(zip((r.address for r in edited.accepted), await delivery.data(edited, spool),
                       strict=True))  # fmt: skip
        failed = _first_failure(per.values())
        if failed is not None:  # the next hop did not take it for every new recipient
            return [failed] * len(t.accepted)
        # Removed recipients were accepted and dropped on purpose (like milter delrcpt).
        return [per.get(rcpt.address, _accepted_locally(t)) for rcpt in t.accepted]

    async def _abort_delivery(self, current: _Open) -> None:
        if current.delivery is not None:
            delivery, current.delivery = current.delivery, None
            await delivery.abort()

    async def _starttls(self) -> None:
        context = self.settings.ssl_context
        assert context is not None
        self._reply(replies.READY_TLS)
        await self._flush()
        self.codec.start_tls()
        tls = trio.SSLStream(self.stream, context, server_side=True)
        with trio.move_on_after(self.settings.limits.tls_handshake_timeout) as scope:
            await tls.do_handshake()
        if scope.cancelled_caught:
            log.info("TLS handshake timeout")
            raise _SessionEnd
        self.stream = tls
        self.io = SocketIO(tls)
        self.session.tls = True
        self._xforward = None

    # ------------------------------------------------------ relay and AUTH
    async def _auth(self, event: ev.Auth | ev.AuthResponse) -> None:
        auth = self.auth
        assert auth is not None, "the codec offers AUTH only with an auth_socket"
        if isinstance(event, ev.Auth):
            secured = self.session.tls
            reply = await auth.start(event.mechanism, event.initial_response, secured=secured)
        else:
            reply = await auth.respond(event.data)
        wire = self.codec.send(reply)
        # RFC 4954: "334" SP [base64] CRLF, the space even before an empty challenge
        self._out += b"334 " + reply.text.encode("ascii") + b"\r\n" if reply.code == 334 else wire
        if reply.code == 235:
            self._may_relay = True
            self.session.notes.set(SMTP_LOGIN, (auth.method or "", auth.username or ""))
        elif not reply.is_positive and auth.too_many_failures:
            log.plain(f"too many errors after AUTH from {self.session.peer.describe()}")
            await self._close_with(replies.TOO_MANY_ERRORS)

    def _sasl_fields(self) -> str:
        """Postfix's ``, sasl_method=PLAIN, sasl_username=alice`` on the ``client=`` line."""
        auth = self.auth
        if auth is None or auth.username is None:
            return ""
        return f", sasl_method={auth.method}, sasl_username={sanitize(auth.username)}"

    def _log_relay_denied(self, t: Transaction, reply: Reply, rcpt: str) -> None:
        """Logged as Postfix does: ``NOQUEUE`` while no recipient has been accepted."""
        token = None if t.accepted else queue_id_var.set("NOQUEUE")
        self._log_reject("RCPT", reply, t.sender, rcpt)
        if token is not None:
            queue_id_var.reset(token)

    # ---------------------------------------------------------- transaction
    async def _abort_transaction(self) -> None:
        current, self._open = self._open, None
        self._xforward = None
        if current is None:
            return
        if current.spool is not None:
            current.spool.close()
        if current.delivery is not None:
            delivery, current.delivery = current.delivery, None
            await delivery.abort()
        queue_id_var.set("NOQUEUE")

    def _finish_transaction(self) -> None:
        self._open = None
        self._xforward = None
        queue_id_var.set("NOQUEUE")

    def _log_reject(self, stage: str, reply: Reply, sender: str, rcpt: str | None) -> None:
        metrics.recorder.refusal(self.door, stage.lower(), metrics.outcome_of_reply(reply))
        log.info(smtpd_line("reject", stage, self.session.peer, reply, sender=sender, rcpt=rcpt))

    def _log_end(self, what: str, answer: object, t: Transaction) -> None:
        """The decision at the end of the message (reject, discard, hold) as smtpd logs it,
        ``to=<>`` the last recipient given, as Postfix's line names it."""
        if log.enabled_for_info():
            rcpt = t.recipients[-1].address if t.recipients else None
            peer = self.session.peer
            log.line(smtpd_line(what, "END-OF-MESSAGE", peer, answer, sender=t.sender, rcpt=rcpt))

    def _client_line(self, t: Transaction) -> str:
        """``client=`` the peer, with the origin XFORWARD gave (Postfix's queue id, client)."""
        forwarded = t.xforward
        if forwarded is None or not forwarded.attributes:
            return client_line(self.session.peer.describe())
        origin = t.client
        return client_line(
            self.session.peer.describe(),
            forwarded.decoded("IDENT"),
            origin.describe() if origin.address != "unknown" or origin.name != "unknown" else None,
        )


def _local_ip(stream: trio.abc.Stream) -> str | None:
    """Our address on a TCP connection (Dovecot's ``lip``); None on a unix socket."""
    sock = getattr(stream, "socket", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return str(sock.getsockname()[0])
