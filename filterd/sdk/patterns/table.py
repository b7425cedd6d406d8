"""Postfix ``regexp:`` and ``pcre:`` tables: the rule file and its matching.

A pure-Python re-implementation of Postfix's dict_regexp.c and dict_pcre.c on top of the
``regex`` package, shared by the lookup tables (:mod:`filterd.sdk.tables.patterns`) and the
header_checks plugin. This module reads the table text (logical lines, rule order,
``if``/``endif``, ``!`` negation, the ``/p1/!/p2/`` pair of ``regexp:``) and looks keys
up; the rest has a module each:

* :mod:`.pattern` compiles one ``/pattern/flags``, translated -- not passed through --
  by :mod:`.pcre` (PCRE2 as Postfix compiles it) or :mod:`.posix` (glibc ``regcomp()``),
  both on the "C" locale byte classes of :mod:`.byteclass`;
* :mod:`.replacement` parses the value's ``$n`` references and substitutes them.

Matching works on bytes, like Postfix: a ``str`` key is encoded as UTF-8 (with
``surrogateescape``, so text decoded that way from raw mail round-trips exactly) and
the value is decoded the same way.

Where Postfix logs a warning and skips a bad rule (or ignores stray text), this module
raises :class:`RuleError` naming the file and line instead, so a table that loads
here loads in Postfix without warnings (except the pcre ``X`` flag, which Postfix
built with PCRE2 ignores with a warning and this module ignores silently). PCRE
constructs the translator does not support are refused as "unsupported".

Two hooks serve header_checks(5) without this module knowing its actions: *check_value*
validates each rule's value when the table is read (an error names the line), and
*index_names* files the rules written as ``/^Name: .../`` under the header name, so that
a ``Name: value`` key is only tried against the rules that can match it.

The known differences from Postfix (in :mod:`.pcre` and :mod:`.posix`) were not seen
on realistic tables (the postmap differential tests).
"""

from __future__ import annotations

import enum
import functools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import regex

from .byteclass import ALNUM, SPACE
from .pattern import FLAVOURS, PCRE_FLAGS, REGEXP_FLAGS, Flavour, Pattern, compile_pattern
from .replacement import Template, parse_replacement, substitute
from .scanner import PatternError, show

__all__ = [
    "Flavour",
    "Hit",
    "PatternTable",
    "RuleError",
    "ValueCheck",
    "load_table",
    "parse_table",
]


