"""Checks of the path itself: that Postfix's settings reach filterd's listeners with the
right protocol, that filterd's mail goes back into Postfix without looping or being scanned
again, and that neither side takes more connections than the other accepts.

Postfix's rules come from its FILTER_README (the reinjection smtpd: ``-o content_filter=``
"is required or else mail will loop", ``no_header_body_checks,no_milters`` "to avoid
duplicating work", no ``no_address_mappings`` so that mappings happen after the filter, and "the
SMTP server must not have a smaller process limit than the filter master.cf entry") and its
SMTPD_PROXY_README (the after-filter smtpd without ``smtpd_proxy_filter``).
"""

from __future__ import annotations

import difflib

from filterd.cli.doctor.chain_facts import chain_processes
from filterd.cli.doctor.context import Context
from filterd.cli.doctor.endpoints import (
    Target,
    is_loopback,
    lmtp_destination,
    matches_listener,
    proxy_destination,
    smtp_destination,
)
from filterd.cli.doctor.postconf import Service
from filterd.cli.doctor.syntax import parse_process_limit, split_list
from filterd.cli.doctor.wiring import Reference
from filterd.config.schema import ListenConfig, RelayDelivery

__all__ = ["check_wiring"]

ADDRESS_MAPPINGS = (
    "virtual_alias_maps",
    "canonical_maps",
    "sender_canonical_maps",
    "recipient_canonical_maps",
    "masquerade_domains",
    "always_bcc",
    "sender_bcc_maps",
    "recipient_bcc_maps",
)
HEADER_BODY_CHECKS = ("header_checks", "mime_header_checks", "nested_header_checks", "body_checks")
REINJECTION_OPTIONS = "no_unknown_recipient_checks,no_header_body_checks,no_milters"
_DOOR_OF_LISTENER = {"smtp": "content", "lmtp": "content", "milter": "milter", "policy": "policy"}
_DOOR_OF_REFERENCE = {
    "content_filter": "content",
    "smtpd_proxy_filter": "content",
    "milter": "milter",
    "policy": "policy",
}


def check_wiring(ctx: Context) -> None:
    _unknown_transports(ctx)
    _unwired_listeners(ctx)
    _protocols(ctx)
    _capacity(ctx)
    _reinjection(ctx)


def _unknown_transports(ctx: Context) -> None:
    delivery_agents = [
        service.name
        for service in ctx.postfix.services
        if service.type == "unix" and service.command in ("smtp", "lmtp")
    ]
    for reference in ctx.wiring.unknown_transports:
        transport, _, nexthop = reference.value.partition(":")
        fix = [
            ctx.postconf("-M", f"'{transport}/unix={transport} unix - - n - 10 smtp'"),
            "(the entry of deploy/postfix/master.cf.smtp.snippet, with its -o lines)",
        ]
        close = difflib.get_close_matches(transport, delivery_agents, n=1)
        if close:
            fix = [
                ctx.postconf("-e", f"'content_filter = {close[0]}:{nexthop}'")
                if reference.service is None or "content_filter" not in reference.service.overrides
                else ctx.set_override(reference.service, "content_filter", f"{close[0]}:{nexthop}")[
                    0
                ],
                "or " + fix[0],
            ]
        ctx.report.add(
            "error",
            "unknown-transport",
            f"{reference.source} = {reference.value} names the transport {transport!r}, which "
            "master.cf does not define: that mail stays in the queue, deferred, and bounces "
            "when it expires",
            fix,
        )


def _listener_value(listener: ListenConfig, reference: Reference) -> str:
    """``reference``'s value rewritten to reach ``listener``."""
    address = listener.address
    if address.kind == "unix":
        place = f"unix:{address.path}"
        if reference.kind == "content_filter":
            return f"{reference.value.partition(':')[0]}:{place}"
        return place
    host = f"[{address.host}]" if ":" in address.host else address.host
    if reference.kind == "content_filter":
        lmtp = "inet:" if listener.protocol == "lmtp" else ""
        return f"{reference.value.partition(':')[0]}:{lmtp}[{address.host}]:{address.port}"
    if reference.kind == "smtpd_proxy_filter":
        return f"{host}:{address.port}"
    return f"inet:{host}:{address.port}"


