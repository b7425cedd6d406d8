"""The spf plugin: RFC 7208 checks of the MAIL FROM identity (and, optionally, the HELO
identity) at MAIL time, with pyspf, through this chain entry's own DNS resolver.

The client is the original one (``t.client``: XFORWARD-aware), so the checks run at MAIL, not
at HELO: behind Postfix the HELO stage only sees Postfix. A null sender is checked as
postmaster@HELO (RFC 7208 §2.4). Results go into transaction notes (``SPF_RESULT`` and friends)
for later plugins; the headers are added at the end of the message.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from filterd.sdk import (
    AddHeader,
    Continue,
    Finding,
    NoteKey,
    OnMailFrom,
    Plugin,
    Reject,
    Reply,
    TempFail,
    Transaction,
    Verdict,
)

from .checker import NotCached, SpfAnswer, SpfRequest, SpfResult, evaluate
from .config import SpfConfig
from .headers import authentication_results, received_spf
from .resolver import DnsRecord, SpfResolver
from .results import ResultCache


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    """What the checks of one transaction found (the HELO check only when it ran)."""

    mailfrom: SpfAnswer | None  # None when a HELO fail was refused before it
    helo: SpfAnswer | None = None


SPF_RESULT = NoteKey[str]("spf.result")  # the MAIL FROM identity's result ("pass", "fail", ...)
SPF_HELO_RESULT = NoteKey[str]("spf.helo_result")  # the HELO identity's, when checked
SPF_OUTCOME = NoteKey[SpfOutcome]("spf.outcome")  # the details of both
SPF_SKIPPED = NoteKey[str]("spf.skipped")  # why no check ran: skip_networks, whitelist_..., ...

EXPLANATION_LIMIT = 300  # characters of a domain's explanation quoted in a reply


class Spf(Plugin[SpfConfig], OnMailFrom):
    name = "spf"
    Config = SpfConfig

    _resolver: SpfResolver | None = None
    _results: ResultCache | None = None
    _address_skipped: Callable[[str], str | None] | None = None  # set by start()

    async def start(self) -> None:
        settings = self.config.resolver
        self._resolver = SpfResolver(
            settings.endpoints(),
            timeout=settings.timeout,
            lifetime=settings.lifetime,
            cache_size=self.config.cache_size,
        )
        self._results = ResultCache(self.config.result_cache_size)
        # Parsing an address and matching networks is the costly part of the skip test, and
        # the same clients come back: remembered per chain entry.
        self._address_skipped = functools.lru_cache(maxsize=4096)(self._address_skip_reason)

    @property
    def resolver(self) -> SpfResolver:
        if self._resolver is None:
            raise RuntimeError("the spf plugin was not started")
        return self._resolver

    def request(self, client_ip: str, sender: str, helo: str) -> SpfRequest:
        return SpfRequest(
            client_ip=client_ip,
            sender=sender,
            helo=helo,
            receiver=self.config.receiver_name,
            query_time=self.config.lookup_time,
        )

    @property
    def results(self) -> ResultCache:
        if self._results is None:
            raise RuntimeError("the spf plugin was not started")
        return self._results

    async def check(self, request: SpfRequest) -> SpfAnswer:
        """One check_host() answer: a kept one while every DNS answer behind it is still
        valid (no thread, no pyspf), else an evaluation in a worker thread through this
        entry's resolver."""
        results = self.results
        kept = results.get(request)
        if kept is not None:
            return kept
        evaluated = self._evaluate_from_cache(request)
        if evaluated is None:
            evaluated = await trio.to_thread.run_sync(
                partial(self._evaluate, request),
                limiter=self.env.thread_limiter,
                abandon_on_cancel=True,
            )
        answer, until = evaluated
        results.put(request, answer, until)
        return answer

    def _evaluate_from_cache(self, request: SpfRequest) -> tuple[SpfAnswer, float] | None:
        """The check on this (trio) thread from cached DNS answers only: pyspf is CPU work, and
        a worker thread costs more than the check when nothing has to wait for the network.
        None as soon as one answer is not cached (the caller then runs ``_evaluate`` in a
        thread). ``missing`` decides, not the exception: pyspf swallows every exception while
        fetching an ``exp=`` explanation."""
        expiry = self.results.expiry()
        cached = self.resolver.cached
        missing = False

        def lookup(name: str, qtype: str, timeout: float | None) -> list[DnsRecord]:
            nonlocal missing
            kept = cached(name, qtype)
            if kept is None:
                missing = True
                raise NotCached(f"{qtype} {name}")
            expiry.note(kept[1])
            return kept[0]

        try:
            answer = evaluate(request, lookup)
        except NotCached:
            return None
        return None if missing else (answer, expiry.earliest)

    def _evaluate(self, request: SpfRequest) -> tuple[SpfAnswer, float]:
        """Blocking (worker thread): the answer, and until when every DNS answer it used holds."""
        expiry = self.results.expiry()
        lookup_until = self.resolver.lookup_until

        def lookup(name: str, qtype: str, timeout: float | None) -> list[DnsRecord]:
            records, until = lookup_until(name, qtype, timeout)
            expiry.note(until)
            return records

        answer = evaluate(request, lookup)
        return answer, expiry.earliest

    async def on_mail_from(self, t: Transaction) -> Verdict:
        client = t.client
        sender = t.sender
        helo = client.helo or ""
        skipped = self._skip_reason(client.address, sender, helo)
        if skipped is not None:
            t.notes.set(SPF_SKIPPED, skipped)
            return Continue(findings=(Finding("spf.skipped", skipped),))
        helo_answer: SpfAnswer | None = None
        findings: list[Finding] = []
        if self.config.helo_check != "off" and sender and helo:
            helo_answer = await self.check(self.request(client.address, "", helo))
            t.notes.set(SPF_HELO_RESULT, helo_answer.result)
            findings.append(Finding("spf.helo", helo_answer.result))
            if helo_answer.result == "fail" and self.config.helo_check == "reject-fail":
                t.notes.set(SPF_OUTCOME, SpfOutcome(None, helo_answer))
                return Reject(Reply(550, "5.7.23", _reply_text(helo_answer)), tuple(findings))
        answer = await self.check(self.request(client.address, sender, helo))
        if answer.identity == "helo":  # null sender: this was the HELO check
            t.notes.set(SPF_HELO_RESULT, answer.result)
        t.notes.set(SPF_RESULT, answer.result)
        t.notes.set(SPF_OUTCOME, SpfOutcome(answer, helo_answer))
        findings.append(Finding(f"spf.{answer.identity}", answer.result))
        return self._verdict(answer, tuple(findings), helo_answer)

    def _header_edits(self, answers: list[SpfAnswer]) -> tuple[AddHeader, ...]:
        """The headers go with the MAIL-stage verdict: the SMTP proxy adds them at the end of
        the message, the policy service PREPENDs them (one per RCPT request, in this order)."""
        edits: list[AddHeader] = []
        if "received-spf" in self.config.headers:
            edits.extend(AddHeader("Received-SPF", received_spf(a)) for a in answers)
        if "authentication-results" in self.config.headers:
            value = authentication_results(self.config.authserv_id, answers[::-1])
            edits.append(AddHeader("Authentication-Results", value))
        return tuple(edits)

    def _skip_reason(self, address: str, sender: str, helo: str) -> str | None:
        skipped = (self._address_skipped or self._address_skip_reason)(address)
        if skipped is not None:
            return skipped
        if sender.lower() in self.config.whitelist_senders:
            return "whitelist_senders"
        domain = sender.rpartition("@")[2].lower().rstrip(".")
        if sender and domain and _domain_listed(domain, self.config.whitelist_domains):
            return "whitelist_domains"
        if not sender and not helo:
            return "no-identity"
        return None

    def _address_skip_reason(self, address: str) -> str | None:
        """Why a client address is never checked (skip_networks), or None."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return "no-client-address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            mapped = ip.ipv4_mapped
            if any(mapped in net for net in self.config.skip_networks):
                return "skip_networks"
        if any(ip in net for net in self.config.skip_networks):
            return "skip_networks"
        return None

    def _verdict(
        self, answer: SpfAnswer, findings: tuple[Finding, ...], helo_answer: SpfAnswer | None
    ) -> Verdict:
        """The MAIL-stage verdict; the headers are written only for a message that goes on."""
        config = self.config
        result: SpfResult = answer.result
        match result:
            case "fail" if config.on_fail == "reject":
                return Reject(Reply(550, "5.7.23", _reply_text(answer)), findings)
            case "softfail" if config.on_softfail == "reject":
                return Reject(Reply(550, "5.7.23", _reply_text(answer)), findings)
            case "permerror" if config.on_permerror == "reject":
                return Reject(Reply(550, "5.7.24", _reply_text(answer)), findings)
            case "temperror" if config.on_temperror == "tempfail":
                return TempFail(Reply(451, "4.7.24", _reply_text(answer)), findings)
            case _:
                answers = [a for a in (helo_answer, answer) if a is not None]
                return Continue(edits=self._header_edits(answers), findings=findings)


def _domain_listed(domain: str, listed: list[str]) -> bool:
    """``example.com`` matches itself; ``.example.com`` matches its subdomains too."""
    for entry in listed:
        if entry.startswith("."):
            if domain == entry[1:] or domain.endswith(entry):
                return True
        elif domain == entry:
            return True
    return False


def _reply_text(answer: SpfAnswer) -> str:
    """E.g. "SPF fail for example.com: SPF fail - not authorized" (RFC 7208 §8.4: give the
    explanation to the client)."""
    what = answer.domain if answer.identity == "mailfrom" else f"HELO {answer.helo}"
    explanation = answer.explanation or answer.result
    if len(explanation) > EXPLANATION_LIMIT:
        explanation = explanation[:EXPLANATION_LIMIT] + "..."
    return f"SPF {answer.result} for {what}: {explanation}"