class RuleError(Exception):
    """A malformed table: *file*, 1-based *line* where the logical line started, *message*."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}, line {line}: {message}")
        self.file = file
        self.line = line
        self.message = message


#: Validates a rule's value when the table is read: called with the value as written and,
#: when it has no ``$n``, the value itself (else None); a ValueError names what is wrong.
ValueCheck = Callable[[str, "str | None"], None]

#: What a lookup found: the index of the rule that fired and its value after ``$n``
#: substitution (exactly what ``postmap -q`` prints).
Hit = tuple[int, str]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class _Op(enum.Enum):
    MATCH = 1
    IF = 2
    ENDIF = 3


@dataclass(frozen=True, slots=True)
class _Rule:
    op: _Op
    line: int
    pattern: Pattern | None = None
    second: Pattern | None = None  # regexp: /p1/!/p2/
    template: Template = ()
    max_sub: int = 0
    literal: str | None = None  # the value, when it has no $n
    skip_to: int = 0  # IF: index of the matching ENDIF
    name_hint: bytes | None = None  # lower-case header name the rule can only match, if known


def _logical_lines(data: bytes, name: str) -> Iterator[tuple[int, bytes]]:
    """Postfix readllines(): yield (first line number, logical line)."""
    current: bytearray | None = None
    first = 0
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for lineno, raw in enumerate(lines, start=1):
        stripped = raw.lstrip(b" \t\n\v\f\r")
        if not stripped or stripped.startswith(b"#"):
            continue
        if raw[0] in SPACE:
            if current is None:
                raise RuleError(name, lineno, "logical line must not start with whitespace")
            current += raw
            continue
        if current is not None:
            yield first, bytes(current)
        current = bytearray(raw)
        first = lineno
    if current is not None:
        yield first, bytes(current)


class PatternTable:
    """A compiled regexp:/pcre: table; build one with :func:`load_table` or :func:`parse_table`."""

    __slots__ = (
        "_by_name",
        "_fast",
        "_generic",
        "_needs_upper",
        "_rules",
        "flavour",
        "name",
        "timeout",
    )

    def __init__(
        self,
        rules: Sequence[_Rule],
        *,
        flavour: Flavour,
        name: str,
        timeout: float | None,
        index_names: bool = False,
    ) -> None:
        self._rules = tuple(rules)
        self._needs_upper = any(
            pattern.upper
            for rule in self._rules
            for pattern in (rule.pattern, rule.second)
            if pattern is not None
        )
        self.flavour = flavour
        self.name = name
        self.timeout = timeout
        if index_names:
            generic, by_name = _index(self._rules)
        else:
            generic, by_name = tuple(range(len(self._rules))), {}
        self._generic = _plan(self._rules, generic)
        self._by_name = {name: _plan(self._rules, order) for name, order in by_name.items()}
        self._fast = _fast_entries(self._rules)

    def __len__(self) -> int:
        """Number of match rules (``if``/``endif`` not counted)."""
        return sum(1 for rule in self._rules if rule.op is _Op.MATCH)

    def __repr__(self) -> str:
        return f"<PatternTable {self.flavour}:{self.name} ({len(self)} rules)>"

    def values(self) -> Iterator[tuple[int, int, str | None]]:
        """(rule index, line, value) of every match rule; the value is None when it has
        ``$n`` (known only when the rule fires)."""
        for index, rule in enumerate(self._rules):
            if rule.op is _Op.MATCH:
                yield index, rule.line, rule.literal

    def line_of(self, index: int) -> int:
        """The table line where the rule ``index`` (of a :data:`Hit`) starts."""
        return self._rules[index].line

    def find(self, key: str | bytes) -> Hit | None:
        """Look up one key like dict_regexp/dict_pcre: the first rule in table order that
        fires, and its value after ``$n`` substitution.

        Empty keys never match (maps_find()); a key is cut at its first NUL byte, as
        Postfix sees C strings.
        """
        data = _key_bytes(key)
        return self._find(data, self._candidates(data))

    def find_header(self, key: bytes, name: bytes) -> Hit | None:
        """``find`` for a key ``Name: value`` whose name, lower-cased, is ``name`` (known to
        the caller: not looked for again in the key)."""
        if not self.may_match(name):
            return None
        return self._find(_key_bytes(key), self._by_name.get(name, self._generic))

    def query(self, key: str | bytes) -> str | None:
        """The table's value for *key* after substitution, as ``postmap -q`` prints it."""
        found = self.find(key)
        return None if found is None else found[1]

    def may_match(self, name: bytes) -> bool:
        """Whether a key ``Name: ...`` with this ``name`` (lower case, as bytes) can match a
        rule at all: False when every rule is bound to other names (``/^Name: .../``, ``if
        /^Name:/`` blocks; only with *index_names*), so the key need not even be built."""
        return bool(self._generic.order) or name in self._by_name

    def _candidates(self, data: bytes) -> _Plan:
        """Indexes of the rules that can match ``data``, in table order: rules hinted to
        another header name are left out (most header_checks rules are ``/^Name: .../``)."""
        if not self._by_name:
            return self._generic
        colon = data.find(b":")
        name = data[:colon].lower() if colon > 0 else b""
        found = self._by_name.get(name)
        if found is not None:
            return found
        return self._generic

    def _find(self, data: bytes, plan: _Plan) -> Hit | None:
        if not data:
            return None
        rules = self._rules
        timeout = self.timeout
        upper = data.upper() if self._needs_upper else data
        order, screens = plan
        if timeout is not None:
            screens = {}  # each pattern under its own time limit
        fast = self._fast
        at, count = 0, len(order)
        while at < count:
            screen = screens.get(at) if screens else None
            if screen is not None:
                end, any_of, on_upper = screen
                if any_of(upper if on_upper else data) is None:
                    at = end  # none of the rules up to ``end`` matches
                    continue
            i = order[at]
            at += 1
            op, search, use_upper, positive = fast[i]
            if op is _Op.ENDIF:
                continue
            try:
                if timeout is None:  # the hot path: a bound match/search, no keyword
                    found = search(upper if use_upper else data)
                else:
                    found = cast(Pattern, rules[i].pattern).find(data, upper, timeout)
            except TimeoutError:
                # Postfix: a matching error is neither a match nor a non-match; for an IF
                # the condition is false.
                if op is _Op.IF:
                    at = _skip_block(order, at, rules[i].skip_to)
                continue
            if op is _Op.IF:
                if (found is not None) != positive:
                    # Rules inside if/endif are never hinted, so they are contiguous in
                    # ``order`` up to the ENDIF.
                    at = _skip_block(order, at, rules[i].skip_to)
                continue
            if (found is not None) != positive:
                continue
            result = self._value(rules[i], data, upper, found)
            if result is not None:
                return i, result
        return None

    def _value(
        self, rule: _Rule, data: bytes, upper: bytes, found: regex.Match[bytes] | None
    ) -> str | None:
        """The second pattern (regexp ``/p1/!/p2/``), then the value with $n substituted."""
        second = rule.second
        if second is not None:
            try:
                hit = second.find(data, upper, self.timeout) is not None
            except TimeoutError:
                return None
            if hit != second.positive:
                return None
        if rule.literal is not None:
            return rule.literal
        assert found is not None
        return _decode(substitute(rule.template, data, found))


