"""Who may relay through an smtp or lmtp listener: Postfix's default relay restrictions
(``permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination``), per listener.

A client in ``mynetworks`` (decided on the connecting address: XFORWARD names the client of the
Postfix in front, which did its own relay control) or one that authenticated may send to any
domain; any other client only to ``relay_domains``, else its RCPT gets Postfix's
``554 5.7.1 <rcpt>: Relay access denied``. With ``open_relay = true`` everyone may relay.

``mynetworks`` may name lookup tables too, as Postfix's does (``cidr:/etc/postfix/
mynetworks.cidr``): a client is in it when a table finds its address (``192.0.2.7``, an IPv6
address in its compressed form), whatever the value. A table that cannot answer leaves the
question open: a recipient outside relay_domains then gets ``451 4.3.0 <rcpt>: Temporary
lookup failure``, never the 554.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Protocol

from filterd.config.schema import ListenConfig
from filterd.config.types import TableRef
from filterd.model import replies
from filterd.model.reply import Reply
from filterd.sdk.tables import Table, TableSettings, open_table

__all__ = [
    "ClientList",
    "DomainList",
    "IPAddress",
    "Networks",
    "RelayControl",
    "client_list",
    "relay_denied",
    "relay_undecided",
    "startup_problem",
]

IPAddress = IPv4Address | IPv6Address


class ClientList(Protocol):
    """Clients that may relay."""

    async def contains(self, address: IPAddress) -> bool:
        """Whether ``address`` is listed; raises TableFailure when a table cannot answer."""
        ...


@dataclass(frozen=True, slots=True)
class Networks:
    """``mynetworks``: networks, and lookup tables of client addresses (asked only when no
    network holds the address)."""

    networks: tuple[IPv4Network | IPv6Network, ...]
    tables: tuple[Table, ...] = ()

    async def contains(self, address: IPAddress) -> bool:
        if any(address in network for network in self.networks):
            return True
        key = str(address)  # dotted quad, or IPv6 compressed: what Postfix looks up
        for table in self.tables:
            if await table.lookup(key) is not None:
                return True
        return False

    async def aclose(self) -> None:
        for table in self.tables:
            await table.aclose()


TableOpener = Callable[[str, TableSettings | None], Table]


def client_list(
    patterns: Iterable[IPv4Network | IPv6Network | TableRef], opener: TableOpener = open_table
) -> Networks:
    """``mynetworks`` as written: its tables opened now (TableError naming what is wrong)."""
    networks = tuple(p for p in patterns if not isinstance(p, TableRef))
    tables = tuple(opener(p.spec, None) for p in patterns if isinstance(p, TableRef))
    return Networks(networks, tables)


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


def relay_undecided(rcpt: str) -> Reply:
    """Postfix's answer when a mynetworks table could not be asked: try again later."""
    return Reply(451, "4.3.0", f"<{rcpt}>: Temporary lookup failure")


@dataclass(frozen=True, slots=True)
class RelayControl:
    """One listener's relay control, made once from its settings."""

    open_relay: bool
    mynetworks: ClientList
    relay_domains: DomainList

    @classmethod
    def from_config(cls, listen: ListenConfig, opener: TableOpener = open_table) -> RelayControl:
        """Raises TableError when a table of ``mynetworks`` cannot be opened."""
        domains = DomainList.of(listen.relay_domains)
        return cls(listen.open_relay, client_list(listen.mynetworks, opener), domains)

    async def trusts(self, address: IPAddress | None) -> bool:
        """Whether a client at ``address`` may send to any domain (``None``: a unix-socket
        client, on this machine). Raises TableFailure when a mynetworks table cannot answer."""
        return self.open_relay or address is None or await self.mynetworks.contains(address)

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
