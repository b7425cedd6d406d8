"""XFORWARD on both hops (Postfix's XFORWARD_README): Postfix's filter transport sends the
original client to filterd (``smtp_send_xforward_command = yes``, and filterd's
``xforward_hosts`` allows Postfix's address), and filterd passes it on to the reinjection smtpd
(``smtpd_authorized_xforward_hosts`` allows filterd's address). Without the first, every
client check of the chain (SPF, ...) judges Postfix itself; without the second, Postfix logs
and stamps the filtered copy as coming from filterd.

A before-queue smtpd sends XFORWARD whenever filterd offers it, so there only filterd's side
and the after-filter smtpd's are checked.
"""

from __future__ import annotations

from filterd.cli.doctor.context import Context, listener_client_host, source_address
from filterd.cli.doctor.syntax import match_address_list
from filterd.config.schema import RelayDelivery

__all__ = ["check_xforward"]


def check_xforward(ctx: Context) -> None:
    _postfix_sends(ctx)
    _filterd_accepts(ctx)
    _next_hop_accepts(ctx)


def _postfix_sends(ctx: Context) -> None:
    for route in ctx.wiring.after_queue:
        name = f"{route.transport.command}_send_xforward_command"
        if ctx.postfix.value(name, route.transport) != "yes":
            ctx.report.add(
                "warning",
                "xforward-not-sent",
                f'master.cf "{route.transport.key}" does not send XFORWARD to filterd '
                f"({ctx.postfix.source(name, route.transport)} is not yes): filterd sees every "
                "message as coming from Postfix, so its client checks (SPF, ...) judge Postfix "
                "and not the sender",
                ctx.set_override(route.transport, name, "yes"),
            )


def _filterd_accepts(ctx: Context) -> None:
    clients: list[tuple[int, str, str]] = []  # (listener, Postfix's bind address, host)
    for route in ctx.wiring.after_queue:
        bind = ctx.postfix.value(f"{route.transport.command}_bind_address", route.transport)
        target = route.references[0].target
        clients.append((route.index, bind, target.host if target is not None else ""))
    for index, ref in ctx.wiring.proxies:
        host = ref.target.host if ref.target is not None else ""
        clients.append((index, "", host or "localhost"))
    for index, bind, host in clients:
        listener = ctx.config.listen[index]
        if listener.address.kind != "tcp":
            continue  # filterd trusts every client of a unix socket
        address = source_address(listener_client_host(listener, host), bind)
        if address is None:
            continue
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in listener.xforward_hosts):
            continue
        wanted = "127.0.0.0/8" if address.is_loopback and address.version == 4 else address
        shown = ", ".join(f'"{network}"' for network in (*listener.xforward_hosts, wanted))
        ctx.report.add(
            "warning",
            "xforward-not-allowed",
            f"filterd's {ctx.listener(index)} does not take XFORWARD from Postfix's address "
            f"{address} (xforward_hosts): filterd sees every message as coming from Postfix, "
            "so its client checks (SPF, ...) judge Postfix and not the sender",
            [ctx.toml(("listen", index, "xforward_hosts"), f"xforward_hosts = [{shown}]")],
        )


def _next_hop_accepts(ctx: Context) -> None:
    delivery = ctx.config.delivery
    hop = ctx.wiring.next_hop
    if not isinstance(delivery, RelayDelivery) or not delivery.send_xforward or hop is None:
        return
    if hop.command != "smtpd" or delivery.next_hop.kind != "tcp":
        return
    if not (ctx.wiring.after_queue or ctx.wiring.proxies):
        return
    address = source_address(delivery.next_hop.host)
    if address is None:
        return
    name = "smtpd_authorized_xforward_hosts"
    value = ctx.postfix.value(name, hop)
    allowed = match_address_list(value, address)
    if allowed:
        return
    if allowed is None:
        ctx.report.note(
            f'cannot tell whether master.cf "{hop.key}" takes XFORWARD from filterd ({address}): '
            f"{name} = {value} holds names or tables"
        )
        return
    network = "127.0.0.0/8" if address.is_loopback and address.version == 4 else str(address)
    ctx.report.add(
        "warning",
        "xforward-not-authorized",
        f"master.cf \"{hop.key}\" (filterd's next hop) does not take XFORWARD from filterd's "
        f"address {address} ({ctx.postfix.source(name, hop)} = {value or '(empty)'}): Postfix "
        "logs the filtered mail, and stamps its Received: header, as coming from filterd "
        "instead of the original client",
        ctx.set_override(hop, name, network if address.version == 4 else f"[{network}]"),
    )
