"""Who may relay through an smtp or lmtp listener: Postfix's default relay restrictions
(``permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination``), per listener.

A client in ``mynetworks`` (decided on the connecting address: XFORWARD names the client of the
Postfix in front, which did its own relay control) or one that authenticated may send to any
domain; any other client only to ``relay_domains``, else its RCPT gets Postfix's
``554 5.7.1 <rcpt>: Relay access denied``. With ``open_relay = true`` everyone may relay.

Matching as Postfix's: ``example.org`` in relay_domains is example.org and every subdomain (the
parent_domain_matches_subdomains default), ``.example.org`` only the subdomains; a recipient
with sender-specified routing (``@``, ``%`` or ``!`` in its local part) matches nothing
(``allow_untrusted_routing = no``: the next hop could route it on, anywhere).

At start-up ``startup_problem`` refuses a listener that other hosts can reach but that says
nothing about who may relay through it: only loopback clients could (the default mynetworks),
so the mail of every other client would be refused; the administrator says which.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Protocol

from filterd.config.schema import ListenConfig
from filterd.model import replies
from filterd.model.reply import Reply

__all__ = [
    "ClientList",
    "DomainList",
    "Networks",
    "RelayControl",
    "relay_denied",
    "startup_problem",
]

IPAddress = IPv4Address | IPv6Address


class ClientList(Protocol):
    """Clients that may relay: a list of networks today (a lookup table can be another)."""

    def __contains__(self, address: IPAddress) -> bool: ...


@dataclass(frozen=True, slots=True)
class Networks:
    """``mynetworks`` as a list of networks."""

    networks: tuple[IPv4Network | IPv6Network, ...]

    def __contains__(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


@dataclass(frozen=True, slots=True)
class DomainList:
    """``relay_domains``: ``example.org`` is itself and its subdomains, ``.example.org`` only
    its subdomains (entries lower case, without a trailing dot)."""

    with_subdomains: frozenset[str]
    subdomains_only: frozenset[str]

    @classmethod
    def of(cls, patterns: Sequence[str]) -> DomainList:
        return cls(
            frozenset(p for p in patterns if not p.startswith(".")),
            frozenset(p for p in patterns if p.startswith(".")),
        )

    def __bool__(self) -> bool:
        return bool(self.with_subdomains or self.subdomains_only)

    def matches(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        if domain in self.with_subdomains:
            return True
        dot = domain.find(".")
        while dot >= 0:
            if domain[dot + 1 :] in self.with_subdomains or domain[dot:] in self.subdomains_only:
                return True
            dot = domain.find(".", dot + 1)
        return False


def relay_denied(rcpt: str) -> Reply:
    """Postfix's reject_unauth_destination answer (relay_domains_reject_code 554)."""
    return replies.RELAY_DENIED.with_text(f"<{rcpt}>: {replies.RELAY_DENIED.text}")


@dataclass(frozen=True, slots=True)
class RelayControl:
    """One listener's relay control, made once from its settings."""

    open_relay: bool
    mynetworks: ClientList
    relay_domains: DomainList

    @classmethod
    def from_config(cls, listen: ListenConfig) -> RelayControl:
        domains = DomainList.of(listen.relay_domains)
        return cls(listen.open_relay, Networks(listen.mynetworks), domains)

    def trusts(self, address: IPAddress | None) -> bool:
        """Whether a client at ``address`` may send to any domain (``None``: a unix-socket
        client, on this machine)."""
        return self.open_relay or address is None or address in self.mynetworks

    def refusal(self, rcpt: str) -> Reply | None:
        """For a client that may not relay: ``None`` when ``rcpt`` is in relay_domains,
        else the reply that refuses it."""
        local, _, domain = rcpt.rpartition("@")
        if self.relay_domains.matches(domain) and not any(c in local for c in "@%!"):
            return None
        return relay_denied(rcpt)


# --- start-up -----------------------------------------------------------------------------------

Resolve = Callable[[str], list[IPAddress]]


def _resolve(host: str) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return []  # binding will say what is wrong with the address
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]


def startup_problem(listen: ListenConfig, index: int, resolve: Resolve = _resolve) -> str | None:
    """The line that refuses to start an smtp or lmtp listener that other hosts can reach
    and that says nothing about who may relay through it; ``None`` when it does, or only this
    machine can connect (a loopback address, a unix socket)."""
    if listen.protocol not in ("smtp", "lmtp") or listen.address.kind != "tcp":
        return None
    if listen.relay_settings():
        return None
    addresses = resolve(listen.address.host)
    if not addresses or all(address.is_loopback for address in addresses):
        return None
    return (
        f"listen[{index}] on {listen.address} can be reached from other hosts, but only "
        "loopback clients may relay through it and every other client's mail would be "
        "refused: set mynetworks to the networks of the mail servers that send through it "
        "(and/or relay_domains, auth_socket), or open_relay = true if a firewall already "
        "keeps everyone else out"
    )
