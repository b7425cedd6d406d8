"""Delivery to a next hop over SMTP or LMTP: the transparent-proxy transaction contract.

MAIL and each RCPT are forwarded when the client sends them and the next hop's replies are
reflected. At the end of DATA the message goes out (dot-stuffed) and the client's reply is the
next hop's reply to the final dot, so a 250 is given only once the next hop has the message.
Any failure drops the next hop's connection without sending the final dot.
"""

from __future__ import annotations

import ssl
import time

import trio

from filterd.config.schema import RelayDelivery
from filterd.delivery.known_recipients import RecipientMaps
from filterd.delivery.nexthop import NextHopConnection, NextHopError, transient
from filterd.maillog import MailLog
from filterd.maillog.lines import delivery_line, envelope_line, timing
from filterd.model import metrics
from filterd.model.envelope import Recipient, Transaction
from filterd.model.reply import Reply
from filterd.model.spool import Spool
from filterd.model.xtext import xtext_encode
from filterd.protocols.smtp.client import Capabilities
from filterd.protocols.smtp.dotstuff import DotStuffer

# Named as Postfix names its delivery agents: filterd/smtp[pid] or filterd/lmtp[pid].
_LOGS = {"smtp": MailLog("smtp"), "lmtp": MailLog("lmtp")}

SEND_BATCH = 256 * 1024  # join small messages into one write


class ConnectionPool:
    """Idle connections to the next hop, reused across transactions (RSET first), closed after
    ``pool_idle_timeout``; at most ``pool_size`` are kept idle."""

    def __init__(self, config: RelayDelivery, ssl_context: ssl.SSLContext | None) -> None:
        self.config = config
        self.ssl_context = ssl_context
        self._idle: list[tuple[NextHopConnection, float]] = []
        self._closed = False

    async def acquire(self) -> tuple[NextHopConnection, bool]:
        """A connection and whether it was reused (and so needs RSET first)."""
        now = trio.current_time()
        while self._idle:
            conn, since = self._idle.pop()
            if now - since < self.config.pool_idle_timeout and conn.healthy:
                return conn, True
            await conn.quit()
        return await NextHopConnection.open(self.config, self.ssl_context), False

    async def release(self, conn: NextHopConnection) -> None:
        if conn.healthy and not self._closed and len(self._idle) < self.config.pool_size:
            self._idle.append((conn, trio.current_time()))
        else:
            await conn.quit()

    async def reap(self) -> None:
        """Close connections idle for too long; runs until cancelled."""
        period = max(0.5, min(5.0, self.config.pool_idle_timeout / 2))
        while True:
            await trio.sleep(period)
            limit = trio.current_time() - self.config.pool_idle_timeout
            stale = [c for c, since in self._idle if since <= limit]
            self._idle = [(c, s) for c, s in self._idle if s > limit]
            for conn in stale:
                await conn.quit()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await conn.quit()


