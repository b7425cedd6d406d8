"""header_checks(5) tables: the shared ``regexp:``/``pcre:`` engine of
:mod:`filterd.sdk.patterns`, whose values are header_checks actions.

The engine matches as Postfix does; this module adds what only header_checks needs: every
value must be an action (checked when the table is read, an error names the line), actions
known at load time are parsed once, headers are indexed by name (most rules are
``/^Name: .../``), and body lines lose their line end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from filterd.sdk.patterns import Flavour, Hit, PatternTable, RuleError
from filterd.sdk.patterns import load_table as load_rules
from filterd.sdk.patterns import parse_table as parse_rules

from .actions import Action, parse_action, split_action

__all__ = [
    "Flavour",
    "Match",
    "Table",
    "TableError",
    "load_table",
    "parse_table",
]

#: A malformed table: ``file``, 1-based ``line`` where the logical line started, ``message``.
TableError = RuleError


@dataclass(frozen=True, slots=True)
class Match:
    """The first rule that fired for a lookup.

    ``value`` is the table's result after ``$n`` substitution, exactly what
    ``postmap -q`` prints; ``action`` is that value parsed; ``line`` is the table line
    where the rule starts.
    """

    value: str
    action: Action
    line: int


def check_action(raw: str, literal: str | None) -> None:
    """A rule's value must be a header_checks action whose command word is literal; an
    action known at load time must also be usable (e.g. REDIRECT needs user@domain)."""
    command, _ = split_action(raw)
    if "$" in command:
        raise ValueError(f"the action name must be literal, not {command!r}")
    if literal is None:
        parse_action(command)  # validates the command word
        return
    problem = parse_action(literal).problem("body")
    if problem is not None:
        raise ValueError(problem)


class Table:
    """A header_checks table; build one with :func:`load_table` or :func:`parse_table`."""

    __slots__ = ("_actions", "_rules")

    def __init__(self, rules: PatternTable) -> None:
        self._rules = rules
        # Parsed once: the actions of the rules whose value has no $n.
        self._actions: dict[int, Action] = {}
        for index, _, literal in rules.values():
            if literal is not None:
                try:
                    self._actions[index] = parse_action(literal)
                except ValueError:
                    pass  # a table read without check_actions: parsed (and refused) at lookup

    @property
    def flavour(self) -> Flavour:
        return self._rules.flavour

    @property
    def name(self) -> str:
        return self._rules.name

    @property
    def timeout(self) -> float | None:
        return self._rules.timeout

    def __len__(self) -> int:
        """Number of match rules (``if``/``endif`` not counted)."""
        return len(self._rules)

    def __repr__(self) -> str:
        return f"<Table {self.flavour}:{self.name} ({len(self)} rules)>"

    def static_actions(self) -> Iterator[tuple[int, Action]]:
        """(line, action) of every rule whose action is known at load time (no ``$n``)."""
        for index, action in self._actions.items():
            yield self._rules.line_of(index), action

    def lookup(self, key: str | bytes) -> Match | None:
        """Look up one key (a logical header line, or any string) like dict_regexp/dict_pcre.

        A header is presented as Postfix's cleanup(8) does: ``Name: value`` with folded
        continuation lines joined by ``\\n`` (no CR), the continuation white space kept,
        and no trailing newline. Empty keys never match (maps_find()); a key is cut at
        its first NUL byte, as Postfix sees C strings.

        Raises :class:`~filterd_header_checks.actions.ActionError` only for a table
        parsed with ``check_actions=False`` whose value is not an action.
        """
        return self._match(self._rules.find(key))

    def lookup_header(self, key: bytes, name: bytes) -> Match | None:
        """``lookup`` of a header presented as ``key`` whose name, lower-cased, is ``name``
        (known to the caller: not looked for again in the key)."""
        return self._match(self._rules.find_header(key, name))

    def _match(self, found: Hit | None) -> Match | None:
        if found is None:
            return None
        index, value = found
        action = self._actions.get(index)
        if action is None:
            action = parse_action(value)
        return Match(value=value, action=action, line=self._rules.line_of(index))

    def lookup_body(self, line: str | bytes) -> Match | None:
        """Look up one body line (body_checks): one trailing LF or CRLF is ignored.

        Postfix hands body_checks one physical line at a time, without its line end, in
        chunks of at most line_length_limit (2048) bytes; chunking is up to the caller.
        """
        data = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line
        if data.endswith(b"\n"):
            data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
        return self.lookup(data)

    def query(self, key: str | bytes) -> str | None:
        """The table's value for *key* after substitution, as ``postmap -q`` prints it."""
        return self._rules.query(key)

    def may_match(self, name: bytes) -> bool:
        """Whether a header called ``name`` (lower case, as bytes) can match a rule at all:
        False when every rule is bound to other header names (``/^Name: .../``, ``if
        /^Name:/`` blocks), so that the header need not even be presented for a lookup."""
        return self._rules.may_match(name)


def parse_table(
    source: str | bytes,
    flavour: Flavour,
    *,
    name: str = "<string>",
    timeout: float | None = None,
    check_actions: bool = True,
) -> Table:
    """Parse table text in Postfix ``regexp:`` or ``pcre:`` syntax.

    *name* is used in :class:`TableError` messages. *timeout* (seconds) bounds each
    single regular-expression match; a match that runs out of time counts as neither
    a match nor a non-match, as a PCRE matching error does in Postfix.

    With *check_actions* (the default) every value must be a header_checks(5)
    action; turn it off to use the table as a generic lookup table (:meth:`Table.query`).
    """
    return Table(
        parse_rules(
            source,
            flavour,
            name=name,
            timeout=timeout,
            check_value=check_action if check_actions else None,
            index_names=True,
        )
    )


def load_table(
    path: str | os.PathLike[str],
    flavour: Flavour,
    *,
    timeout: float | None = None,
    check_actions: bool = True,
) -> Table:
    """Read and parse a table file (the only I/O this module does); see :func:`parse_table`."""
    return Table(
        load_rules(
            path,
            flavour,
            timeout=timeout,
            check_value=check_action if check_actions else None,
            index_names=True,
        )
    )