def _unwired_listeners(ctx: Context) -> None:
    for index, listener in enumerate(ctx.config.listen):
        if ctx.wiring.wired(index):
            continue
        door = _DOOR_OF_LISTENER[listener.protocol]
        strays = [ref for ref in ctx.wiring.elsewhere if _DOOR_OF_REFERENCE[ref.kind] == door]
        for ref in strays:
            value = ref.value
            fixed = _listener_value(listener, ref)
            if ref.kind in ("milter", "policy"):
                command = f"in {ref.source}: {value} -> {fixed}"
            elif ref.service is not None and ref.parameter in ref.service.overrides:
                command = ctx.set_override(ref.service, ref.parameter, fixed)[0]
            else:
                command = ctx.postconf("-e", f"'{ref.parameter} = {fixed}'")
            ctx.report.add(
                "error",
                "wrong-address",
                f"{ref.source} sends mail to {ref.target}, where no filterd listens; filterd's "
                f"{ctx.listener(index)} gets nothing: that mail is deferred (or, for a milter "
                "or policy service, gets Postfix's default action) until the two agree",
                [
                    command,
                    "or " + ctx.toml(("listen", index, "address"), f'address = "{ref.target}"'),
                ],
            )
        if strays:
            continue
        ctx.report.add(
            "warning",
            "unwired-listener",
            f"nothing in Postfix's configuration sends mail to filterd's {ctx.listener(index)}: "
            "the mail it should check is not checked",
            [_wire_up(ctx, listener)],
        )


def _wire_up(ctx: Context, listener: ListenConfig) -> str:
    address = listener.address
    host_port = f"{address.host}:{address.port}" if address.kind == "tcp" else ""
    if listener.protocol == "smtp":
        return (
            ctx.postconf("-e", f"'content_filter = scan:[{address.host}]:{address.port}'")
            + " and the entries of deploy/postfix/master.cf.smtp.snippet (docs/deploy.md)"
        )
    if listener.protocol == "lmtp":
        return (
            ctx.postconf("-e", f"'content_filter = scan:inet:[{address.host}]:{address.port}'")
            + " and the entries of deploy/postfix/master.cf.lmtp.snippet (docs/deploy.md)"
        )
    endpoint = f"inet:{host_port}" if host_port else f"unix:{address.path}"
    if listener.protocol == "milter":
        return ctx.postconf("-e", f"'smtpd_milters = {endpoint}'") + " (main.cf.milter.snippet)"
    return (
        f"check_policy_service {endpoint} first in smtpd_recipient_restrictions "
        "(deploy/postfix/main.cf.policy.snippet)"
    )


def _mismatch(ctx: Context, index: int, what: str, speaks: str, fix: list[str]) -> None:
    listener = ctx.config.listen[index]
    ctx.report.add(
        "error",
        "protocol-mismatch",
        f"{what} speaks {speaks} to filterd's {ctx.listener(index)}, which speaks "
        f"{listener.protocol}: every message is refused and waits in the queue",
        fix,
    )


def _protocols(ctx: Context) -> None:
    for route in ctx.wiring.after_queue:
        speaks = route.transport.command
        if speaks != route.listener.protocol:
            _mismatch(
                ctx,
                route.index,
                f'master.cf "{route.transport.key}" ({speaks}(8), named by content_filter)',
                speaks.upper(),
                [
                    ctx.toml(("listen", route.index, "protocol"), f'protocol = "{speaks}"'),
                    f"or the {route.listener.protocol} variant of deploy/postfix/",
                ],
            )
    expected = {"smtpd_proxy_filter": "smtp", "milter": "milter", "policy": "policy"}
    for index, ref in ctx.wiring.proxies + ctx.wiring.milters + ctx.wiring.policies:
        want = expected[ref.kind]
        if ctx.config.listen[index].protocol != want:
            _mismatch(
                ctx,
                index,
                ref.source,
                want,
                [ctx.toml(("listen", index, "protocol"), f'protocol = "{want}"')],
            )
    delivery = ctx.config.delivery
    hop = ctx.wiring.next_hop
    if hop is None or hop.command != "smtpd":
        return
    if isinstance(delivery, RelayDelivery) and delivery.protocol != "smtp":
        ctx.report.add(
            "error",
            "protocol-mismatch",
            f'filterd relays with {delivery.protocol.upper()} to master.cf "{hop.key}", '
            "an smtpd(8), which speaks SMTP: no message gets through",
            [ctx.toml(("delivery", "protocol"), 'protocol = "smtp"')],
        )


def _limit(ctx: Context, service: Service) -> int | None:
    return parse_process_limit(
        service.process_limit, ctx.postfix.value("default_process_limit") or "100"
    )


