"""``regexp:`` and ``pcre:`` tables (regexp_table(5), pcre_table(5)): a file of
``/pattern/flags result`` rules, or Postfix 3.7's inline ``regexp:{ {/a/ b}, {/c/ d} }``,
matched by the engine header_checks uses (:mod:`filterd.sdk.patterns`).

The first rule in file order that matches the whole key decides; ``$n`` in the result is
that rule's n-th sub-match; ``!/pattern/`` and ``if /pattern/`` ... ``endif`` as Postfix
reads them. The patterns decide about case: keys are never folded (``fixed_string`` is
False, so the search orders try the whole string once). The file is read once, when the
table is opened, as Postfix reads it.

As ``postmap -q`` with Postfix's default ``smtputf8_enable = yes``: a key that is not UTF-8
is not found, and a result that is not UTF-8 is a failure. Each pattern's match has
``settings.timeout`` to run; one that runs out is neither a match nor a non-match, as a PCRE
matching error is in Postfix.
"""

from __future__ import annotations

from pathlib import Path

import trio

from filterd.sdk.patterns import FLAVOURS, Flavour, PatternTable, RuleError, parse_table
from filterd.sdk.tables.base import Table, TableError, TableFailure, TableSettings
from filterd.sdk.tables.names import TableName
from filterd.sdk.tables.source import SourceError, extract_braced, list_body, tokenize_braced

__all__ = ["PatternLookupTable", "open_table"]


class PatternLookupTable(Table):
    """An opened ``regexp:`` or ``pcre:`` table."""

    fixed_string = False

    def __init__(self, name: str, settings: TableSettings, rules: PatternTable) -> None:
        super().__init__(name, settings)
        self.rules = rules

    async def lookup(self, key: str) -> str | None:
        await trio.lowlevel.checkpoint()
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return None  # not UTF-8 (surrogate-escaped bytes): Postfix finds nothing
        value = self.rules.query(key)
        if value is None:
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise TableFailure(
                self.name, f'key "{key}": the result is not UTF-8: {value!r}'
            ) from None
        return value


def open_table(name: TableName, settings: TableSettings) -> Table:
    """Read (and check) the rules now; a malformed rule is a TableError naming its line."""
    if name.type not in FLAVOURS:
        raise TableError(str(name), f'not a pattern table type "{name.type}"')
    flavour: Flavour = name.type
    table = str(name)
    manual = f"{flavour}_table(5)"
    rule_syntax = f"write /pattern/flags result, or if /pattern/ ... endif ({manual})"
    if name.name.startswith("{"):
        try:
            rules = [extract_braced(t) for t in tokenize_braced(list_body(name.name))]
        except SourceError as exc:
            need = f'write "{flavour}:{{ {{/pattern/ result}}, {{/pattern/ result}} }}"'
            raise TableError(table, f"{flavour} map: {exc}", hint=need) from None
        try:
            parsed = parse_table(
                "".join(rule + "\n" for rule in rules), flavour, timeout=settings.timeout
            )
        except RuleError as exc:
            raise TableError(table, f"rule {exc.line}: {exc.message}", hint=rule_syntax) from None
        return PatternLookupTable(table, settings, parsed)
    path = name.name
    if not path:
        raise TableError(table, "no file name", hint=f"write {flavour}:/path/to/table")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TableError(
            table,
            f"cannot read the table: {exc.strerror}",
            file=path,
            hint="check the path and that filterd's user may read the file",
        ) from None
    try:
        parsed = parse_table(data, flavour, name=path, timeout=settings.timeout)
    except RuleError as exc:
        raise TableError(table, exc.message, file=path, line=exc.line, hint=rule_syntax) from None
    return PatternLookupTable(table, settings, parsed)
