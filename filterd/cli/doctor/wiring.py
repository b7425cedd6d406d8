"""How Postfix reaches filterd: which of Postfix's settings point at which filterd listener, and
which Postfix service takes filterd's mail back.

- after queue: ``content_filter = transport:nexthop`` (main.cf, or ``-o`` on an smtpd, pickup
  or qmqpd entry) whose transport is an smtp or lmtp entry of master.cf;
- before queue: ``smtpd_proxy_filter`` of an smtpd entry;
- milter: ``smtpd_milters`` of an smtpd entry (``non_smtpd_milters`` of main.cf);
- policy: ``check_policy_service`` in any restriction list an smtpd entry uses.

Each smtpd entry's value is its own ``-o`` override, else main.cf's, so an entry that does
not override ``content_filter`` gets main.cf's filter too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from filterd.cli.doctor.endpoints import (
    Target,
    is_loopback,
    lmtp_destination,
    master_inet_address,
    matches_listener,
    matches_service,
    milter_endpoint,
    policy_endpoint,
    proxy_destination,
    smtp_destination,
)
from filterd.cli.doctor.postconf import PostfixConfig, Service
from filterd.cli.doctor.syntax import group_items, group_settings, split_list
from filterd.config.schema import Config, ListenConfig, RelayDelivery

__all__ = ["FilterRoute", "Reference", "Wiring", "find_wiring"]

Kind = Literal["content_filter", "smtpd_proxy_filter", "milter", "policy"]

_RECEIVERS = frozenset({"smtpd", "pickup", "qmqpd"})  # the servers that add content_filter
_POLICY = "check_policy_service"


@dataclass(frozen=True)
class Reference:
    """One Postfix setting that names a place to connect to."""

    kind: Kind
    value: str  # the item as written: "scan:[127.0.0.1]:10025", "inet:127.0.0.1:10040"
    target: Target | None
    service: Service | None  # the master.cf entry whose setting it is; None: main.cf only
    source: str  # where the value comes from, for messages
    parameter: str  # the parameter that holds it
    settings: dict[str, str] = field(default_factory=dict)  # { endpoint, name=value ... }


@dataclass(frozen=True)
class FilterRoute:
    """An after-queue content filter: ``content_filter`` through ``transport`` to a listener."""

    index: int
    listener: ListenConfig
    transport: Service
    references: tuple[Reference, ...]


@dataclass
class Wiring:
    after_queue: list[FilterRoute] = field(default_factory=list)
    proxies: list[tuple[int, Reference]] = field(default_factory=list)
    milters: list[tuple[int, Reference]] = field(default_factory=list)
    policies: list[tuple[int, Reference]] = field(default_factory=list)
    elsewhere: list[Reference] = field(default_factory=list)
    """References to a loopback place where no filterd listener is."""
    unknown_transports: list[Reference] = field(default_factory=list)
    next_hop: Service | None = None
    """The Postfix entry filterd's [delivery] next_hop reaches (its reinjection smtpd)."""

    def wired(self, index: int) -> bool:
        routes = [route.index for route in self.after_queue]
        routes += [i for i, _ in self.proxies + self.milters + self.policies]
        return index in routes

    @property
    def after_queue_listeners(self) -> set[int]:
        return {route.index for route in self.after_queue}


def _chrooted(service: Service | None) -> bool:
    return service is not None and service.chroot in ("y", "yes")


def _listener_for(
    target: Target | None, config: Config, postfix: PostfixConfig, client: Service | None
) -> int | None:
    if target is None:
        return None
    for index, listener in enumerate(config.listen):
        if matches_listener(
            target,
            listener.address,
            queue_directory=postfix.queue_directory,
            chrooted=_chrooted(client),
        ):
            return index
    return None


def content_filters(postfix: PostfixConfig) -> Iterator[Reference]:
    """Each receiving entry's content_filter (one per entry that has one)."""
    for service in postfix.services:
        if service.command not in _RECEIVERS:
            continue
        value = postfix.value("content_filter", service)
        if value:
            yield Reference(
                "content_filter",
                value,
                None,
                service,
                postfix.source("content_filter", service),
                "content_filter",
            )