_Matcher = Callable[[bytes], "regex.Match[bytes] | None"]


class _Plan(NamedTuple):
    """The rules a lookup tries, in order (indexes into the table's rules), and its screens:
    at a position, (end, one match for any of the patterns of the rules up to ``end``, on
    the upper-cased subject?). When the screen finds nothing, none of those rules matches
    and the lookup goes on at ``end``: one match instead of one per rule, for the runs of
    ``/^Name: .../`` rules that make most tables."""

    order: tuple[int, ...]
    screens: dict[int, tuple[int, _Matcher, bool]]


_SCREEN_MIN = 2  # rules in a run for a screen to pay
# What a translated pattern must not hold to be matched as one alternative among others:
# group names, back-references and conditionals (group numbers change), inline options.
_NOT_COMBINABLE = re.compile(rb"\\g<|\\[0-9]|\(\?[^:=!<>]|\(\?<[^=!]")


def _plan(rules: tuple[_Rule, ...], order: tuple[int, ...]) -> _Plan:
    screens: dict[int, tuple[int, _Matcher, bool]] = {}
    at = 0
    while at < len(order):
        first = rules[order[at]].pattern
        end = at
        while end < len(order) and _screenable(rules[order[end]], first):
            end += 1
        if end - at >= _SCREEN_MIN and first is not None:
            sources = tuple(cast(Pattern, rules[i].pattern).compiled.pattern for i in order[at:end])
            combined = _any_of(sources)
            if combined is not None:
                screens[at] = (end, combined, first.upper)
        at = max(end, at + 1)
    return _Plan(order, screens)


def _screenable(rule: _Rule, first: Pattern | None) -> bool:
    """A rule a screen can stand for: a match rule whose (first) pattern is positive,
    anchored at the start of the subject (``^...``), on the same subject as the run's first,
    and combinable."""
    pattern = rule.pattern
    return (
        rule.op is _Op.MATCH
        and pattern is not None
        and first is not None
        and pattern.positive
        and not pattern.anchored
        and pattern.upper == first.upper
        and _starts_anchored(pattern.compiled.pattern)
        and _NOT_COMBINABLE.search(pattern.compiled.pattern) is None
    )


