"""Tables made of tables: ``unionmap:{t1, t2}`` joins every member's result with commas;
``pipemap:{t1, t2}`` looks each result up as the next member's key (no result anywhere: no
result). A member's failure is the whole lookup's failure."""

from __future__ import annotations

from collections.abc import Sequence

from filterd.sdk.tables.base import Table, TableError, TableSettings
from filterd.sdk.tables.names import TableName
from filterd.sdk.tables.registry import open_table as open_member
from filterd.sdk.tables.source import SourceError, list_body, tokenize_braced

__all__ = ["PipeTable", "UnionTable", "open_table"]


class _Composite(Table):
    def __init__(self, name: str, settings: TableSettings, members: Sequence[Table]) -> None:
        super().__init__(name, settings)
        self.members = tuple(members)
        # The first member decides, as in Postfix (cidr: first: no address splitting).
        self.fixed_string = self.members[0].fixed_string

    async def aclose(self) -> None:
        for member in self.members:
            await member.aclose()


class UnionTable(_Composite):
    async def lookup(self, key: str) -> str | None:
        joined = ""
        for member in self.members:
            result = await member.lookup(key)
            if result is not None:
                # Postfix adds the comma only after text: an empty result adds nothing first
                joined = f"{joined},{result}" if joined else result
        return joined or None


class PipeTable(_Composite):
    async def lookup(self, key: str) -> str | None:
        result = key
        for member in self.members:
            found = await member.lookup(result)
            if found is None:
                return None
            result = found
        return result


def open_table(name: TableName, settings: TableSettings) -> Table:
    """Open ``unionmap:{...}`` or ``pipemap:{...}`` and every member table."""
    table = str(name)
    need = f'write "{name.type}:{{type:name, type:name...}}"'
    try:
        specs = tokenize_braced(list_body(name.name))
    except SourceError:
        specs = []
    if not specs:
        raise TableError(table, "bad syntax", hint=need)
    for spec in specs:
        if ":" not in spec:
            raise TableError(table, f'bad syntax: "{spec}" is not a table', hint=need)
    try:
        members = [open_member(spec, settings) for spec in specs]
    except TableError as exc:
        raise TableError(table, str(exc)) from None
    kind = UnionTable if name.type == "unionmap" else PipeTable
    return kind(table, settings, members)
