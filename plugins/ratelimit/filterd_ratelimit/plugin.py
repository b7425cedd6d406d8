"""The ratelimit plugin: counts messages, recipients and bytes per sender, client, recipient
or SASL user over sliding windows (:mod:`filterd_ratelimit.window`) and answers each limit's
access(5) action when it is exceeded.

Where it counts:

- recipients at RCPT, one per recipient, on every door (the policy door: its ``RCPT``
  requests); an excess refuses that recipient;
- messages and bytes at the end of the message: the SMTP, LMTP and milter doors in
  ``on_message`` (bytes: the message as received); the policy door at its ``END-OF-MESSAGE``
  request (``check_policy_service`` in ``smtpd_end_of_data_restrictions``; bytes: its ``size``).
  A ``recipient`` key counts each recipient of the message; the policy door names the
  recipient only for a message with one, so there a message to several recipients is not
  counted for ``recipient`` keys.

An excess that refuses (DEFER, REJECT, 4NN/5NN, ...) gives back what this request counted, so
refused attempts do not keep a sender over its limit; any other action (WARN, PREPEND, HOLD)
lets the mail go on, counted.
"""

from __future__ import annotations

import ipaddress

from filterd.sdk import (
    Continue,
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
from filterd.sdk.policy_facts import policy_attributes, sasl_username
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
        if attrs is None or attrs.get("protocol_state", "").upper() != "END-OF-MESSAGE":
            return Continue()
        recipients = [attrs["recipient"]] if attrs.get("recipient") else []
        size = _number(attrs.get("size", ""))
        return await self._end_of_message(t, recipients, size, policy=True)

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        attrs = policy_attributes(t.session)
        if attrs is not None and attrs.get("protocol_state", "").upper() != "RCPT":
            return Continue()
        wanted = [(limit, 1, rcpt.address) for limit in self._limits("recipients")]
        return await self._apply(t, wanted, rcpt.address, RECIPIENT, policy=attrs is not None)

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        recipients = [r.address for r in t.accepted]
        return await self._end_of_message(t, recipients, message.size, policy=False)

    # ------------------------------------------------------------------ counting
    def _limits(self, count: Counted) -> list[Limit]:
        return [limit for limit in self.config.limits if limit.count == count]

    async def _end_of_message(
        self, t: Transaction, recipients: list[str], size: int, *, policy: bool
    ) -> Verdict:
        wanted: list[tuple[Limit, int, str]] = []
        for limit in self.config.limits:
            amount = 1 if limit.count == "messages" else size
            if limit.count == "recipients":
                continue
            if limit.key == "recipient":
                wanted.extend((limit, amount, r) for r in recipients)
            else:
                wanted.append((limit, amount, ""))
        return await self._apply(t, wanted, t.sender or "<>", SENDER, policy=policy)

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
        counted: list[Usage] = []
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
            counted.append(usage)
            count_event(self.env.name, f"{limit.name}.counted", amount)
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
        if isinstance(verdict, Reject | TempFail):
            for usage in counted:  # refused: this attempt does not count
                await give_back(store, usage)
            reply = _unprefixed(verdict.reply, name, what) if policy else verdict.reply
            kind = Reject if isinstance(verdict, Reject) else TempFail
            return kind(reply, tuple(findings))
        return _with_findings(verdict, findings)


def _unprefixed(reply: Reply, name: str, what: str) -> Reply:
    """At the policy door Postfix adds ``<name>: What rejected:`` itself."""
    prefix = f"<{name}>: {what} rejected: "
    if reply.text.startswith(prefix):
        return Reply(reply.code, reply.status, reply.text[len(prefix) :])
    return reply


def _with_findings(verdict: Verdict, findings: list[Finding]) -> Verdict:
    if not findings or not isinstance(verdict, Continue):
        return verdict
    return Continue(verdict.edits, tuple(findings), defer_if=verdict.defer_if)


def _number(text: str) -> int:
    return int(text) if text.isascii() and text.isdigit() else 0


__all__ = ["RateLimit", "action_text", "human_window", "key_value"]
