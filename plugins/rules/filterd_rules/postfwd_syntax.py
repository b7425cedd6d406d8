"""postfwd's rule files (postfwd.cf), read as postfwd 1.35 reads them, into the same rules as
the TOML ones. The subset, exactly as postfwd reads it:

- one rule a line, ``item OP value`` elements separated by ``;``, ``id=`` and ``action=``;
- ``#`` comments and every ``"`` removed; a line ending in ``\\`` continues on the next; a
  line that starts with whitespace (or ``}``) continues the one before;
- macros: ``&&NAME { item=value; ... };`` defines, ``&&NAME`` in a rule uses it;
- operators ``=`` ``==`` ``=~`` ``!~`` ``!=`` ``<`` ``>`` ``<=`` ``>=`` ``!<`` ``!>``
  (``<=`` ``>=`` ``~=`` rewritten as postfwd does), ``!!`` negation, ``$$attribute``;
- ``file:`` / ``table:`` lists (read once, at start-up: ``lfile:`` / ``ltable:`` too).

Where postfwd logs and skips (a line it cannot parse, a rule without action, an undefined
macro), filterd refuses the file and says where: a skipped rule silently changes a policy.
Items that need DNS or postfwd's counters (``rbl``, ``rhsbl*``, ``score`` items, ...) are
refused too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .ruleset import Condition, Rule, RuleProblem, Test, check_item, make_tests

__all__ = ["parse_postfwd", "read_postfwd_file"]

_SEP = r"[=~<>]=|[<>]|[=!][=~<>]|="
_VALID = re.compile(
    rf"^\s*[^=\s]+\s*(?:{_SEP})\s*(?:[^;\s]+\s*)+(?:;\s*[^=\s]+\s*(?:{_SEP})\s*(?:[^;\s]+\s*)+)*[;\s]*$"
)
_ELEMENT = re.compile(rf"^\s*(.*?)\s*({_SEP})\s*(.*?)\s*$", re.DOTALL)
_MACRO_DEFINITION = re.compile(r"^\s*(&&[-\w]+)\s*\{\s*(.*?)\s*;?\s*\}[\s;]*$")
_MACRO_USE = re.compile(r"&&[-\w]+")
_SINGLE = frozenset({"id", "action"})


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """postfwd's read_config_file(): comments and quotes out, continuations joined; each
    line with the number of its first physical line."""
    lines: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r'"|#.*', "", raw)
        if not line.strip():
            continue
        if not buffer:
            start = number
        continued = re.match(r"(.*)\\\s*$", line) or re.match(r"(.*\{)\s*$", line)
        if continued is not None:
            buffer += continued.group(1)
            continue
        buffer += line
        if lines and re.match(r"(\}|\s+\S)", buffer):
            first, last = lines.pop()
            if not re.search(r";\s*$", last):
                last += ";"
            buffer, start = last + buffer, first
        lines.append((start, buffer))
        buffer = ""
    return lines


def parse_postfwd(text: str, name: str) -> list[Rule]:
    """The rules of one postfwd file's text (``name`` for messages: ``FILE:LINE``)."""
    macros: dict[str, str] = {}
    rules: list[Rule] = []
    for number, line in _logical_lines(text):
        origin = f"{name}:{number}"
        definition = _MACRO_DEFINITION.match(line)
        if definition is not None:
            macros[definition.group(1)] = definition.group(2)
            continue
        line = _expand_macros(line, macros, origin)
        if not _VALID.match(line):
            raise RuleProblem(
                f"{origin}: postfwd cannot read this rule either (it skips it): write it as "
                f'"item=value; ...; action=ACTION": {line.strip()!r}'
            )
        rules.append(_rule(line, origin))
    return rules


def _expand_macros(line: str, macros: dict[str, str], origin: str) -> str:
    while (used := _MACRO_USE.search(line)) is not None:
        name = used.group(0)
        if name not in macros:
            raise RuleProblem(f"{origin}: undefined macro {name}: define it before the rule")
        line = re.sub(rf"\s*{re.escape(name)}\s*", _literal(macros[name]), line)
    return line


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    def replacement(_: re.Match[str]) -> str:
        return text

    return replacement


def _rule(line: str, origin: str) -> Rule:
    single: dict[str, str] = {}
    conditions: dict[str, list[Test]] = {}
    for element in line.split(";"):
        if not element.strip():
            continue
        parts = _ELEMENT.match(element)
        if parts is None:
            raise RuleProblem(f"{origin}: cannot read {element.strip()!r}: write item=value")
        key, op, value = parts.groups()
        op = {"<=": "=<", ">=": "=>", "~=": "=~"}.get(op, op)
        if key in _SINGLE:
            single[key] = value
            continue
        check_item(key, origin)
        conditions.setdefault(key, []).extend(make_tests(key, op, value, origin))
    if "action" not in single:
        raise RuleProblem(
            f"{origin}: rule without action (postfwd ignores it): add action=..., e.g. action=DUNNO"
        )
    return Rule(
        single.get("id", ""),  # none: R-<index in the whole list>, given when the list is made
        tuple(Condition(key, tuple(tests)) for key, tests in conditions.items()),
        single["action"],
        origin,
    )


def read_postfwd_file(path: str) -> list[Rule]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise RuleProblem(
            f"cannot read postfwd rule file {path} ({exc.strerror or exc}): fix the path"
        ) from None
    return parse_postfwd(text, path)
