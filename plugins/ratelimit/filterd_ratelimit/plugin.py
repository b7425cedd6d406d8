"""The ratelimit plugin: counts messages, recipients and bytes per sender, client, recipient
or SASL user over sliding windows (:mod:`filterd_ratelimit.window`) and answers each limit's
access(5) action when it is exceeded.

Where it counts (each request or message once):

- SMTP, LMTP and milter doors: recipients at RCPT, one per recipient (an excess refuses that
  recipient); messages and bytes at the end of the message (``on_message``; bytes: the message
  as received, a ``recipient`` key counts each accepted recipient).
- Policy door: its stages run once per message (the door reuses their verdicts for the
  message's later requests), so the plugin counts at the message's first request:

  - ``RCPT`` requests (``check_policy_service`` in ``smtpd_recipient_restrictions``): each
    recipient counts one recipient, and one message (and ``size`` bytes) for a ``recipient``
    key; the message counts once for the other keys, with ``size`` as it stands at RCPT (the
    client's ``SIZE=`` declaration, 0 without one);
  - a first request at ``DATA`` or ``END-OF-MESSAGE`` (the service called only in
    ``smtpd_data_restrictions`` / ``smtpd_end_of_data_restrictions``): one message,
    ``recipient_count`` recipients and ``size`` bytes (exact at END-OF-MESSAGE); a
    ``recipient`` key counts the request's ``recipient`` (Postfix names it only when the
    message has one).

  Byte limits want the exact size: call a listener of their own from
  ``smtpd_end_of_data_restrictions``.

An excess that refuses (DEFER, REJECT, 4NN/5NN, DEFER_IF_PERMIT, ...) gives back what this
request counted, so refused attempts do not keep a sender over its limit; any other action
(WARN, PREPEND, HOLD) lets the mail go on, counted. Metrics (``filterd_plugin_events_total``,
``plugin`` = the chain entry's label): ``<limit>.counted`` (what stayed counted: messages,
recipients or bytes), ``<limit>.exceeded`` (excesses), ``store_failure``.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from filterd.sdk import (
    Accept,
    Continue,
    DeferIf,
    Finding,
    MessageView,
    OnMailFrom,
    OnMessage,
    OnRcpt,
    Plugin,
    Recipient,
    Reject,
    Reply,
    TempFail,
    Transaction,
    Verdict,
)
from filterd.sdk.access_actions import RECIPIENT, SENDER, RestrictionList
from filterd.sdk.metrics import count_event
from filterd.sdk.policy_request import policy_attributes, sasl_username
from filterd.sdk.state import StateStore, StoreFailure, open_store

from .config import Counted, Limit, RateLimitConfig
from .window import Usage, give_back, take


def human_window(seconds: float) -> str:
    """``3600`` -> ``1h``: the largest unit that divides the window."""
    whole = int(seconds)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0 and whole == seconds:
            return f"{whole // size}{unit}"
    return f"{seconds:g}s"


def key_value(limit: Limit, t: Transaction, recipient: str) -> str | None:
    """What ``limit`` counts this mail under, or None when the mail has none (no login, an
    unknown client)."""
    match limit.key:
        case "sender":
            return t.sender.lower()
        case "recipient":
            return recipient.lower() or None
        case "sasl_username":
            return sasl_username(t.session) or None
        case _:  # client
            try:
                address = ipaddress.ip_address(t.client.address)
            except ValueError:
                return None
            prefix = limit.client_ipv4_prefix if address.version == 4 else limit.client_ipv6_prefix
            if prefix == address.max_prefixlen:
                return str(address)
            return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def action_text(limit: Limit, value: str) -> str:
    text = limit.action
    for mark, replacement in (
        ("{limit}", str(limit.limit)),
        ("{count}", limit.count),
        ("{window}", human_window(limit.window)),
        ("{key}", value),
    ):
        text = text.replace(mark, replacement)
    return text


class RateLimit(Plugin[RateLimitConfig], OnMailFrom, OnRcpt, OnMessage):
    name = "ratelimit"
    Config = RateLimitConfig

    _store: StateStore | None = None

    async def start(self) -> None:
        self._store = await open_store(self.config.state, clock=self.env.clock)

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.aclose()
            self._store = None

    @property
    def store(self) -> StateStore:
        if self._store is None:
            raise RuntimeError("the ratelimit plugin was not started")
        return self._store

    # ------------------------------------------------------------------ stages
    async def on_mail_from(self, t: Transaction) -> Verdict:
        attrs = policy_attributes(t.session)
        if attrs is None:
            return Continue()  # SMTP, LMTP, milter: counted at RCPT and the end of the message
        state = attrs.get("protocol_state", "").upper()
        size = _number(attrs.get("size", ""))
        wanted: list[tuple[Limit, int, str]] = []
        if state == "RCPT":  # the message's first request: recipients are counted per RCPT
            wanted = [
                (limit, 1 if limit.count == "messages" else size, "")
                for limit in self.config.limits
                if limit.key != "recipient" and limit.count != "recipients"
            ]
        elif state in ("DATA", "END-OF-MESSAGE"):
            recipient = attrs.get("recipient", "")
            count = _number(attrs.get("recipient_count", "")) or (1 if recipient else 0)
            for limit in self.config.limits:
                amount = {"messages": 1, "bytes": size, "recipients": count}[limit.count]
                if limit.key == "recipient":
                    amount = 1 if limit.count == "recipients" else amount
                    wanted.extend([(limit, amount, recipient)] if recipient else [])
                else:
                    wanted.append((limit, amount, ""))
        return await self._apply(t, wanted, t.sender or "<>", SENDER, policy=True)

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        attrs = policy_attributes(t.session)
        if attrs is None:
            wanted = [(limit, 1, rcpt.address) for limit in self._limits("recipients")]
            return await self._apply(t, wanted, rcpt.address, RECIPIENT, policy=False)
        if attrs.get("protocol_state", "").upper() != "RCPT":
            return Continue()  # DATA, END-OF-MESSAGE: counted in on_mail_from
        size = _number(attrs.get("size", ""))
        wanted = []
        for limit in self.config.limits:
            if limit.count == "recipients":
                wanted.append((limit, 1, rcpt.address))
            elif limit.key == "recipient":
                wanted.append((limit, 1 if limit.count == "messages" else size, rcpt.address))
        return await self._apply(t, wanted, rcpt.address, RECIPIENT, policy=True)

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        recipients = [r.address for r in t.accepted]
        return await self._end_of_message(t, recipients, message.size)

    # ------------------------------------------------------------------ counting
    def _limits(self, count: Counted) -> list[Limit]:
        return [limit for limit in self.config.limits if limit.count == count]

    async def _end_of_message(self, t: Transaction, recipients: list[str], size: int) -> Verdict:
        wanted: list[tuple[Limit, int, str]] = []
        for limit in self.config.limits:
            if limit.count == "recipients":
                continue
            amount = 1 if limit.count == "messages" else size
            if limit.key == "recipient":
                wanted.extend((limit, amount, r) for r in recipients)
            else:
                wanted.append((limit, amount, ""))
        return await self._apply(t, wanted, t.sender or "<>", SENDER, policy=False)

    async def _apply(
        self,
        t: Transaction,
        wanted: list[tuple[Limit, int, str]],
        name: str,
        what: str,
        *,
        policy: bool,
    ) -> Verdict:
        if not wanted:
            return Continue()
        try:
            return await self._count(t, wanted, name, what, policy=policy)
        except StoreFailure as failure:
            count_event(self.env.name, "store_failure")
            return self.config.state.failure_verdict(failure, self.env.log, "ratelimit")

    async def _count(
        self,
        t: Transaction,
        wanted: list[tuple[Limit, int, str]],
        name: str,
        what: str,
        *,
        policy: bool,
    ) -> Verdict:
        store, now = self.store, self.env.clock()
        counted: list[tuple[str, Usage]] = []
        answer = RestrictionList(name, what)
        findings: list[Finding] = []
        seen: set[tuple[str, str]] = set()
        for limit, amount, recipient in wanted:
            value = key_value(limit, t, recipient)
            if value is None or (limit.name, value) in seen:
                continue
            seen.add((limit.name, value))
            key = f"ratelimit:{limit.name}:{value}"
            usage = await take(store, key, amount, limit=limit.limit, window=limit.window, now=now)
            counted.append((limit.name, usage))
            if not usage.exceeded:
                continue
            count_event(self.env.name, f"{limit.name}.exceeded")
            action = action_text(limit, value)
            self.env.log.info(
                f"rate limit {limit.name} exceeded: {limit.key}={value} "
                f"{usage.estimate:.0f}/{limit.limit} {limit.count} per "
                f"{human_window(limit.window)}; action: {action}"
            )
            findings.append(Finding("ratelimit", f"{limit.name} exceeded"))
            answer.apply(action)
            if answer.decided:
                break
        for level, line in answer.notices:
            (self.env.log.warning if level == "warning" else self.env.log.info)(line)
        verdict = answer.verdict()
        if policy:
            verdict = _unprefixed(verdict, name, what)
        if isinstance(verdict, Reject | TempFail) or (
            isinstance(verdict, Continue | Accept) and verdict.defer_if
        ):
            for _, usage in counted:  # refused: this attempt does not count
                await give_back(store, usage)
        else:
            for limit_name, usage in counted:
                count_event(self.env.name, f"{limit_name}.counted", usage.amount)
        if isinstance(verdict, Reject | TempFail):
            return type(verdict)(verdict.reply, tuple(findings))
        return _with_findings(verdict, findings)


def _unprefixed(verdict: Verdict, name: str, what: str) -> Verdict:
    """At the policy door Postfix adds ``<name>: What rejected:`` to the reply itself."""
    prefix = f"<{name}>: {what} rejected: "

    def bare(reply: Reply) -> Reply:
        if reply.text.startswith(prefix):
            return Reply(reply.code, reply.status, reply.text[len(prefix) :])
        return reply

    if isinstance(verdict, Reject | TempFail):
        return type(verdict)(bare(verdict.reply), verdict.findings)
    if isinstance(verdict, Continue | Accept) and verdict.defer_if:
        held = tuple(DeferIf(d.when, bare(d.reply)) for d in verdict.defer_if)
        return dataclasses.replace(verdict, defer_if=held)
    return verdict


def _with_findings(verdict: Verdict, findings: list[Finding]) -> Verdict:
    if not findings or not isinstance(verdict, Continue):
        return verdict
    return Continue(verdict.edits, tuple(findings), defer_if=verdict.defer_if)


def _number(text: str) -> int:
    return int(text) if text.isascii() and text.isdigit() else 0


__all__ = ["RateLimit", "action_text", "human_window", "key_value"]
