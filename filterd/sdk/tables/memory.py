"""The tables held in memory: ``static:``, ``inline:{...}``, ``texthash:`` and ``fail:``.

``inline:`` and ``texthash:`` read everything when opened (a later edit of a texthash file is
seen at the next reload, as Postfix's long-running processes see it when recycled).
"""

from __future__ import annotations

import logging
from pathlib import Path

from filterd.sdk.tables.base import Table, TableError, TableFailure, TableSettings
from filterd.sdk.tables.names import TableName
from filterd.sdk.tables.source import (
    SourceError,
    extract_braced,
    fold_key,
    leading_space_dropped,
    list_body,
    logical_lines,
    split_key_value,
    split_quoted_name_value,
    tokenize_braced,
)

__all__ = ["FailTable", "MappingTable", "StaticTable", "open_table", "read_source_file"]

log = logging.getLogger("filterd.tables")


class StaticTable(Table):
    """``static:value``: every key finds ``value``."""

    def __init__(self, name: str, settings: TableSettings, value: str) -> None:
        super().__init__(name, settings)
        self.value = value

    async def lookup(self, key: str) -> str | None:
        return self.value


class FailTable(Table):
    """``fail:name``: every lookup fails (Postfix's "Application error"), for tests and for
    taking a table out of service without removing it."""

    async def lookup(self, key: str) -> str | None:
        raise TableFailure(self.name, "Application error")


class MappingTable(Table):
    """Keys and values in a dict; keys folded when the table was built with folding."""

    def __init__(self, name: str, settings: TableSettings, entries: dict[str, str]) -> None:
        super().__init__(name, settings)
        self.entries = entries

    async def lookup(self, key: str) -> str | None:
        return self.entries.get(fold_key(key) if self.settings.fold_case else key)


def _open_static(name: TableName, settings: TableSettings) -> Table:
    value = name.name
    if not value:
        raise TableError(str(name), "no value", hint='write "static:value" or "static:{ a value }"')
    if value.startswith("{"):
        try:
            value = extract_braced(value)
        except SourceError as exc:
            raise TableError(str(name), f"bad static:name syntax: {exc}") from None
    return StaticTable(str(name), settings, value)


def _open_inline(name: TableName, settings: TableSettings) -> Table:
    table = str(name)
    need = 'write "inline:{ key=value, { key = value with spaces } }"'
    try:
        body = list_body(name.name)
    except SourceError:
        body = ""
    if not body:
        raise TableError(table, "bad syntax", hint=need)
    entries: dict[str, str] = {}
    for token in tokenize_braced(body):
        try:
            element = extract_braced(token) if token.startswith("{") else token
            key, value = split_quoted_name_value(element)
        except SourceError as exc:
            raise TableError(table, f'{exc} in "{token}"', hint=need) from None
        # Later elements replace earlier ones, as in Postfix (no duplicate check for inline:).
        entries[fold_key(key) if settings.fold_case else key] = value
    if not entries:
        raise TableError(table, "empty table", hint=need)
    return MappingTable(table, settings, entries)


def read_source_file(table: str, path: str) -> str:
    """The text of a table's source file; TableError as Postfix words a file it cannot open.
    Bytes that are not UTF-8 are kept as surrogate escapes (:func:`parse_source` drops the
    lines holding them, as Postfix does with SMTPUTF8 on)."""
    try:
        return Path(path).read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise TableError(
            table,
            f"open database {path}: {exc.strerror}",
            hint="check the file name and its permissions",
        ) from None


def parse_source(table: str, path: str, text: str, *, fold: bool) -> dict[str, str]:
    """The ``key value`` entries of a postmap(1) source file, as ``texthash:`` reads them:
    a malformed line, a non-UTF-8 line and a duplicate key are logged as warnings naming the
    file and line and ignored (the first entry of a key wins), as Postfix does."""
    entries: dict[str, str] = {}
    for line in logical_lines(text):
        where = f"table {table}: {path}, line {line.first}"
        if leading_space_dropped(line):
            log.warning("%s: logical line must not start with whitespace -- ignoring it", where)
            continue
        try:
            line.text.encode("utf-8")
        except UnicodeEncodeError:
            log.warning("%s: non-UTF-8 input -- ignoring this line", where)
            continue
        try:
            key, value = split_key_value(line.text)
        except SourceError as exc:
            log.warning("%s: %s -- ignoring this line", where, exc)
            continue
        if key.endswith(":"):
            log.warning('%s: record is in "key: value" format; is this an alias file?', where)
        if fold:
            key = fold_key(key)
        if key in entries:
            log.warning('%s: duplicate entry: "%s" -- the first one counts', where, key)
            continue
        entries[key] = value
    return entries


def _open_texthash(name: TableName, settings: TableSettings) -> Table:
    table = str(name)
    if not name.name:
        raise TableError(table, "no file name", hint='write "texthash:/etc/postfix/file"')
    text = read_source_file(table, name.name)
    return MappingTable(
        table, settings, parse_source(table, name.name, text, fold=settings.fold_case)
    )


def _open_fail(name: TableName, settings: TableSettings) -> Table:
    return FailTable(str(name), settings)


_OPENERS = {
    "static": _open_static,
    "inline": _open_inline,
    "texthash": _open_texthash,
    "fail": _open_fail,
}


def open_table(name: TableName, settings: TableSettings) -> Table:
    """Open a ``static:``, ``inline:``, ``texthash:`` or ``fail:`` table."""
    return _OPENERS[name.type](name, settings)
