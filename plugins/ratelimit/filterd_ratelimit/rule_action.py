"""postfwd's rate limit actions for the rules plugin (filterd.sdk.rule_actions): ``rate()``,
``size()`` and ``rcpt()``, and ``rate5321()``, ``size5321()``, ``rcpt5321()``, as postfwd 1.35
runs them (its default mode, without ``--fast_limit_evaluation``), counted with
:mod:`filterd_ratelimit.window` in the ratelimit plugin's state store (SQLite by default, Redis
for several hosts).

``rate(ITEM/MAX/SECONDS/ACTION)`` (also ``$$ITEM``, postfwd's older form): when the rule
matches, the request counts for the value of its attribute ``ITEM`` (lower case; the ``5321``
kinds keep an address's local part as it is, RFC 5321: ``Bob@Example.ORG`` counts as
``Bob@example.org``) under this rule's limit: one (``rate``), the request's ``size``
(``size``) or its ``recipient_count`` (``rcpt``). More than ``MAX`` within ``SECONDS``:
``ACTION`` answers (``$$ratecount`` in it is the count with this request); else the rule list
goes on (the action answers None). As in postfwd:

- a counter belongs to the rule (its id) and the limit: ``rules:KIND:ITEM=value:ID+MAX_SECONDS``
  in the store, postfwd's ``ITEM=value`` and ``ID+MAX_SECONDS`` (two rules with the same limit
  count apart; rules sharing an id share their counters, as in postfwd, when their kind is the
  same: ``rate`` and ``rate5321`` are one kind);
- the request that creates the limit counts whatever its amount; a later request that would
  take the count past ``MAX`` is refused with the action and not counted (whatever the
  action: postfwd keeps the counter at or under ``MAX`` once it exists);
- a request without ``ITEM`` (an attribute it does not have; an empty one counts for ``""``)
  or with nothing to count (``size`` 0, ``recipient_count`` 0: call ``size()`` from
  ``smtpd_end_of_data_restrictions``, ``rcpt()`` from ``smtpd_data_restrictions`` or later)
  does not count, and the list goes on.

Differences: the window slides (window.py) where postfwd's is fixed from the request that
created the limit (postfwd forgets everything ``SECONDS`` after that request, filterd forgets
gradually); a state store that is down follows ``state.on_store_failure``: ``dunno`` goes on as
if the limit were not exceeded, ``tempfail`` answers ``451 4.3.0``.

Settings: the rules plugin's ``actions.rate`` (``actions.size``, ``actions.rcpt``, ...) table,
``state = { ... }`` (the ratelimit plugin's state settings; default the SQLite file
``/var/lib/filterd/ratelimit.sqlite``). Actions naming the same store share it in the process
(shared_store.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from filterd.sdk import Field, PluginConfig, PluginEnv, TempFail
from filterd.sdk.access_actions import AccessKind, parse_access_action
from filterd.sdk.metrics import count_event
from filterd.sdk.rule_actions import settings_model, validated_settings
from filterd.sdk.state import StateSettings, StateStore, StoreFailure

from .shared_store import acquire_store, release_store
from .window import give_back, take

__all__ = [
    "Limit",
    "RateAction",
    "RuleLimitSettings",
    "make_rate5321_action",
    "make_rate_action",
    "make_rcpt5321_action",
    "make_rcpt_action",
    "make_size5321_action",
    "make_size_action",
    "parse_limit",
]

Kind = Literal["rate", "size", "rcpt", "rate5321", "size5321", "rcpt5321"]

SERVER_CONFIGURATION_ERROR = "451 4.3.5 Server configuration error"
_ITEM = re.compile(r"[A-Za-z_]\w*\Z", re.ASCII)
_NUMBER = re.compile(r"[1-9][0-9]*\Z", re.ASCII)
_LEADING_NUMBER = re.compile(r"\s*\+?([0-9]+)", re.ASCII)
_COMMAND = re.compile(r"\w[-\w]+\s*\(.*\)\Z", re.DOTALL)
_RATECOUNT = re.compile(r"\$\$\s*(?:ratecount(?!\w)|\(ratecount\))")
_ADDRESS = re.compile(r"([^@]+)@([^ \t\n\r\f\v]+)\Z", re.DOTALL)  # Perl's ^([^@]+)@(\S+)$
_COUNTED = {"rate": "requests", "size": "bytes (the request's size)",
            "rcpt": "recipients (the request's recipient_count)"}  # fmt: skip


def _state() -> StateSettings:
    return StateSettings(path=Path("/var/lib/filterd/ratelimit.sqlite"))


class RuleLimitSettings(PluginConfig):
    state: StateSettings = Field(
        default_factory=_state,
        description="Where the counters are kept, as the ratelimit plugin's state: "
        '{ backend = "sqlite", path = "/var/lib/filterd/ratelimit.sqlite" } or '
        '{ backend = "redis", url = "redis://127.0.0.1:6379/0" }.',
    )


@dataclass(frozen=True, slots=True)
class Limit:
    """One ``ITEM/MAX/SECONDS/ACTION`` argument, read."""

    item: str
    max: int
    seconds: int
    action: str


def parse_limit(kind: str, argument: str) -> Limit | str:
    """The limit an argument gives, or the problem with it (naming the fix)."""
    form = (
        f"{kind}(ITEM/MAX/SECONDS/ACTION), e.g. {kind}(client_address/10/3600/450 4.7.1 slow down)"
    )
    parts = argument.split("/", 3)
    if len(parts) != 4:
        return f"{kind}({argument}): expected four parts separated by /: write {form}"
    item, most, seconds, action = (part.strip() for part in parts)
    item = item.removeprefix("$$")  # postfwd's older form: rate($$client_address/...)
    if _ITEM.match(item) is None:
        return (
            f"{kind}({argument}): {item!r} is no attribute name: name the request attribute "
            f"counted per (client_address, sender, sasl_username, ...): write {form}"
        )
    for name, value in (("MAX", most), ("SECONDS", seconds)):
        if _NUMBER.match(value) is None:
            return (
                f"{kind}({argument}): {name} {value!r} is not a whole number above zero "
                f"(postfwd ignores such a limit): write {form}"
            )
    if not action:
        return f"{kind}({argument}): no ACTION for an excess: write {form}"
    if _COMMAND.match(action) is None and parse_access_action(action).kind in (
        AccessKind.UNSUPPORTED,
    ):
        return (
            f"{kind}({argument}): {action!r} is no action: write an access(5) action "
            '("450 4.7.1 slow down", "REJECT text", "WARN text", "DUNNO") or a rule command '
            '("jump(ID)")'
        )
    return Limit(item, int(most), int(seconds), action)


def rfc5321_value(value: str) -> str:
    """postfwd's value for the ``5321`` kinds: an address's domain in lower case, its local
    part as it is; anything else in lower case."""
    parts = _ADDRESS.match(value)
    return f"{parts.group(1)}@{parts.group(2).lower()}" if parts else value.lower()


class RateAction:
    """The rule action ``rate``, ``size`` or ``rcpt`` (or a ``5321`` kind): shared by every
    rule that names it, awaited with the matching rule's id (``per_rule``)."""

    per_rule = True  # filterd.sdk.rule_actions.takes_rule: a counter per rule, as postfwd

    def __init__(self, kind: Kind, settings: RuleLimitSettings, env: PluginEnv) -> None:
        self.kind: Kind = kind
        self.counted = kind.removesuffix("5321")  # rate, size or rcpt
        self.rfc5321 = kind.endswith("5321")
        self.settings = settings
        self.env = env
        self._store: StateStore | None = None
        self._limits: dict[str, Limit | str] = {}
        # rate(): one per request; no bucket keeps more than the limit (window.take)
        self._bucket_most_is_limit = self.counted == "rate"

    async def start(self) -> None:
        self._store = await acquire_store(self.settings.state, self.env.clock)

    async def stop(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            await release_store(store)

    def check_argument(self, argument: str) -> str | None:
        """The rules plugin asks at start-up for each rule's argument."""
        limit = self._limit(argument)
        return limit if isinstance(limit, str) else None

    def _limit(self, argument: str) -> Limit | str:
        limit = self._limits.get(argument)
        if limit is None:
            limit = parse_limit(self.kind, argument)
            if len(self._limits) < 10_000:  # arguments are the rules' own (or $$ expansions)
                self._limits[argument] = limit
        return limit

    def amount(self, request: Mapping[str, str]) -> int:
        """What this request counts: one, its size or its recipient count (Perl's number of
        the text: leading digits, else 0)."""
        if self.counted == "rate":
            return 1
        found = _LEADING_NUMBER.match(request.get("size" if self.counted == "size" else
                                                  "recipient_count", ""))  # fmt: skip
        return int(found.group(1)) if found else 0

    async def __call__(
        self, argument: str, request: Mapping[str, str], now: float, *, rule: str = ""
    ) -> str | None:
        limit = self._limit(argument)
        if isinstance(limit, str):  # refused at start-up; reached only through $$substitution
            self.env.log.warning(limit)
            return SERVER_CONFIGURATION_ERROR
        value = request.get(limit.item)
        amount = self.amount(request)
        if value is None or amount <= 0:
            return None  # postfwd: "ignoring empty index" / "ignoring empty counter"
        if self._store is None:
            raise RuntimeError(f"the rule action {self.kind}() was not started")
        value = rfc5321_value(value) if self.rfc5321 else value.lower()
        # postfwd's ITEM=value and ID+MAX_SECONDS (a counter per rule and limit)
        key = f"rules:{self.counted}:{limit.item}={value}:{rule}+{limit.max}_{limit.seconds}"
        try:
            usage = await take(
                self._store,
                key,
                amount,
                limit=limit.max,
                window=limit.seconds,
                now=now,
                bucket_most=limit.max if self._bucket_most_is_limit else None,
            )
            if not usage.exceeded:
                return None
            if usage.estimate - usage.amount > 0:  # the limit existed: an excess is not kept
                await give_back(self._store, usage)
        except StoreFailure as failure:
            count_event(self.env.name, "store_failure")
            verdict = self.settings.state.failure_verdict(failure, self.env.log, "ratelimit")
            if isinstance(verdict, TempFail):
                reply = verdict.reply
                return " ".join(str(part) for part in (reply.code, reply.status, reply.text))
            return None
        count = f"{usage.estimate:.0f}"
        count_event(self.env.name, f"{self.kind}.exceeded")
        self.env.log.info(
            f"rate limit {self.kind}/{limit.item}/{limit.max}/{limit.seconds} of rule {rule} "
            f"exceeded: {limit.item}={value} {count}/{limit.max} "
            f"{_COUNTED[self.counted]} per {limit.seconds}s; action: {limit.action}"
        )
        return _RATECOUNT.sub(count, limit.action)


def _settings(kind: str, settings: Mapping[str, object]) -> RuleLimitSettings:
    return validated_settings(
        RuleLimitSettings,
        kind,
        settings,
        f"actions.{kind} takes state = {{ ... }}, the ratelimit plugin's state settings, "
        "plugins/ratelimit/README.md",
    )


@settings_model(RuleLimitSettings)
def make_rate_action(settings: Mapping[str, object], env: PluginEnv) -> RateAction:
    """Entry point ``rate`` of ``filterd.rule_actions``: counts requests."""
    return RateAction("rate", _settings("rate", settings), env)


@settings_model(RuleLimitSettings)
def make_size_action(settings: Mapping[str, object], env: PluginEnv) -> RateAction:
    """Entry point ``size``: counts the request's ``size`` (bytes)."""
    return RateAction("size", _settings("size", settings), env)


@settings_model(RuleLimitSettings)
def make_rcpt_action(settings: Mapping[str, object], env: PluginEnv) -> RateAction:
    """Entry point ``rcpt``: counts the request's ``recipient_count``."""
    return RateAction("rcpt", _settings("rcpt", settings), env)


@settings_model(RuleLimitSettings)
def make_rate5321_action(settings: Mapping[str, object], env: PluginEnv) -> RateAction:
    """Entry point ``rate5321``: ``rate`` with an address's local part as it is."""
    return RateAction("rate5321", _settings("rate5321", settings), env)


@settings_model(RuleLimitSettings)
def make_size5321_action(settings: Mapping[str, object], env: PluginEnv) -> RateAction:
    """Entry point ``size5321``: ``size`` with an address's local part as it is."""
    return RateAction("size5321", _settings("size5321", settings), env)


@settings_model(RuleLimitSettings)
def make_rcpt5321_action(settings: Mapping[str, object], env: PluginEnv) -> RateAction:
    """Entry point ``rcpt5321``: ``rcpt`` with an address's local part as it is."""
    return RateAction("rcpt5321", _settings("rcpt5321", settings), env)
