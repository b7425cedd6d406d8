"""The DNS lookups of the SPF checks: a dnspython ``Resolver`` with its own servers, timeouts and a
TTL-honouring cache, answering in the shape pyspf's DNS hook (spf.DNSLookup) wants.

Blocking: call it from worker threads only (the checks run in ``trio.to_thread``). dnspython's
``Resolver.resolve`` and ``LRUCache`` are thread-safe, so one ``SpfResolver`` serves every check
of its chain entry. Each lookup is bounded by ``lifetime`` (and by the check's remaining time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdataclass
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


Kept = tuple[list[DnsRecord], float | None]  # records, and until when they hold (None: always)


class DnsTemporaryError(Exception):
    """The lookup could not be answered now (timeout, SERVFAIL, no server): SPF temperror."""


def _text(name: dns.name.Name) -> str:
    """A domain name as pyspf wants it: no final dot; the root is ""."""
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True)


class SpfResolver:
    """Lookups for pyspf through dnspython: ``nameservers`` as (address, port), or the system's
    (/etc/resolv.conf) when empty; ``cache_size`` answers kept for their TTL (0: no cache).

    Answers are kept twice: in dnspython's cache (which also knows that an NXDOMAIN name has no
    record of any type), and, already in pyspf's shape, in a plain dict in front of it. That
    dict makes a cached lookup a dictionary read (``cached``), so a check whose answers are all
    cached can run without a worker thread; it is read without a lock (one dict operation) and
    written under one, oldest first out when full."""

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
        self._size = cache_size
        self._kept: dict[tuple[str, str], Kept] = {}
        self._keeping = threading.Lock()

    def cached(self, name: str, qtype: str) -> Kept | None:
        """The kept answer for ``name``/``qtype`` while it holds, else None. Never blocks."""
        kept = self._kept.get((name, qtype))
        if kept is None:
            return None
        until = kept[1]
        if until is not None and until <= time.time():
            return None
        return kept

    def _keep(self, name: str, qtype: str, kept: Kept) -> Kept:
        until = kept[1]
        if self._size and (until is None or until > time.time()):
            with self._keeping:
                while len(self._kept) >= self._size:
                    del self._kept[next(iter(self._kept))]
                self._kept[(name, qtype)] = kept
        return kept

    def lookup(self, name: str, qtype: str, timeout: float | None = None) -> list[DnsRecord]:
        """The ``qtype`` records of ``name`` (CNAMEs followed), as ``((name, qtype), value)``;
        [] for NXDOMAIN, no data, or a name DNS cannot carry. Raises DnsTemporaryError."""
        return self.lookup_until(name, qtype, timeout)[0]

    def lookup_until(
        self, name: str, qtype: str, timeout: float | None = None
    ) -> tuple[list[DnsRecord], float | None]:
        """``lookup``, and until when (``time.time()``) the answer holds: the expiry of the
        cached answer or the TTL of the fresh one (for NXDOMAIN and no data the negative TTL,
        RFC 2308); None when a name DNS cannot carry was answered without asking (it never
        changes)."""
        kept = self.cached(name, qtype)
        if kept is not None:
            return kept
        if qtype not in QTYPES:
            raise ValueError(f"unsupported query type {qtype}")
        try:
            qname = dns.name.from_text(name, origin=dns.name.root)
        except (dns.exception.DNSException, UnicodeError):
            # too long, empty label, bad IDNA: no such name can exist
            return self._keep(name, qtype, ([], None))
        budget = self.lifetime if timeout is None else max(min(timeout, self.lifetime), 0.001)
        try:
            answer = self._resolver.resolve(
                qname, qtype, raise_on_no_answer=False, lifetime=budget, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            return self._keep(name, qtype, ([], self._nxdomain_until(qname, exc)))
        except dns.resolver.YXDOMAIN:
            return [], time.time()  # a DNAME gone wrong: an answer not worth keeping
        except dns.exception.Timeout:
            raise DnsTemporaryError(f"DNS timeout looking up {qtype} {name}") from None
        except dns.resolver.NoNameservers:
            raise DnsTemporaryError(f"no DNS server answered {qtype} {name}") from None
        except dns.exception.DNSException as exc:
            raise DnsTemporaryError(f"DNS error looking up {qtype} {name}: {exc}") from None
        until = float(answer.expiration)
        if answer.rrset is None:
            return self._keep(name, qtype, ([], until))
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
        return self._keep(name, qtype, (records, until))

    def _nxdomain_until(self, qname: dns.name.Name, exc: dns.resolver.NXDOMAIN) -> float:
        """Until when an NXDOMAIN holds: the cached answer's expiry, else the negative TTL of
        the response (the SOA's TTL capped by its MINIMUM field, RFC 2308 §5); now if the
        response carries no SOA."""
        cache = self._resolver.cache
        if cache is not None:
            cached = cache.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
            if cached is not None:
                return float(cached.expiration)
        now = time.time()
        responses: dict[object, object] = exc.kwargs.get("responses") or {}
        ttls = [
            min(rrset.ttl, rdata.minimum)
            for response in responses.values()
            if isinstance(response, dns.message.Message)
            for rrset in response.authority
            if rrset.rdtype == dns.rdatatype.SOA
            for rdata in rrset
        ]
        return now + min(ttls) if ttls else now
