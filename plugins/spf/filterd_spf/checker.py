"""The one place that touches pyspf (untyped): a typed ``evaluate(request, lookup)``.

pyspf resolves through the module-global function ``spf.DNSLookup`` (contracts.md §8.3), shared
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
from dataclasses import dataclass
from typing import Literal, cast

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
_IP_MEMO = 4096
_memo_ipaddress = types.SimpleNamespace(**vars(ipaddress))
_memo_ipaddress.ip_address = functools.lru_cache(maxsize=_IP_MEMO)(ipaddress.ip_address)
_memo_ipaddress.ip_network = functools.lru_cache(maxsize=_IP_MEMO)(ipaddress.ip_network)
spf.ipaddress = _memo_ipaddress


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
    comment: str  # "receiver: domain of ... designates ... as permitted sender"
    received_spf: str  # the Received-SPF field value (RFC 7208 §9.1), one line
    # A DNS lookup failed during the check but the result is not temperror (a PTR lookup, an
    # explanation): right for this message, not to be reused for the next one.
    dns_trouble: bool = False


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
            comment=printable(f"{request.receiver}: {q.get_header_comment(result)}"),
            received_spf=printable(str(q.get_header(result, receiver=request.receiver))),
            dns_trouble=q.dns_trouble,
        )
    finally:
        _bound_lookup.reset(token)
