"""The SMTP/LMTP door's connection handler: one ``SmtpSession`` per accepted connection,
``421 4.7.0`` beyond ``max_connections`` (counted over every process of the listener when it
has workers: ``filterd.runtime.worker_pool``)."""

from __future__ import annotations

import ipaddress
import socket

import trio

from filterd.chain.runner import ChainRunner
from filterd.delivery.interface import Delivery
from filterd.delivery.quarantine import QuarantineStore
from filterd.frontdoors.shutdown import Shutdown
from filterd.frontdoors.smtp.relay_control import IPAddress
from filterd.frontdoors.smtp.session import SessionSettings, SmtpSession
from filterd.maillog import MailLog
from filterd.model import metrics, replies
from filterd.model.envelope import Client, Session, new_queue_id
from filterd.sdk.tables import TableFailure

log = MailLog("smtpd")

REFUSE_TIMEOUT = 5.0


class SmtpHandler:
    """Runs an SmtpSession for each connection of one smtp/lmtp listener."""

    def __init__(
        self,
        settings: SessionSettings,
        chain: ChainRunner,
        delivery: Delivery,
        quarantine: QuarantineStore,
        shutdown: Shutdown,
    ) -> None:
        self.settings = settings
        self.chain = chain
        self.delivery = delivery
        self.quarantine = quarantine
        self.shutdown = shutdown
        self.active = 0
        self.networks = settings.listen.xforward_hosts
        self.door: metrics.Door = "lmtp" if settings.listen.protocol == "lmtp" else "smtp"

    async def __call__(self, stream: trio.abc.Stream) -> None:
        # Checked again here, with no checkpoint before the count goes up: the accept loop's
        # check sees only the sessions already started, so a burst of connections accepted
        # before any of their tasks ran would all get past it.
        if self.over_limit():
            await self.refuse(stream)
            return
        self.active += 1
        metrics.recorder.session(self.door, 1)
        try:
            peer, trusted, address = self._peer(stream)
            relay_allowed = await self._relay_allowed(address)
            session = Session(
                id=new_queue_id(), listener=str(self.settings.listen.address), peer=peer
            )
            await SmtpSession(
                stream,
                session,
                self.settings,
                self.chain,
                self.delivery,
                self.quarantine,
                self.shutdown,
                xforward_allowed=trusted,
                relay_allowed=relay_allowed,
            ).run()
        finally:
            self.active -= 1
            metrics.recorder.session(self.door, -1)

    def over_limit(self) -> bool:
        return self.active >= self.settings.listen.max_connections

    async def refuse(self, stream: trio.abc.Stream) -> None:
        await self.refuse_over_limit(stream, self.active)

    async def refuse_over_limit(self, stream: trio.abc.Stream, active: int) -> None:
        """Beyond ``max_connections`` (``active`` open, in every process): 421 and close."""
        await refuse_smtp(stream, active)

    def _peer(self, stream: trio.abc.Stream) -> tuple[Client, bool, IPAddress | None]:
        """Who connected; whether it may send XFORWARD; its address (None: a unix socket)."""
        sock = getattr(stream, "socket", None)
        if sock is None or sock.family == socket.AF_UNIX:
            return Client(address="unknown", name="localhost"), True, None
        host, port = sock.getpeername()[:2]
        address = ipaddress.ip_address(host)
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        trusted = any(address in net for net in self.networks)
        client = Client(address=str(address), port=port, name="unknown")
        return client, trusted, address

    async def _relay_allowed(self, address: IPAddress | None) -> bool | None:
        """Whether the client may relay (mynetworks); None when a mynetworks table could not
        answer (its recipients outside relay_domains get 451 4.3.0)."""
        try:
            return await self.settings.relay.trusts(address)
        except TableFailure as exc:
            log.warning(f"mynetworks lookup of {address}: {exc}")
            return None


async def refuse_smtp(stream: trio.abc.Stream, active: int) -> None:
    """Beyond max_connections (``active`` open): 421 4.7.0 and close, without reading."""
    log.plain(f"too many connections ({active}): refused with 421")
    with trio.move_on_after(REFUSE_TIMEOUT):
        try:
            await stream.send_all(replies.TOO_MANY_CONNECTIONS.to_bytes())
        except (trio.BrokenResourceError, OSError):
            pass
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        await stream.aclose()