def _inbound(ctx: Context, index: int) -> tuple[int | None, list[str]]:
    """How many connections Postfix may open to listener ``index`` at once (None: no limit),
    and what makes up that figure: the maxproc of each transport that delivers to it (each
    smtp(8) or lmtp(8) process holds one connection) and of each smtpd that proxies to it."""
    total: int | None = 0
    parts: list[str] = []
    services = [route.transport for route in ctx.wiring.after_queue if route.index == index]
    services += [ref.service for i, ref in ctx.wiring.proxies if i == index and ref.service]
    for service in services:
        limit = _limit(ctx, service)
        parts.append(f'maxproc {limit if limit is not None else "0 (no limit)"} of "{service.key}"')
        total = None if total is None or limit is None else total + limit
    return total, parts


def _capacity(ctx: Context) -> None:
    for index, listener in enumerate(ctx.config.listen):
        inbound, parts = _inbound(ctx, index)
        if not parts or (inbound is not None and inbound <= listener.max_connections):
            continue
        shown = "no limit" if inbound is None else str(inbound)
        fix = [
            ctx.toml(
                ("listen", index, "max_connections"),
                f"max_connections = {inbound if inbound is not None else 100}",
            )
        ]
        fix.extend(
            "or "
            + ctx.postconf(
                "-F", f"'{route.transport.key}/process_limit={listener.max_connections}'"
            )
            for route in ctx.wiring.after_queue
            if route.index == index
        )
        ctx.report.add(
            "error",
            "too-many-connections",
            f"Postfix may open {shown} connections at once to filterd's {ctx.listener(index)} "
            f"({', '.join(parts)}), which takes max_connections = {listener.max_connections}: "
            "the rest are answered 421 and that mail waits in the queue",
            fix,
        )


def _reaches_filterd(ctx: Context, value: str, proxy: bool) -> bool:
    """Whether a content_filter (or smtpd_proxy_filter) value leads to a filterd listener."""
    if proxy:
        target = proxy_destination(value)
    else:
        transport_name, _, nexthop = value.partition(":")
        transport = ctx.postfix.service(transport_name, "unix")
        if transport is None:
            return False
        command = transport.command
        target = (
            smtp_destination(nexthop)
            if command == "smtp"
            else lmtp_destination(nexthop)
            if command == "lmtp"
            else None
        )
    return target is not None and any(
        matches_listener(
            target,
            listener.address,
            queue_directory=ctx.postfix.queue_directory,
            chrooted=False,
        )
        for listener in ctx.config.listen
    )


def _reinjection(ctx: Context) -> None:
    delivery = ctx.config.delivery
    routed = bool(ctx.wiring.after_queue or ctx.wiring.proxies)
    if not isinstance(delivery, RelayDelivery) or not routed:
        return
    hop = ctx.wiring.next_hop
    if hop is None:
        target = (
            Target("tcp", host=delivery.next_hop.host, port=delivery.next_hop.port)
            if delivery.next_hop.kind == "tcp"
            else Target("unix", path=delivery.next_hop.path)
        )
        if is_loopback(target):
            ctx.report.add(
                "error",
                "no-reinjection",
                f"filterd relays to {delivery.next_hop} ([delivery] next_hop), where no "
                "master.cf entry listens: filterd cannot hand back any message, and all of "
                "them wait in the queue",
                [
                    ctx.postconf(
                        "-M",
                        f"'{delivery.next_hop}/inet={delivery.next_hop} inet n - n - 10 smtpd'",
                    )
                    + " with the -o lines of deploy/postfix/master.cf.smtp.snippet",
                ],
            )
        else:
            ctx.report.note(
                f"filterd relays to {delivery.next_hop}, not a service of this Postfix: its "
                "reinjection settings were not checked"
            )
        return
    if hop.command != "smtpd":
        return
    _loops(ctx, hop)
    if ctx.wiring.after_queue:
        _scanned_twice(ctx, hop)
        _address_mappings(ctx, hop)
    _reinjection_capacity(ctx, hop, delivery)


