"""The one place that touches pyspf (untyped): a typed ``evaluate(request, lookup)``.

pyspf resolves through the module-global function ``spf.DNSLookup`` (pyspf's DNS hook), shared
by the whole process. So that each chain entry keeps its own resolver (servers, timeouts,
cache), this module installs, once, a dispatcher as ``spf.DNSLookup``: ``evaluate`` binds the
caller's lookup function in a context variable for the duration of one check (it runs in a
worker thread, whose context is its own), and the dispatcher calls whatever is bound there.
Code that calls pyspf without binding a lookup gets pyspf's own resolver, as before. Anyone
replacing ``spf.DNSLookup`` after us would silently bypass our resolvers, so ``evaluate``
refuses to run then (a plugin error: 451 by the chain's failure policy, never a silent pass).

One deviation from pyspf 2.0.14, for RFC 7208 §5.5: a DNS error on the PTR lookup makes "ptr"
not match, and a DNS error on the A/AAAA lookup of one PTR name skips that name, instead of
turning the whole check into temperror (``_Query.validated_ptrs``; also feeds ``%{p}``).
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import re
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Self, cast

import spf  # type: ignore[import-untyped, unused-ignore]

from .resolver import DnsRecord, DnsTemporaryError

SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]
Identity = Literal["mailfrom", "helo"]
DnsLookup = Callable[[str, str, float | None], list[DnsRecord]]

# pyspf's legacy and harsh-mode names → RFC 7208 results ("ambiguous" only comes from strict=2,
# the record-validator mode: "no error, but results may vary").
_RESULT_NAMES: dict[str, SpfResult] = {
    "pass": "pass",
    "fail": "fail",
    "softfail": "softfail",
    "neutral": "neutral",
    "none": "none",
    "permerror": "permerror",
    "temperror": "temperror",
    "unknown": "permerror",
    "error": "temperror",
    "ambiguous": "neutral",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_bound_lookup: contextvars.ContextVar[DnsLookup | None] = contextvars.ContextVar(
    "filterd_spf_lookup", default=None
)


def _dispatch(name: str, qtype: str, strict: object = True, timeout: float | None = None) -> object:
    """``spf.DNSLookup``: the lookup bound by ``evaluate``, else pyspf's own."""
    lookup = _bound_lookup.get()
    if lookup is None:
        return _pyspf_lookup(name, qtype, strict, timeout)
    try:
        return lookup(name, qtype, timeout)
    except DnsTemporaryError as exc:
        raise spf.TempError(str(exc)) from exc


class NotCached(Exception):
    """Raised by a cache-only lookup: the check must be run again with network lookups."""


_pyspf_lookup = spf.DNSLookup
spf.DNSLookup = _dispatch

# pyspf parses the client address and every address a record or an A/MX lookup yields with
# ``ipaddress.ip_address`` / ``ip_network`` on every check (about a third of a warm check).
# Those are pure functions returning immutable values, so pyspf gets (as its module-global
# ``ipaddress``) a copy of the module whose two parsers remember their last answers. Bad input
# still raises every time (lru_cache does not keep exceptions).
# The networks it returns also remember their ``supernet`` (pyspf's ``cidrmatch`` widens every
# address of a record to the mechanism's prefix length: another tenth of a warm check).
_IP_MEMO = 4096


@functools.lru_cache(maxsize=_IP_MEMO)
def _supernet(network: _Network, diff: int, new_prefix: int | None) -> _Network:
    # ipaddress's own method (on either class: it builds ``type(network)``), remembered
    return ipaddress.IPv4Network.supernet(network, diff, new_prefix)


class _IPv4Network(ipaddress.IPv4Network):
    def supernet(self, prefixlen_diff: int = 1, new_prefix: int | None = None) -> Self:
        return cast(Self, _supernet(self, prefixlen_diff, new_prefix))