class Relay:
    """The ``Delivery`` for ``method = "relay"``."""

    def __init__(self, config: RelayDelivery, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.pool = ConnectionPool(config, ssl_context)
        self.log = _LOGS[config.protocol]
        self.recipients = RecipientMaps(config) if config.recipient_maps else None

    def open(self) -> RelayTransaction:
        return RelayTransaction(self)

    async def run(self) -> None:
        await self.pool.reap()

    async def aclose(self) -> None:
        await self.pool.aclose()
        if self.recipients is not None:
            await self.recipients.aclose()


class RelayTransaction:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.config = relay.config
        self.log = relay.log
        self.conn: NextHopConnection | None = None
        self.setup = 0.0  # seconds spent opening the connection (the log's delays=)

    async def mail(self, t: Transaction) -> Reply:
        log = self.log
        for attempt in range(2):
            started = time.monotonic()
            try:
                conn, reused = await self.relay.pool.acquire()
            except NextHopError as exc:
                log.warning(f"connect to {self.config.next_hop}: {exc.detail}")
                metrics.recorder.next_hop_error("connect")
                return exc.reply
            self.conn = conn
            self.setup = 0.0 if reused else time.monotonic() - started
            try:
                return await self._mail(conn, t, reused)
            except NextHopError as exc:
                await self._drop()
                if reused and attempt == 0:
                    continue  # a pooled connection went stale: once more on a fresh one
                log.warning(f"MAIL to {self.config.next_hop}: {exc.detail}")
                metrics.recorder.next_hop_error("mail")
                return exc.reply
        raise AssertionError("unreachable")

    async def _mail(self, conn: NextHopConnection, t: Transaction, reused: bool) -> Reply:
        codec = conn.codec
        commands = [codec.rset()] if reused else []
        if self.config.send_xforward and codec.capabilities.has("XFORWARD"):
            commands += codec.xforward(_xforward_attributes(t))
        params = _mail_params(t.mail_params, codec.capabilities)
        commands.append(codec.mail(t.sender, params))
        answers = await conn.exchange(commands, "MAIL")
        if reused and answers[0].code != 250:
            raise NextHopError(transient(answers[0]), f"RSET refused: {answers[0]}")
        for answer in answers[:-1]:
            if not answer.is_positive:
                self.log.warning(f"next hop refused XFORWARD/RSET: {answer}")
        return transient(answers[-1])

    async def rcpt(self, t: Transaction, rcpt: Recipient) -> Reply:
        conn = self.conn
        if conn is None:
            return _no_connection()
        if self.relay.recipients is not None:
            refused = await self.relay.recipients.check(rcpt.address)
            if refused is not None:
                return refused
        params = _rcpt_params(rcpt.params, conn.codec.capabilities)
        try:
            return transient(await conn.command(conn.codec.rcpt(rcpt.address, params), "RCPT"))
        except NextHopError as exc:
            self.log.warning(f"RCPT to {self.config.next_hop}: {exc.detail}")
            metrics.recorder.next_hop_error("rcpt")
            await self._drop()
            return exc.reply

    async def data(self, t: Transaction, spool: Spool) -> list[Reply]:
        log = self.log
        conn = self.conn
        accepted = len(t.accepted)
        if log.enabled_for_info():
            log.line(envelope_line(t.sender, t.size, accepted))
        if conn is None:
            result = [_no_connection()] * accepted
            self._log_results(t, result, "none", time.monotonic())
            return result
        started = time.monotonic()
        relay = conn.relay
        conn_use = conn.transactions + 1
        said: str | None = None  # the command the next hop answered, for a refusal
        try:
            reply = await conn.command(conn.codec.data(), "DATA")
            if reply.code != 354:
                await self._drop()
                result = [transient(reply)] * accepted
                said = "DATA command"
            else:
                await self._send_content(conn, spool)
                count = conn.codec.end_of_data()
                finals = [
                    transient(await conn.read_reply("end of data", final=True))
                    for _ in range(count)
                ]
                result = finals if conn.codec.lmtp else finals * accepted
                said = "end of DATA command"
                self.conn = None
                conn.transactions += 1
                await self.relay.pool.release(conn)
        except NextHopError as exc:
            await self._drop()
            log.warning(f"DATA to {self.config.next_hop}: {exc.detail}")
            metrics.recorder.next_hop_error("data")
            result = [exc.reply] * accepted
        if len(result) != accepted:
            log.error("next hop gave the wrong number of replies", got=len(result))
            result = [Reply(451, "4.5.0", "Error: next hop protocol error")] * accepted
            said = None
        self._log_results(t, result, relay, started, said, conn_use)
        return result

    def _log_results(
        self,
        t: Transaction,
        result: list[Reply],
        relay: str,
        started: float,
        said: str | None = None,
        conn_use: int = 0,
    ) -> None:
        """Postfix's ``to=<...>, relay=..., delay=..., status=...`` line per recipient;
        ``started``: when the message went to the next hop (DATA)."""
        log = self.log
        if not log.enabled_for_info():
            return
        times = timing(t.arrived, started, time.monotonic(), self.setup)
        for rcpt, answer in zip(t.accepted, result, strict=True):
            refused = None if answer.is_positive else said
            log.line(
                delivery_line(rcpt.address, relay, times, answer, said=refused, conn_use=conn_use)
            )

    async def _send_content(self, conn: NextHopConnection, spool: Spool) -> None:
        stuffer = DotStuffer(bare_newline="normalize")
        batch: list[bytes] = []
        size = 0
        for chunk, crlf_only in spool.parts():
            wire = stuffer.feed(chunk, crlf_only=crlf_only)
            batch.append(wire)
            size += len(wire)
            if size >= SEND_BATCH:
                await conn.send(b"".join(batch), "message content")
                batch.clear()
                size = 0
        batch.append(stuffer.finish())
        await conn.send(b"".join(batch), "message content")

    async def abort(self) -> None:
        """Client abandoned the transaction: RSET the next hop and pool the connection."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            reply = await conn.command(conn.codec.rset(), "RSET")
        except NextHopError:
            await conn.aclose()
            return
        if reply.code == 250:
            await self.relay.pool.release(conn)
        else:
            await conn.aclose()

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.aclose()


def _no_connection() -> Reply:
    return Reply(451, "4.4.1", "Error: next hop connection lost, try again later")


def _mail_params(params: tuple[str, ...], caps: Capabilities) -> list[str]:
    """Pass MAIL parameters on verbatim, but only for extensions the next hop announced; never
    AUTH= (RFC 4954 §5: it is the client's identity with us, and we did not authenticate to the
    next hop; Postfix's reinjection smtpd, without SASL, would refuse the MAIL)."""
    kept = []
    for param in params:
        key = param.partition("=")[0].upper()
        if key == "AUTH":
            continue
        needs = {"SIZE": "SIZE", "BODY": "8BITMIME", "SMTPUTF8": "SMTPUTF8"}.get(key, "DSN")
        if caps.has(needs):
            kept.append(param)
    return kept


def _rcpt_params(params: tuple[str, ...], caps: Capabilities) -> list[str]:
    return list(params) if caps.has("DSN") else []


def _xforward_attributes(t: Transaction) -> dict[str, str]:
    """What Postfix forwarded to us, as received; else our own client, xtext-encoded."""
    if t.xforward is not None and t.xforward.attributes:
        return dict(t.xforward.attributes)
    peer = t.session.peer
    address = f"IPV6:{peer.address}" if ":" in peer.address else peer.address
    attrs = {
        "NAME": peer.name,
        "ADDR": address,
        "PROTO": peer.protocol,
        "SOURCE": "REMOTE",
        "IDENT": t.queue_id,
    }
    if peer.port is not None:
        attrs["PORT"] = str(peer.port)
    if peer.helo:
        attrs["HELO"] = peer.helo
    return {k: xtext_encode(v) for k, v in attrs.items()}
