"""What serves a listener, built the same way in the main process and in each of its workers:
the connection handler of an smtp, lmtp or policy listener (with the delivery and the quarantine
behind smtp and lmtp), and the milter service of a milter listener."""

from __future__ import annotations

import socket
import ssl

import trio

from filterd.chain.runner import ChainRunner
from filterd.config.schema import Config, ListenConfig, RelayDelivery
from filterd.delivery.interface import Delivery
from filterd.delivery.maildir import Maildir
from filterd.delivery.quarantine import QuarantineStore
from filterd.delivery.relay import Relay
from filterd.frontdoors.milter.bridge import MilterBridge, MilterSettings
from filterd.frontdoors.policy.service import PolicyHandler, PolicySettings
from filterd.frontdoors.shutdown import Shutdown
from filterd.frontdoors.smtp.handler import SmtpHandler
from filterd.frontdoors.smtp.session import SessionSettings
from filterd.runtime.tally import SharedTally

__all__ = [
    "DoorHandler",
    "build_delivery",
    "handler_for",
    "milter_settings",
    "policy_settings",
    "serve_milter_listener",
    "server_ssl_context",
]

DoorHandler = SmtpHandler | PolicyHandler
"""The connection handler of an smtp, lmtp or policy listener."""


def build_delivery(config: Config) -> Delivery | None:
    """The configured delivery; ``None`` when only milter and policy listeners need none."""
    delivery = config.delivery
    if isinstance(delivery, RelayDelivery):
        context = None
        if delivery.starttls != "never":
            context = ssl.create_default_context(
                cafile=str(delivery.tls_ca_file) if delivery.tls_ca_file else None
            )
            if not delivery.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return Relay(delivery, context)
    return None if delivery is None else Maildir(delivery)


def server_ssl_context(listen: ListenConfig) -> ssl.SSLContext | None:
    """The STARTTLS context of an smtp or lmtp listener; ``None`` when it offers none."""
    if listen.tls_cert is None or listen.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(listen.tls_cert), str(listen.tls_key))
    return context


def policy_settings(listen: ListenConfig, config: Config) -> PolicySettings:
    """The settings of a policy listener: the same in the main process and in every worker."""
    return PolicySettings.from_config(listen, config.limits)


def handler_for(
    listen: ListenConfig,
    config: Config,
    chain: ChainRunner,
    delivery: Delivery | None,
    quarantine: QuarantineStore,
    shutdown: Shutdown,
) -> DoorHandler:
    """The connection handler of an smtp, lmtp or policy listener."""
    if listen.protocol == "policy":
        return PolicyHandler(chain, policy_settings(listen, config), shutdown)
    assert delivery is not None, "the configuration gives smtp and lmtp listeners a delivery"
    session = SessionSettings(listen, config.limits, server_ssl_context(listen))
    return SmtpHandler(session, chain, delivery, quarantine, shutdown)


async def serve_milter_listener(
    listen: ListenConfig,
    config: Config,
    chain: ChainRunner,
    shutdown: Shutdown,
    *,
    listening: socket.socket | None = None,
    tally: SharedTally | None = None,
    drain: trio.Event | None = None,
    parked: trio.Event | None = None,
    task_status: trio.TaskStatus[MilterBridge] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a milter listener until ``shutdown`` (or, once ``drain`` is set, until its last
    connection has closed; ``parked`` is set once it accepts nothing more): libmilter binds the
    address itself, or, with several processes, accepts from ``listening``, which every process
    shares (see ``filterd.frontdoors.milter.service``), counting connections in ``tally``.
    Started, it gives the bridge, where a reload puts the new chain (``milter_settings`` for
    its settings)."""
    # Imported here: pymilter is the optional ``milter`` extra.
    from filterd.frontdoors.milter.service import serve_milter

    await serve_milter(
        chain,
        milter_settings(listen, config),
        shutdown=shutdown,
        listening=listening,
        tally=tally,
        drain=drain,
        parked=parked,
        task_status=task_status,
    )


def milter_settings(listen: ListenConfig, config: Config) -> MilterSettings:
    """The settings of a milter listener: the same in the main process and in every worker."""
    return MilterSettings.from_config(listen, config.limits)
