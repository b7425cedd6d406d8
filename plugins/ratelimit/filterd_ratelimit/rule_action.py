"""postfwd's rate limit actions for the rules plugin (filterd.sdk.rule_actions): ``rate()``,
``size()`` and ``rcpt()``, as postfwd 1.35 runs them (its default mode, without
``--fast_limit_evaluation``), counted with :mod:`filterd_ratelimit.window` in the ratelimit
plugin's state store (SQLite by default, Redis for several hosts).

``rate(ITEM/MAX/SECONDS/ACTION)`` (also ``$$ITEM``, postfwd's older form): when the rule
matches, the request counts for the value of its attribute ``ITEM`` (lower case) under this
limit: one (``rate``), the request's ``size`` (``size``) or its ``recipient_count``
(``rcpt``). More than ``MAX`` within ``SECONDS``: ``ACTION`` answers (``$$ratecount`` in it is
the count with this request); else the rule list goes on (the action answers None). As in
postfwd:

- the request that creates the limit counts whatever its amount; a later request that would
  take the count past ``MAX`` is refused with the action and not counted (whatever the
  action: postfwd keeps the counter at or under ``MAX`` once it exists);
- a request without ``ITEM`` (an attribute it does not have; an empty one counts for ``""``)
  or with nothing to count (``size`` 0, ``recipient_count`` 0: call ``size()`` from
  ``smtpd_end_of_data_restrictions``, ``rcpt()`` from ``smtpd_data_restrictions`` or later)
  does not count, and the list goes on.

Differences: the counter is keyed by the limit (``rules:rate/ITEM/MAX/SECONDS:value`` in the
store), not by the rule's id (two rules with the very same limit share one counter; postfwd
keeps one per rule); the window slides (window.py) where postfwd's is fixed from the request
that created the limit (postfwd forgets everything ``SECONDS`` after that request, filterd
forgets gradually); a state store that is down follows ``state.on_store_failure``: ``dunno``
goes on as if the limit were not exceeded, ``tempfail`` answers ``451 4.3.0``.

Settings: the rules plugin's ``actions.rate`` (``actions.size``, ``actions.rcpt``) table,
``state = { ... }`` (the ratelimit plugin's state settings; default the SQLite file
``/var/lib/filterd/ratelimit.sqlite``).
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
from filterd.sdk.state import StateSettings, StateStore, StoreFailure, open_store

from .window import give_back, take

__all__ = [
    "Limit",
    "RateAction",
    "RuleLimitSettings",
    "make_rate_action",
    "make_rcpt_action",
    "make_size_action",
    "parse_limit",
]

Kind = Literal["rate", "size", "rcpt"]

SERVER_CONFIGURATION_ERROR = "451 4.3.5 Server configuration error"
_ITEM = re.compile(r"[A-Za-z_]\w*\Z", re.ASCII)
_NUMBER = re.compile(r"[1-9][0-9]*\Z", re.ASCII)
_LEADING_NUMBER = re.compile(r"\s*\+?([0-9]+)", re.ASCII)
_COMMAND = re.compile(r"\w[-\w]+\s*\(.*\)\Z", re.DOTALL)
_RATECOUNT = re.compile(r"\$\$\s*(?:ratecount(?!\w)|\(ratecount\))")
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


class RateAction:
    """The rule action ``rate``, ``size`` or ``rcpt``: shared by every rule that names it."""

    def __init__(self, kind: Kind, settings: RuleLimitSettings, env: PluginEnv) -> None:
        self.kind: Kind = kind
        self.settings = settings
        self.env = env
        self._store: StateStore | None = None
        self._limits: dict[str, Limit | str] = {}

    async def start(self) -> None:
        self._store = await open_store(self.settings.state, clock=self.env.clock)

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.aclose()
            self._store = None

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
        if self.kind == "rate":
            return 1
        found = _LEADING_NUMBER.match(request.get("size" if self.kind == "size" else
                                                  "recipient_count", ""))  # fmt: skip
        return int(found.group(1)) if found else 0

    async def __call__(self, argument: str, request: Mapping[str, str], now: float) -> str | None:
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
        name = f"{self.kind}/{limit.item}/{limit.max}/{limit.seconds}"
        key = f"rules:{name}:{value.lower()}"
        try:
            usage = await take(
                self._store, key, amount, limit=limit.max, window=limit.seconds, now=now
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
            f"rate limit {name} exceeded: {limit.item}={value} {count}/{limit.max} "
            f"{_COUNTED[self.kind]} per {limit.seconds}s; action: {limit.action}"
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