def _loops(ctx: Context, hop: Service) -> None:
    content_filter = ctx.postfix.value("content_filter", hop)
    if content_filter and _reaches_filterd(ctx, content_filter, proxy=False):
        ctx.report.add(
            "error",
            "filter-loop",
            f'filterd hands mail back to master.cf "{hop.key}", which has no -o content_filter= '
            f"and so gets {ctx.postfix.source('content_filter', hop)} = {content_filter}: every "
            "message filterd passes goes to filterd again, round and round (a loop)",
            ctx.set_override(hop, "content_filter", ""),
        )
    proxy = ctx.postfix.value("smtpd_proxy_filter", hop)
    if proxy and _reaches_filterd(ctx, proxy, proxy=True):
        ctx.report.add(
            "error",
            "proxy-loop",
            f'filterd hands mail back to master.cf "{hop.key}", which proxies it to filterd '
            f"again ({ctx.postfix.source('smtpd_proxy_filter', hop)} = {proxy}): a loop",
            ctx.set_override(hop, "smtpd_proxy_filter", ""),
        )


def _override_options(hop: Service, add: str) -> str:
    """The entry's own receive_override_options with ``add``; FILTER_README's set if it has
    none of its own (main.cf's, meant for before the filter, is not for this entry)."""
    own = hop.overrides.get("receive_override_options")
    if own is None:
        return REINJECTION_OPTIONS
    items = split_list(own)
    return ",".join(items if add in items else [*items, add])


def _scanned_twice(ctx: Context, hop: Service) -> None:
    options = set(split_list(ctx.postfix.value("receive_override_options", hop)))
    milters = ctx.postfix.value("smtpd_milters", hop)
    if milters and "no_milters" not in options:
        ctx.report.add(
            "warning",
            "reinjection-milters",
            f'master.cf "{hop.key}" (filterd\'s next hop) runs the milters of '
            f"{ctx.postfix.source('smtpd_milters', hop)} ({milters}) again on mail that went "
            "through them before the filter: every message is scanned twice",
            [
                *ctx.set_override(
                    hop, "receive_override_options", _override_options(hop, "no_milters")
                ),
                f"or {ctx.postconf('-P', repr(f'{hop.key}/smtpd_milters='))}",
            ],
        )
    checks = [name for name in HEADER_BODY_CHECKS if ctx.postfix.value(name, hop)]
    if checks and "no_header_body_checks" not in options:
        ctx.report.add(
            "warning",
            "reinjection-header-checks",
            f'master.cf "{hop.key}" (filterd\'s next hop) applies {", ".join(checks)} again to '
            "mail that went through them before the filter: every message is scanned twice "
            "(and a header they add or change can be acted on twice)",
            ctx.set_override(
                hop,
                "receive_override_options",
                _override_options(hop, "no_header_body_checks"),
            ),
        )


def _address_mappings(ctx: Context, hop: Service) -> None:
    options = split_list(ctx.postfix.value("receive_override_options", hop))
    mappings = [name for name in ADDRESS_MAPPINGS if ctx.postfix.value(name, hop)]
    if "no_address_mappings" in options and mappings:
        ctx.report.add(
            "error",
            "reinjection-no-address-mappings",
            f'master.cf "{hop.key}" (filterd\'s next hop) gets receive_override_options = '
            f"{ctx.postfix.value('receive_override_options', hop)} from "
            f"{ctx.postfix.source('receive_override_options', hop)}: the address mappings "
            f"({', '.join(mappings)}) never happen, before the filter or after it, so mail "
            "for an alias goes to the alias itself (and bounces when no mailbox has it)",
            ctx.set_override(hop, "receive_override_options", REINJECTION_OPTIONS),
        )


def _reinjection_capacity(ctx: Context, hop: Service, delivery: RelayDelivery) -> None:
    limit = _limit(ctx, hop)
    if limit is None:
        return
    inbound_total = 0
    for index, listener in enumerate(ctx.config.listen):
        inbound, parts = _inbound(ctx, index)
        if parts:
            inbound_total += min(
                listener.max_connections, inbound if inbound is not None else 10**9
            )
    processes = chain_processes(ctx.config)
    needed = processes * min(delivery.pool_size, inbound_total)
    if needed <= limit:
        return
    ctx.report.add(
        "warning",
        "reinjection-capacity",
        f'filterd may keep {needed} connections open to master.cf "{hop.key}" ({processes} '
        f"process{'es' * (processes != 1)} x min(pool_size {delivery.pool_size}, {inbound_total}"
        f" from Postfix)), whose maxproc is {limit}: the others wait for a free smtpd, and "
        "time out as 4xx when none comes",
        [
            ctx.postconf("-F", f"'{hop.key}/process_limit={needed}'"),
            "or "
            + ctx.toml(("delivery", "pool_size"), f"pool_size = {max(1, limit // processes)}"),
        ],
    )