def _starts_anchored(source: bytes) -> bool:
    """Whether a translated pattern is ``\\A`` followed by one branch (no ``|`` outside
    parentheses): it can only match at the start of the subject."""
    if not source.startswith(b"\\A"):
        return False
    depth = 0
    at = 2
    while at < len(source):
        byte = source[at]
        if byte == 0x5C:  # "\\": the escaped byte (\\xNN's digits are plain)
            at += 2
            continue
        if byte == 0x5B:  # "[": a class, up to its "]" ("]" first in it is literal)
            at += 1
            if source[at : at + 1] == b"^":
                at += 1
            if source[at : at + 1] == b"]":
                at += 1
            while at < len(source) and source[at] != 0x5D:
                at += 2 if source[at] == 0x5C else 1
        elif byte == 0x28:  # "("
            depth += 1
        elif byte == 0x29:  # ")"
            depth -= 1
        elif byte == 0x7C and depth == 0:  # "|" between whole patterns
            return False
        at += 1
    return True


@functools.lru_cache(maxsize=256)
def _any_of(sources: tuple[bytes, ...]) -> _Matcher | None:
    """One match for "any of these patterns matches" (they all start with ``\\A``): the
    patterns without it, as alternatives after one ``\\A``. Existence does not depend on the
    POSIX leftmost-longest mode the patterns may have been compiled with."""
    branches = b"|".join(b"(?:" + source[2:] + b")" for source in sources)
    try:
        combined = regex.compile(b"\\A(?:" + branches + b")", regex.V0)
    except regex.error:
        return None
    return cast(_Matcher, combined.search)


def _skip_block(order: tuple[int, ...], at: int, endif: int) -> int:
    while at < len(order) and order[at] <= endif:
        at += 1
    return at


def _never(_: bytes) -> None:
    return None


def _fast_entries(rules: tuple[_Rule, ...]) -> tuple[tuple[_Op, _Matcher, bool, bool], ...]:
    """Per rule: (op, bound match/search of its compiled pattern, on the upper-cased subject?,
    positive?) — what the lookup loop needs, without attribute chains per rule."""
    entries: list[tuple[_Op, _Matcher, bool, bool]] = []
    for rule in rules:
        pattern = rule.pattern
        if pattern is None:
            entries.append((rule.op, _never, False, True))
            continue
        compiled = pattern.compiled
        search = cast(_Matcher, compiled.match if pattern.anchored else compiled.search)
        entries.append((rule.op, search, pattern.upper, pattern.positive))
    return tuple(entries)


def _index(rules: tuple[_Rule, ...]) -> tuple[tuple[int, ...], dict[bytes, tuple[int, ...]]]:
    """(rules for any header, rules per hinted header name incl. the generic ones).

    An ``if /^Name:/`` block (its IF hinted, outside any other block) belongs to headers
    called Name as a whole, IF to ENDIF: for any other header its condition is false and the
    block is skipped, so it need not be looked at. Rules inside a block that is not hinted
    are never hinted themselves, so that a block's rules stay contiguous in the lookup
    order up to its ENDIF."""
    hints: list[bytes | None] = []
    blocks: list[bytes | None] = []  # the hint of each open block, innermost last
    for rule in rules:
        if rule.op is _Op.IF:
            hint = blocks[-1] if blocks else rule.name_hint
            blocks.append(hint)
        elif rule.op is _Op.ENDIF:
            hint = blocks.pop()
        else:
            hint = blocks[-1] if blocks else rule.name_hint
        hints.append(hint)
    generic = tuple(i for i, hint in enumerate(hints) if hint is None)
    names = {hint for hint in hints if hint is not None}
    by_name = {
        name: tuple(i for i, hint in enumerate(hints) if hint is None or hint == name)
        for name in names
    }
    return generic, by_name