def _proxy_filters(postfix: PostfixConfig) -> Iterator[Reference]:
    for service in postfix.services:
        value = postfix.value("smtpd_proxy_filter", service) if service.command == "smtpd" else ""
        if value:
            yield Reference(
                "smtpd_proxy_filter",
                value,
                proxy_destination(value),
                service,
                postfix.source("smtpd_proxy_filter", service),
                "smtpd_proxy_filter",
            )


def _endpoints(value: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The endpoints of a milter list, each with its ``{ }`` settings."""
    for item in split_list(value):
        inner = group_items(item)
        if inner is None:
            yield item, {}
        elif inner:
            yield inner[0], group_settings(inner[1:])


def _milters(postfix: PostfixConfig) -> Iterator[Reference]:
    contexts: list[tuple[Service | None, str]] = [
        (service, "smtpd_milters")
        for service in postfix.services
        if service.command == "smtpd"
        and "no_milters" not in split_list(postfix.value("receive_override_options", service))
    ]
    contexts.append((None, "non_smtpd_milters"))
    for service, parameter in contexts:
        for endpoint, settings in _endpoints(postfix.value(parameter, service)):
            yield Reference(
                "milter",
                endpoint,
                milter_endpoint(endpoint),
                service,
                postfix.source(parameter, service),
                parameter,
                settings,
            )


def _policies(postfix: PostfixConfig) -> Iterator[Reference]:
    for service in postfix.services:
        if service.command != "smtpd":
            continue
        for parameter in sorted(set(postfix.explicit) | set(service.overrides)):
            items = split_list(postfix.value(parameter, service))
            for position, item in enumerate(items[:-1]):
                if item != _POLICY:
                    continue
                following = items[position + 1]
                inner = group_items(following)
                endpoint, settings = (
                    (following, {})
                    if inner is None
                    else (inner[0] if inner else "", group_settings(inner[1:]))
                )
                yield Reference(
                    "policy",
                    endpoint,
                    policy_endpoint(endpoint),
                    service,
                    postfix.source(parameter, service),
                    parameter,
                    settings,
                )


def _next_hop(config: Config, postfix: PostfixConfig) -> Service | None:
    delivery = config.delivery
    if not isinstance(delivery, RelayDelivery):
        return None
    hop = delivery.next_hop
    for service in postfix.services:
        if hop.kind == "tcp" and service.type == "inet":
            address = master_inet_address(service.name)
            hop_target = Target("tcp", host=hop.host, port=hop.port)
            if address is not None and matches_service(hop_target, address):
                return service
        elif hop.kind == "unix" and service.type == "unix":
            folder = "private" if service.private in ("y", "yes", "-") else "public"
            path = os.path.join(postfix.queue_directory, folder, service.name)
            if os.path.normpath(path) == os.path.normpath(hop.path):
                return service
    return None


def find_wiring(config: Config, postfix: PostfixConfig) -> Wiring:
    wiring = Wiring()
    routes: dict[tuple[int, str], list[Reference]] = {}
    for reference in content_filters(postfix):
        transport_name, _, nexthop = reference.value.partition(":")
        transport = postfix.service(transport_name, "unix")
        if transport is None:
            wiring.unknown_transports.append(reference)
            continue
        if transport.command == "smtp":
            target = smtp_destination(nexthop)
        elif transport.command == "lmtp":
            target = lmtp_destination(nexthop)
        else:
            continue  # a pipe(8) or other filter: not filterd
        reference = Reference(
            reference.kind,
            reference.value,
            target,
            reference.service,
            reference.source,
            reference.parameter,
        )
        index = _listener_for(target, config, postfix, transport)
        if index is None:
            if target is not None and is_loopback(target):
                wiring.elsewhere.append(reference)
            continue
        routes.setdefault((index, transport.key), []).append(reference)
    for (index, key), references in routes.items():
        name, _, type_ = key.partition("/")
        transport = postfix.service(name, type_)
        assert transport is not None
        wiring.after_queue.append(
            FilterRoute(index, config.listen[index], transport, tuple(references))
        )
    for kind_list, found in (
        (wiring.proxies, _proxy_filters(postfix)),
        (wiring.milters, _milters(postfix)),
        (wiring.policies, _policies(postfix)),
    ):
        for reference in found:
            index = _listener_for(reference.target, config, postfix, reference.service)
            if index is not None:
                kind_list.append((index, reference))
            elif reference.target is not None and is_loopback(reference.target):
                wiring.elsewhere.append(reference)
    wiring.next_hop = _next_hop(config, postfix)
    return wiring
