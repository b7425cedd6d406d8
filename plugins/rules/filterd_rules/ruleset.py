"""The rule list: rules, their conditions and tests, read from the settings' TOML tables (and,
through :mod:`filterd_rules.postfwd_syntax`, from postfwd's own files) into one model.

A rule is an ``id``, conditions and an ``action``. A condition is one item (a request
attribute, or ``date``, ``time``, ``days``, ``months``) and its tests: the same item given
several times is an OR, different items an AND (postfwd's rule). A test is an operator, a
value, and ``!!`` negation; its value may name a list file (``file:PATH``, ``table:PATH``:
postfwd's, read at start-up) or a filterd lookup table (``lookup:TYPE:NAME``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from filterd.sdk.tables import SUPPORTED_TYPES, TableError, parse_table_name

from .compare import CIDR_ITEMS, NUMERIC_ITEMS, OPERATORS, TIME_ITEMS, regex_problem

__all__ = [
    "CSV_ITEMS",
    "Condition",
    "Rule",
    "RuleProblem",
    "Test",
    "check_rules",
    "make_tests",
    "rule_from_table",
    "split_operator",
]

#: Items whose value is a comma-separated list in postfwd (each element its own test).
CSV_ITEMS = CIDR_ITEMS | TIME_ITEMS

#: postfwd items that need DNS or postfwd's own counters: not in filterd's rules.
UNSUPPORTED_ITEMS = frozenset(
    {
        "rbl",
        "rhsbl",
        "rhsbl_client",
        "rhsbl_sender",
        "rhsbl_reverse_client",
        "rhsbl_helo",
        "rblcount",
        "rhsblcount",
        "sender_ns_names",
        "sender_ns_addrs",
        "sender_mx_names",
        "sender_mx_addrs",
        "helo_address",
        "score",
        "cache",
        "dnsbltext",
    }
)

_OPERATOR = re.compile(r"\s*(==|=~|!~|!=|=<|=>|!<|!>|<=|>=|~=|<|>|=)?\s*(.*?)\s*\Z", re.DOTALL)
_REWRITE = {"<=": "=<", ">=": "=>", "~=": "=~"}
_NEGATION = re.compile(r"!!\s*\(?\s*(.+?)\s*\)?\Z", re.DOTALL)
_LIST_FILE = re.compile(r"(cfile|file|lfile|ctable|table|ltable):(.+)\Z", re.IGNORECASE)
_ITEM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class RuleProblem(ValueError):
    """A rule that cannot be used: what is wrong and how to fix it."""


@dataclass(frozen=True, slots=True)
class Test:
    """``op`` one of compare.OPERATORS; ``table`` a filterd table spec for ``lookup:``."""

    op: str
    value: str
    negate: bool = False
    table: str | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    item: str
    tests: tuple[Test, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    conditions: tuple[Condition, ...]
    action: str
    origin: str  # where it was written, for log lines and errors

    @property
    def command(self) -> tuple[str, str] | None:
        """``(name, argument)`` of an action written ``name(argument)``, else None."""
        found = re.fullmatch(r"(\w[-\w]+)\s*\(\s*(.*?)\s*\)", self.action, re.DOTALL)
        return (found.group(1), found.group(2)) if found else None


def split_operator(text: str) -> tuple[str, str]:
    """``"=~ @example"`` -> ``("=~", "@example")``; no operator: the item's default ``=``."""
    found = _OPERATOR.match(text)
    assert found is not None  # the pattern matches any text
    op = found.group(1) or "="
    return _REWRITE.get(op, op), found.group(2)