def _key_bytes(key: str | bytes) -> bytes:
    data = _encode(key) if isinstance(key, str) else key
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def _get_pattern(
    flavour: Flavour, text: bytes, pos: int, fail: _Fail
) -> tuple[bytes, str, bool, int]:
    """dict_*_get_pat(): negation, delimited pattern and flags starting at *pos*."""
    positive = True
    n = len(text)
    while pos < n and (text[pos] == ord("!") or text[pos] in SPACE):
        if text[pos] == ord("!"):
            positive = not positive
        pos += 1
    if pos >= n:
        raise fail("no regexp")
    delim = text[pos]
    pos += 1
    start = pos
    while pos < n:
        if text[pos] == ord("\\"):
            if pos + 1 >= n:
                break
            pos += 1
        elif text[pos] == delim:
            break
        pos += 1
    if pos >= n:
        raise fail(f'no closing regexp delimiter "{chr(delim)}"')
    pattern = text[start:pos]
    pos += 1
    flag_start = pos
    allowed = PCRE_FLAGS if flavour == "pcre" else REGEXP_FLAGS
    while pos < n and text[pos] not in SPACE and (flavour == "pcre" or text[pos] != ord("!")):
        if chr(text[pos]) not in allowed:
            raise fail(f'unknown regexp option "{chr(text[pos])}"')
        pos += 1
    return pattern, text[flag_start:pos].decode("ascii"), positive, pos


class _Fail:
    """Builds RuleErrors for one logical line."""

    __slots__ = ("line", "name")

    def __init__(self, name: str, line: int) -> None:
        self.name = name
        self.line = line

    def __call__(self, message: str) -> RuleError:
        return RuleError(self.name, self.line, message)


def _keyword(text: bytes, word: bytes) -> bool:
    n = len(word)
    return text[:n].upper() == word and (len(text) == n or text[n] not in ALNUM)


def _parse_match_rule(
    flavour: Flavour, text: bytes, fail: _Fail, check_value: ValueCheck | None
) -> _Rule:
    try:
        first, first_flags, first_positive, pos = _get_pattern(flavour, text, 0, fail)
        second_src: tuple[bytes, str, bool] | None = None
        if flavour == "regexp" and pos < len(text) and text[pos] == ord("!"):
            pat, flags, positive, pos = _get_pattern(flavour, text, pos, fail)
            second_src = (pat, flags, positive)
        while pos < len(text) and text[pos] in SPACE:
            pos += 1
        raw = text[pos:]
        if not raw:
            raise fail("no replacement text (the rule has no result)")
        template = parse_replacement(raw)
        max_sub = max((p for p in template if isinstance(p, int)), default=0)
        if max_sub and not first_positive:
            raise fail("$number found in negative match replacement text")
        literal: str | None = None
        if max_sub == 0:
            literal = _decode(b"".join(p for p in template if isinstance(p, bytes)))
        if check_value is not None:
            try:
                check_value(_decode(raw), literal)
            except ValueError as exc:
                raise fail(str(exc)) from None
        pattern = compile_pattern(
            flavour, first, first_flags, positive=first_positive, captures=max_sub > 0
        )
        if max_sub > pattern.compiled.groups:
            raise fail(f'out of range replacement index "{max_sub}"')
        second = None
        if second_src is not None:
            second = compile_pattern(
                flavour, second_src[0], second_src[1], positive=second_src[2], captures=False
            )
    except PatternError as exc:
        raise fail(str(exc)) from None
    # A second pattern only narrows what the first matches: the first one's name holds.
    hint = _name_hint(first, first_flags) if first_positive else None
    return _Rule(
        op=_Op.MATCH,
        line=fail.line,
        pattern=pattern,
        second=second,
        template=template,
        max_sub=max_sub,
        literal=literal,
        name_hint=hint,
    )