class _IPv6Network(ipaddress.IPv6Network):
    def supernet(self, prefixlen_diff: int = 1, new_prefix: int | None = None) -> Self:
        return cast(Self, _supernet(self, prefixlen_diff, new_prefix))


_Network = _IPv4Network | _IPv6Network


@functools.lru_cache(maxsize=_IP_MEMO)
def _ip_network(address: object, strict: bool = True) -> _Network:
    """``ipaddress.ip_network``, answering with the classes above."""
    for network_class in (_IPv4Network, _IPv6Network):
        try:
            return network_class(address, strict)
        except (ipaddress.AddressValueError, ipaddress.NetmaskValueError):
            pass
    raise ValueError(f"{address!r} does not appear to be an IPv4 or IPv6 network")


_memo_ipaddress = types.SimpleNamespace(**vars(ipaddress))
_memo_ipaddress.ip_address = functools.lru_cache(maxsize=_IP_MEMO)(ipaddress.ip_address)
_memo_ipaddress.ip_network = _ip_network
spf.ipaddress = _memo_ipaddress

# pyspf parses and validates every mechanism of every record on every check. Without a macro
# ("%") the outcome depends only on the mechanism's text, the domain being checked, the client's
# address family and the strictness, so it is remembered under those. Only in strict modes: in
# lax mode pyspf notes a syntax error on the query and carries on, a side effect a remembered
# answer would skip. A bad mechanism raises every time (exceptions are not remembered).
_MECHANISM_MEMO = 4096
_mechanisms: dict[tuple[str, str, str, object], object] = {}


class _Query(spf.query):  # type: ignore[misc]
    dns_trouble = False  # a lookup of this check failed (even one whose failure was absorbed)

    def dns(self, *args: object, **kwargs: object) -> list[object]:
        """pyspf's, noting any temporary DNS failure: pyspf and RFC 7208 §5.5 absorb some (the
        PTR lookups, an ``exp=`` explanation), so the result can look firm without being one."""
        try:
            return cast("list[object]", super().dns(*args, **kwargs))
        except spf.TempError:
            self.dns_trouble = True
            raise

    def validate_mechanism(self, mech: str) -> object:
        if not self.strict or "%" in mech:
            return super().validate_mechanism(mech)
        key = (mech, self.d, self.v, self.strict)
        found = _mechanisms.get(key)
        if found is None:
            found = super().validate_mechanism(mech)
            if len(_mechanisms) >= _MECHANISM_MEMO:
                _mechanisms.clear()
            _mechanisms[key] = found
        return found

    def validated_ptrs(self) -> list[str]:
        """pyspf's, with RFC 7208 §5.5's DNS-error rules (harsh mode keeps pyspf's)."""
        if self.strict > 1:
            return cast("list[str]", super().validated_ptrs())
        limit = spf.MAX_PTR if self.strict else spf.MAX_PTR * 4
        try:
            names = self.dns_ptr(self.i)[:limit]
        except spf.TempError:
            return []  # "If a DNS error occurs while doing the PTR RR lookup, ... fails to match"
        validated: list[str] = []
        for name in names:
            try:
                if self.cidrmatch(self.dns_a(name, self.A), self.cidrmax):
                    validated.append(name)
            except spf.TempError:
                continue  # "... while doing an A RR lookup, then that domain name is skipped"
        return validated


@dataclass(frozen=True, slots=True)
class SpfRequest:
    """One check_host() evaluation. An empty ``sender`` checks the HELO identity
    (postmaster@helo, RFC 7208 §2.3/§2.4)."""

    client_ip: str
    sender: str
    helo: str
    receiver: str  # %{r}, and the receiver named in the headers
    query_time: float = 20.0  # DNS budget of the whole check (RFC 7208 §4.6.4)
    strict: bool | int = True  # pyspf: False lax, True (RFC), 2 harsh
    default_explanation: str | None = None  # None: pyspf's ("SPF fail - not authorized")


