"""The lookup tables a delivery stage opens from its configuration: opened when the delivery is
built (start-up, reload: a table that cannot be opened is an error naming its setting), closed
by the delivery's ``aclose`` when its generation ends.

``aclose`` also comes when a generation is retired while its last sessions go on (the
``Delivery`` contract: keep nothing idle, a transaction opened afterwards still works). So the
tables in use by a lookup are closed once it ends, and a lookup after ``aclose`` opens them
again (a retired generation's last sessions still resolve their recipients); the final
``aclose`` closes those too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import trio

from filterd.config.schema import MaildirDelivery, RelayDelivery
from filterd.errors import FilterdError
from filterd.sdk.tables import Table, TableError, TableSettings, open_table

__all__ = [
    "DeliveryTables",
    "Opener",
    "TableOpenError",
    "TableSets",
    "open_tables",
    "table_problem",
    "table_specs",
]

TableSets = Mapping[str, tuple[Table, ...]]
"""Opened tables by setting name (``mailbox_maps``, ...), in the order written."""

Opener = Callable[[str, TableSettings | None], Table]


class TableOpenError(FilterdError):
    """A table of the delivery's settings cannot be opened. ``key`` is the setting
    (``mailbox_maps``), ``index`` the table's place in it; ``str()`` names both."""

    def __init__(self, key: str, index: int, error: TableError) -> None:
        super().__init__(f"delivery.{key}[{index}]: {error}")
        self.key = key
        self.index = index
        self.error = error


def open_tables(specs: Mapping[str, tuple[str, ...]], opener: Opener = open_table) -> TableSets:
    """Every table of ``specs`` opened (files read and checked), or ``TableOpenError`` for
    the first that cannot be."""
    opened: dict[str, tuple[Table, ...]] = {}
    for key, names in specs.items():
        tables = []
        for index, name in enumerate(names):
            try:
                tables.append(opener(name, None))
            except TableError as exc:
                raise TableOpenError(key, index, exc) from None
        opened[key] = tuple(tables)
    return opened


def table_specs(config: MaildirDelivery | RelayDelivery) -> dict[str, tuple[str, ...]]:
    """The tables a delivery's settings name, by setting (those that name any)."""
    if isinstance(config, RelayDelivery):
        return {"recipient_maps": config.recipient_maps} if config.recipient_maps else {}
    return {**config.maps, **config.domain_tables}


def table_problem(config: MaildirDelivery | RelayDelivery) -> TableOpenError | None:
    """The first table of a delivery's settings that cannot be opened (a malformed name, an
    unknown type, a missing or wrong file), or None; checked before serving. The tables
    opened to check are not kept (database tables connect only at their first lookup)."""
    try:
        open_tables(table_specs(config))
    except TableOpenError as exc:
        return exc
    return None


class _Opened:
    def __init__(self, tables: TableSets) -> None:
        self.tables = tables
        self.users = 0
        self.retired = False

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            for tables in self.tables.values():
                for table in tables:
                    await table.aclose()


class DeliveryTables:
    """The tables of a delivery's settings (see the module)."""

    def __init__(self, specs: Mapping[str, tuple[str, ...]], opener: Opener = open_table) -> None:
        self.specs = dict(specs)
        self._opener = opener
        self._current: _Opened | None = _Opened(open_tables(self.specs, opener))

    @asynccontextmanager
    async def use(self) -> AsyncIterator[TableSets]:
        """The tables, open until the block ends (also across an ``aclose`` meanwhile)."""
        opened = self._current
        if opened is None:
            opened = self._current = _Opened(open_tables(self.specs, self._opener))
        opened.users += 1
        try:
            yield opened.tables
        finally:
            opened.users -= 1
            if opened.retired and opened.users == 0:
                await opened.close()

    async def aclose(self) -> None:
        """Close the tables (those in use once their lookups end)."""
        opened, self._current = self._current, None
        if opened is None:
            return
        opened.retired = True
        if opened.users == 0:
            await opened.close()