_NAME_HINT = re.compile(rb"^\^([A-Za-z0-9][A-Za-z0-9-]*):")


def _name_hint(pattern: bytes, flags: str) -> bytes | None:
    """``^Name:`` at the start of a pattern: the rule can only match headers called Name.

    Only for plain literal names (no escapes, classes or spaces) and without the flags that
    change what ``^`` or the literal mean (multi-line, extended); the hint is a pre-filter,
    the rule's own regex still decides.
    """
    if "m" in flags or "x" in flags:
        return None
    found = _NAME_HINT.match(pattern)
    return found.group(1).lower() if found else None


def parse_table(
    source: str | bytes,
    flavour: Flavour,
    *,
    name: str = "<string>",
    timeout: float | None = None,
    check_value: ValueCheck | None = None,
    index_names: bool = False,
) -> PatternTable:
    """Parse table text in Postfix ``regexp:`` or ``pcre:`` syntax.

    *name* is used in :class:`RuleError` messages. *timeout* (seconds) bounds each
    single regular-expression match; a match that runs out of time counts as neither
    a match nor a non-match, as a PCRE matching error does in Postfix.

    *check_value* validates each rule's value (header_checks: it must be an action);
    *index_names* files ``/^Name: .../`` rules under their name (see
    :meth:`PatternTable.find_header`): both only for tables of ``Name: value`` keys.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be 'regexp' or 'pcre', not {flavour!r}")
    data = _encode(source) if isinstance(source, str) else source
    rules: list[_Rule] = []
    stack: list[int] = []  # indexes of open IF rules
    for lineno, logical in _logical_lines(data, name):
        fail = _Fail(name, lineno)
        text = logical.rstrip(b" \t\n\v\f\r")
        if b"\0" in text:
            raise fail("NUL byte in table")
        if text[0] not in ALNUM:
            rules.append(_parse_match_rule(flavour, text, fail, check_value))
        elif _keyword(text, b"IF"):
            pat, flags, positive, pos = _get_pattern(flavour, text, 2, fail)
            rest = text[pos:].lstrip(b" \t\n\v\f\r")
            if rest:
                raise fail(f'extra text after IF statement: "{show(rest)}"')
            try:
                compiled = compile_pattern(flavour, pat, flags, positive=positive, captures=False)
            except PatternError as exc:
                raise fail(str(exc)) from None
            stack.append(len(rules))
            hint = _name_hint(pat, flags) if positive else None
            rules.append(_Rule(op=_Op.IF, line=lineno, pattern=compiled, name_hint=hint))
        elif _keyword(text, b"ENDIF"):
            if not stack:
                raise fail("ENDIF without matching IF")
            if text[5:].strip(b" \t\n\v\f\r"):
                raise fail("extra text after ENDIF")
            opener = stack.pop()
            if_rule = rules[opener]
            rules[opener] = _Rule(
                op=_Op.IF,
                line=if_rule.line,
                pattern=if_rule.pattern,
                skip_to=len(rules),
                name_hint=if_rule.name_hint,
            )
            rules.append(_Rule(op=_Op.ENDIF, line=lineno))
        else:
            raise fail("unrecognized request (rules start with a delimiter, IF or ENDIF)")
    if stack:
        raise RuleError(name, rules[stack[-1]].line, "IF has no matching ENDIF")
    return PatternTable(rules, flavour=flavour, name=name, timeout=timeout, index_names=index_names)


def load_table(
    path: str | os.PathLike[str],
    flavour: Flavour,
    *,
    timeout: float | None = None,
    check_value: ValueCheck | None = None,
    index_names: bool = False,
) -> PatternTable:
    """Read and parse a table file (the only I/O this module does); see :func:`parse_table`."""
    with open(path, "rb") as fh:
        data = fh.read()
    return parse_table(
        data,
        flavour,
        name=os.fspath(path),
        timeout=timeout,
        check_value=check_value,
        index_names=index_names,
    )
