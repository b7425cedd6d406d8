"""Deciding one request with the rule list, as postfwd 1.35's ``smtpd_access_policy()`` does:
rules in order, the first that matches ends the list with its action; ``jump(ID)`` goes on at
the rule ``ID``, ``set(...)`` changes the request's attributes, ``score(...)`` adds to
``request_score`` and ends the list when a ``scores`` threshold is reached; an installed rule
action (``greylist()``, ``rate(...)``: filterd.sdk.rule_actions) answers or goes on.
No rule matches: ``DUNNO``. ``$$attribute`` in an action or a value is the request's value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from filterd.sdk.rule_actions import PerRuleAction, RuleAction, takes_rule
from filterd.sdk.tables import Table

from .compare import LocalTime, compare, local_time, perl_number
from .ruleset import Rule, Test

__all__ = ["DUNNO", "Decision", "Engine", "substitute"]

DUNNO = "DUNNO"
MAX_COMMANDS = 64  # postfwd's max_command_recursion: commands one rule's action may chain
_VARIABLE = re.compile(r"\$\$\s*(?:(\w+)|\((\w+)\))")
_COMMAND = re.compile(r"(\w[-\w]+)\s*\(\s*(.*?)\s*\)", re.DOTALL)
_SET = re.compile(r"\s*([^=]+?)\s*([.\-*/+=]=|=[.\-*/+=]|=)\s*(.*?)\s*\Z", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(\.\d+)?\Z")
_SCORE = re.compile(r"([+\-*/=]?)(\d+)(?:[.,](\d+))?\Z")
_ADDRESS = re.compile(r"(.*)@([^@]*)\Z", re.DOTALL)


def substitute(text: str, request: Mapping[str, str]) -> tuple[str, bool]:
    """``$$name`` and ``$$(name)`` replaced by the request's values (unknown names stay);
    whether anything was replaced."""
    replaced = False

    def value(found: re.Match[str]) -> str:
        nonlocal replaced
        name = found.group(1) or found.group(2)
        if name in request:
            replaced = True
            return request[name]
        return found.group(0)

    return _VARIABLE.sub(value, text), replaced


def perl_string(number: float) -> str:
    """A number as Perl prints it (15 significant digits, no ``.0``)."""
    return f"{number:.15g}"


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: an access(5) action (``$$`` substituted), the rule that gave it (None:
    no rule matched) and the ids of the rules that matched on the way."""

    action: str
    rule: Rule | None
    hits: tuple[str, ...] = ()
    looped: bool = False  # jump() went round in circles: gave up with DUNNO


def add_derived(request: dict[str, str]) -> None:
    """postfwd's own items: the null sender as ``<>``, ``sender_localpart`` /
    ``sender_domain``, ``recipient_localpart`` / ``recipient_domain``, ``reverse_address``."""
    if not request.get("sender"):
        request["sender"] = "<>"
    for name in ("sender", "recipient"):
        parts = _ADDRESS.match(request.get(name, ""))
        request[f"{name}_localpart"] = parts.group(1) if parts else ""
        request[f"{name}_domain"] = parts.group(2) if parts else ""
    request["reverse_address"] = ".".join(reversed(request.get("client_address", "").split(".")))