class _HeaderFacts:
    """What pyspf's header wording reads from a finished check, kept without the query (and
    the DNS data it holds), so that the Received-SPF text is only written when a header is
    wanted: pyspf's own ``get_header``/``get_header_comment`` run on this instead."""

    __slots__ = ("c", "comment", "h", "ident", "mech", "mechanism", "o", "prob", "r", "s")
    get_header = spf.query.get_header
    get_header_comment = spf.query.get_header_comment

    def __init__(self, q: _Query) -> None:
        for name in self.__slots__:
            if name != "comment":
                setattr(self, name, getattr(q, name, None))
        if hasattr(q, "comment"):  # pyspf's wording uses it instead of its own when set
            self.comment = q.comment


@dataclass(frozen=True, slots=True)
class SpfAnswer:
    identity: Identity
    result: SpfResult
    # Text from DNS or the client has its control characters replaced ("?"): safe in headers,
    # replies and log lines.
    explanation: str  # the exp= text for fail, else pyspf's wording
    domain: str  # the domain checked: the sender's, or the HELO name
    sender: str  # as checked: postmaster@helo for the HELO identity
    client_ip: str
    helo: str
    receiver: str
    mechanism: str | None  # what matched ("ip4:192.0.2.0/24", "-all", "default")
    facts: _HeaderFacts = field(compare=False, repr=False)
    # A DNS lookup failed during the check but the result is not temperror (a PTR lookup, an
    # explanation): right for this message, not to be reused for the next one.
    dns_trouble: bool = False

    @property
    def comment(self) -> str:
        """E.g. "receiver: domain of ... designates ... as permitted sender"."""
        return printable(f"{self.receiver}: {self.facts.get_header_comment(self.result)}")

    @property
    def received_spf(self) -> str:
        """The Received-SPF field value (RFC 7208 §9.1), one line, in pyspf's wording."""
        return printable(str(self.facts.get_header(self.result, receiver=self.receiver)))


def printable(text: str) -> str:
    """Control characters (from DNS or the client) → "?", so text is safe in headers/replies."""
    return text if text.isprintable() else _CONTROL.sub("?", text)


@contextmanager
def using_lookup(lookup: DnsLookup) -> Iterator[None]:
    """pyspf resolves through ``lookup`` inside the block, in this context (thread) only."""
    if spf.DNSLookup is not _dispatch:
        raise RuntimeError("spf.DNSLookup was replaced after filterd_spf was imported")
    token = _bound_lookup.set(lookup)
    try:
        yield
    finally:
        _bound_lookup.reset(token)


def evaluate(request: SpfRequest, lookup: DnsLookup) -> SpfAnswer:
    """Run check_host() with pyspf, resolving through ``lookup``. Blocking unless ``lookup``
    answers from memory: worker threads. (``using_lookup``, spelled out: this is a hot path.)"""
    if spf.DNSLookup is not _dispatch:
        raise RuntimeError("spf.DNSLookup was replaced after filterd_spf was imported")
    token = _bound_lookup.set(lookup)
    try:
        q = _Query(
            i=request.client_ip,
            s=request.sender,
            h=request.helo,
            receiver=request.receiver,
            strict=request.strict,
            querytime=request.query_time,
        )
        if request.default_explanation is not None:
            q.set_default_explanation(request.default_explanation)
        raw_result, _code, explanation = q.check()
        result = _RESULT_NAMES[str(raw_result)]
        return SpfAnswer(
            identity="helo" if q.ident == "helo" else "mailfrom",
            result=result,
            explanation=printable(str(explanation)),
            domain=printable(str(q.o)),
            sender=printable(str(q.s)),
            client_ip=str(q.c),
            helo=printable(request.helo),
            receiver=request.receiver,
            mechanism=None if q.mechanism is None else str(q.mechanism),
            facts=_HeaderFacts(q),
            dns_trouble=q.dns_trouble,
        )
    finally:
        _bound_lookup.reset(token)