def _read_list(kind: str, path: str, origin: str) -> list[str]:
    """postfwd's ``file:`` / ``table:`` list: one value a line, ``#`` comments, a table's
    last column (its action) dropped."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise RuleProblem(
            f"{origin}: cannot read {kind}:{path} ({exc.strerror or exc}): fix the path"
        ) from None
    values = []
    for line in text.splitlines():
        line = re.sub(r"#.*", "", line)
        if not line.strip():
            continue
        if "table" in kind.lower():
            line = re.sub(r"\s+\S+\Z", "", line)
        values.append(line.strip())
    return values


def make_tests(item: str, op: str, value: str, origin: str) -> list[Test]:
    """The tests one ``item OP value`` gives: a comma list for CSV items, a list file's
    values, a lookup table, or the value itself."""
    if op not in OPERATORS:
        raise RuleProblem(f"{origin}: {item}: unknown operator {op!r}: use one of {OPERATORS}")
    elements = re.split(r"\s*,\s*", value) if item in CSV_ITEMS else [value]
    tests: list[Test] = []
    for element in elements:
        listed = _LIST_FILE.match(element)
        if listed is not None:
            for line in _read_list(listed.group(1), listed.group(2), origin):
                tests.extend(make_tests(item, op, line, origin))
            continue
        tests.append(_test(item, op, element, origin))
    return tests


def _test(item: str, op: str, element: str, origin: str) -> Test:
    negate = False
    negated = _NEGATION.match(element)
    if negated is not None:
        negate, element = True, negated.group(1)
    if element.lower().startswith("lookup:"):
        if op not in ("=", "==", "!="):
            raise RuleProblem(
                f"{origin}: {item}: a lookup table is tested with = or != (found or not), not {op}"
            )
        spec = element[len("lookup:") :]
        try:
            kind = parse_table_name(spec).type
        except TableError as exc:
            raise RuleProblem(f"{origin}: {item}: lookup:{spec}: {exc}") from None
        if kind not in SUPPORTED_TYPES:
            raise RuleProblem(
                f'{origin}: {item}: lookup:{spec}: unsupported table type "{kind}": use one '
                f"of {', '.join(SUPPORTED_TYPES)}"
            )
        return Test(op, element, negate, table=spec)
    if op in ("=~", "!~"):
        element = element.removeprefix("/").removesuffix("/")  # postfwd's prepare_pcre
    regex = op in ("=~", "!~") or (
        op == "=" and item not in CIDR_ITEMS | TIME_ITEMS and item not in NUMERIC_ITEMS
    )
    if regex and "$$" not in element:
        pattern = element if op != "=" else element.removeprefix("/").removesuffix("/")
        problem = regex_problem(pattern)
        if problem is not None:
            raise RuleProblem(
                f"{origin}: {item}: {pattern!r} is no regular expression ({problem}): "
                "escape it, or compare with == for an exact value"
            )
    return Test(op, element, negate)


def check_item(item: str, origin: str) -> None:
    if item in UNSUPPORTED_ITEMS:
        raise RuleProblem(
            f"{origin}: postfwd's item {item!r} is not supported by filterd's rules "
            "(it needs DNS or postfwd's own counters): remove it"
        )
    if _ITEM.match(item) is None:
        raise RuleProblem(f"{origin}: {item!r} is no attribute name: use letters, digits and _")


def rule_from_table(table: Mapping[str, object], index: int) -> Rule:
    """One ``[[rules]]`` TOML table: ``id``, ``action`` and item = "OP value" (or a list)."""
    origin = f"rules[{index}]"
    rule_id = table.get("id", "")  # none: R-<index in the whole list>, given later
    action = table.get("action")
    if not isinstance(rule_id, str):
        raise RuleProblem(f"{origin}: id must be text")
    if not isinstance(action, str) or not action.strip():
        raise RuleProblem(
            f'{origin}: no action: add one, e.g. action = "REJECT text", "DUNNO" or "jump(ID)"'
        )
    conditions: dict[str, list[Test]] = {}
    for item, raw in table.items():
        if item in ("id", "action"):
            continue
        check_item(item, origin)
        values = raw if isinstance(raw, list) else [raw]
        for value in values:
            if not isinstance(value, str | int):
                raise RuleProblem(
                    f'{origin}: {item}: expected "OP value" text or a list of them, got {value!r}'
                )
            op, text = split_operator(str(value))
            conditions.setdefault(item, []).extend(make_tests(item, op, text, origin))
    return Rule(
        rule_id,
        tuple(Condition(item, tuple(tests)) for item, tests in conditions.items()),
        action.strip(),
        origin,
    )


def check_rules(rules: Sequence[Rule], known_actions: Iterable[str]) -> None:
    """Ids unique where a jump needs them; every jump finds its rule; every other
    ``name(...)`` action is a known one."""
    ids = {rule.id for rule in rules}
    known = set(known_actions)
    for rule in rules:
        command = rule.command
        if command is None:
            continue
        name, argument = command
        if name == "jump" and argument not in ids:
            raise RuleProblem(f"{rule.origin}: jump({argument}): no rule has id {argument!r}")
        if name not in known:
            raise RuleProblem(
                f"{rule.origin}: unknown action {name}(): use an access(5) action, jump(), "
                f"set(), score(), or an installed rule action ({', '.join(sorted(known))})"
            )
