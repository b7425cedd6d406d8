"""The DNS lookups of the SPF checks: a dnspython ``Resolver`` with its own servers, timeouts and a
TTL-honouring cache, answering in the shape pyspf's DNS hook wants (contracts.md §8.3).

Blocking: call it from worker threads only (the checks run in ``trio.to_thread``). dnspython's
``Resolver.resolve`` and ``LRUCache`` are thread-safe, so one ``SpfResolver`` serves every check
of its chain entry. Each lookup is bounded by ``lifetime`` (and by the check's remaining time).
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.txtbase import TXTBase

# pyspf's shapes: A/AAAA → address text, MX → (preference, exchange), PTR → name,
# TXT/SPF → the character-strings as bytes.
DnsValue = str | tuple[int, str] | tuple[bytes, ...]
DnsRecord = tuple[tuple[str, str], DnsValue]

QTYPES = ("A", "AAAA", "MX", "PTR", "TXT", "SPF")
EDNS_PAYLOAD = 1232  # the DNS flag day 2020 size: large TXT sets without TCP, no fragments


class DnsTemporaryError(Exception):
    """The lookup could not be answered now (timeout, SERVFAIL, no server): SPF temperror."""


def _text(name: dns.name.Name) -> str:
    """A domain name as pyspf wants it: no final dot; the root is ""."""
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True)


class SpfResolver:
    """Lookups for pyspf through dnspython: ``nameservers`` as (address, port), or the system's
    (/etc/resolv.conf) when empty; ``cache_size`` answers kept for their TTL (0: no cache)."""

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]],
        *,
        timeout: float,
        lifetime: float,
        cache_size: int,
    ) -> None:
        resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in nameservers
            ]
        resolver.timeout = timeout
        resolver.lifetime = lifetime
        resolver.use_edns(0, 0, EDNS_PAYLOAD)
        resolver.cache = dns.resolver.LRUCache(cache_size) if cache_size else None
        self._resolver = resolver
        self.lifetime = lifetime

    def lookup(self, name: str, qtype: str, timeout: float | None = None) -> list[DnsRecord]:
        """The ``qtype`` records of ``name`` (CNAMEs followed), as ``((name, qtype), value)``;
        [] for NXDOMAIN, no data, or a name DNS cannot carry. Raises DnsTemporaryError."""
        if qtype not in QTYPES:
            raise ValueError(f"unsupported query type {qtype}")
        try:
            qname = dns.name.from_text(name, origin=dns.name.root)
        except (dns.exception.DNSException, UnicodeError):
            return []  # too long, empty label, bad IDNA: no such name can exist
        budget = self.lifetime if timeout is None else max(min(timeout, self.lifetime), 0.001)
        try:
            answer = self._resolver.resolve(
                qname, qtype, raise_on_no_answer=False, lifetime=budget, search=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return []
        except dns.exception.Timeout:
            raise DnsTemporaryError(f"DNS timeout looking up {qtype} {name}") from None
        except dns.resolver.NoNameservers:
            raise DnsTemporaryError(f"no DNS server answered {qtype} {name}") from None
        except dns.exception.DNSException as exc:
            raise DnsTemporaryError(f"DNS error looking up {qtype} {name}: {exc}") from None
        if answer.rrset is None:
            return []
        key = (name, qtype)
        records: list[DnsRecord] = []
        for rdata in answer.rrset:
            match rdata:
                case A() | AAAA():
                    records.append((key, str(rdata.address)))
                case MX():
                    records.append((key, (int(rdata.preference), _text(rdata.exchange))))
                case PTR():
                    records.append((key, _text(rdata.target)))
                case TXTBase():  # TXT and SPF (type 99)
                    records.append((key, tuple(rdata.strings)))
                case _:
                    pass
        return records
