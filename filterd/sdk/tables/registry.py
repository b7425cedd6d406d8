"""Which module opens which table type; :func:`open_table` is the one way to open a table.

Each type's module exposes ``open_table(name: TableName, settings: TableSettings) -> Table``
and is imported only when a table of its type is opened (the database drivers stay unloaded
for a chain that does not use them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from filterd.sdk.tables.base import Table, TableError, TableSettings
from filterd.sdk.tables.names import TableName, parse_table_name

__all__ = ["SUPPORTED_TYPES", "open_table"]

Opener = Callable[[TableName, TableSettings], Table]

# type -> module under filterd.sdk.tables that opens it
_MODULES: dict[str, str] = {
    "static": "memory",
    "inline": "memory",
    "texthash": "memory",
    "fail": "memory",
    "unionmap": "composite",
    "pipemap": "composite",
    "regexp": "patterns",
    "pcre": "patterns",
    "cidr": "cidr",
    "lmdb": "indexed",
    "cdb": "indexed",
    "hash": "indexed",
    "btree": "indexed",
    "sqlite": "sql",
    "mysql": "sql",
    "pgsql": "sql",
}

SUPPORTED_TYPES: tuple[str, ...] = tuple(sorted(_MODULES))


def open_table(spec: str | TableName, settings: TableSettings | None = None) -> Table:
    """Open ``type:name`` as Postfix would read it. Files are read (and checked) now;
    database tables connect at their first lookup, as Postfix's do. With a cache TTL in
    ``settings`` the table comes wrapped in a :class:`~filterd.sdk.tables.cache.CachedTable`.

    Raises :class:`TableError` naming the table, the file and line, and the fix.
    """
    name = parse_table_name(spec) if isinstance(spec, str) else spec
    module = _MODULES.get(name.type)
    if module is None:
        raise TableError(
            str(name),
            f'unsupported table type "{name.type}"',
            hint="use one of " + ", ".join(SUPPORTED_TYPES),
        )
    opener = cast(Opener, importlib.import_module(f"filterd.sdk.tables.{module}").open_table)
    settings = settings or TableSettings()
    table = opener(name, settings)
    if settings.cache_ttl > 0 or settings.negative_cache_ttl > 0:
        from filterd.sdk.tables.cache import CachedTable

        return CachedTable(table)
    return table