@dataclass(slots=True)
class Engine:
    rules: Sequence[Rule]
    tables: Mapping[str, Table]  # lookup: spec -> opened table
    actions: Mapping[str, RuleAction]  # installed rule actions by name
    scores: Mapping[str, str] = field(default_factory=dict)  # threshold text -> action
    zone: tzinfo | None = None  # None: the system's local time
    _ids: dict[str, int] = field(init=False)
    _per_rule: dict[str, PerRuleAction] = field(init=False)  # awaited with rule=ID

    def __post_init__(self) -> None:
        self._ids = {rule.id: index for index, rule in enumerate(self.rules)}
        self._per_rule = {name: act for name, act in self.actions.items() if takes_rule(act)}

    async def decide(self, request: dict[str, str], now: float) -> Decision:
        """Run the rules over ``request`` (changed in place: derived items, ``set()``)."""
        add_derived(request)
        moment = local_time(datetime.fromtimestamp(now, self.zone))
        action, hits = DUNNO, list[str]()
        index, steps, limit = 0, 0, 100 * max(len(self.rules), 1)
        while index < len(self.rules):
            steps += 1
            if steps > limit:
                return Decision(DUNNO, None, tuple(hits), looped=True)
            rule = self.rules[index]
            if await self._matches(rule, request, moment):
                hits.append(rule.id)
                action, stop, index = await self._act(rule, index, request, now)
                if stop:
                    return Decision(action, rule, tuple(hits))
            index += 1
        return Decision(action, None, tuple(hits))

    async def _act(
        self, rule: Rule, index: int, request: dict[str, str], now: float
    ) -> tuple[str, bool, int]:
        """A matched rule's action: (action, whether it ends the list, index to go on from)."""
        action, stop = substitute(rule.action, request)[0], True
        for _ in range(MAX_COMMANDS):
            command = _COMMAND.fullmatch(action)
            if command is None:
                break
            name, argument = command.groups()
            stop, action = False, DUNNO
            if name == "jump":
                index = self._ids[argument] - 1 if argument in self._ids else index
            elif name == "set":
                _set(argument, request)
            elif name == "score":
                action, stop = self._score(argument, request)
            elif name in self.actions:
                per_rule = self._per_rule.get(name)  # postfwd's rate(): a counter per rule
                if per_rule is not None:
                    answer = await per_rule(argument, dict(request), now, rule=rule.id)
                else:
                    answer = await self.actions[name](argument, dict(request), now)
                if answer is not None:
                    action, stop = answer, True
            action = substitute(action, request)[0]
        return action, stop, index

    def _score(self, argument: str, request: dict[str, str]) -> tuple[str, bool]:
        score = perl_number(request.get("request_score", "0"))
        found = _SCORE.fullmatch(argument)
        if found is not None:
            mod = found.group(1)
            value = float(f"{found.group(2)}.{found.group(3) or 0}")
            if mod == "-":
                score -= value
            elif mod == "*":
                score *= value
            elif mod == "/":
                score = score / value if value else score
            elif mod == "=":
                score = value
            else:
                score += value
            text = perl_string(score)
            shown = re.match(r"(-?\d+)([.,]\d\d?)?", text)
            if shown is not None:
                text = shown.group(1) + (shown.group(2) or ".0")
            request["score"] = request["request_score"] = text
        current = perl_number(request.get("request_score", "0"))
        for threshold in sorted(self.scores, reverse=True):
            if current >= float(threshold) and self.scores[threshold]:
                return self.scores[threshold], True
        return DUNNO, False

    async def _matches(self, rule: Rule, request: Mapping[str, str], now: LocalTime) -> bool:
        for condition in rule.conditions:
            attribute = request.get(condition.item, "")
            for test in condition.tests:
                if await self._test(condition.item, test, attribute, request, now):
                    break
            else:
                return False
        return True

    async def _test(
        self, item: str, test: Test, attribute: str, request: Mapping[str, str], now: LocalTime
    ) -> bool:
        if test.table is not None:
            found = bool(attribute) and await self.tables[test.table].lookup(attribute) is not None
            result = not found if test.op == "!=" else found
        else:
            value = test.value
            if "$$" in value:
                value, replaced = substitute(value, request)
                if replaced and test.op != "==":
                    value = re.sub(r"([^-_@.\w\s])", r"\\\1", value)
            result = compare(item, test.op, value, attribute, now)
        return not result if test.negate else result


def _set(argument: str, request: dict[str, str]) -> None:
    """postfwd's ``set(name=value, name+=number, name.=text, ...)``."""
    for assignment in argument.split(","):
        found = _SET.match(assignment)
        if found is None:
            continue  # postfwd: "ignoring unknown set() attribute"
        name, mod, value = found.groups()
        current = request.get(name, "0")
        numeric = _NUMBER.match(current) and _NUMBER.match(value)
        if mod in ("=", "=="):
            result = value
        elif mod in (".=", "=."):
            result = current + value
        elif numeric and mod in ("+=", "=+", "-=", "=-", "*=", "=*", "/=", "=/"):
            left, right = float(current), float(value)
            match mod.replace("=", ""):
                case "+":
                    number = left + right
                case "-":
                    number = left - right
                case "*":
                    number = left * right
                case _:
                    number = left / (right or 1)
            result = perl_string(number)
        else:
            result = value
        request[name] = result
