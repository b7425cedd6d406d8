"""The indexed files ``postmap`` builds: ``lmdb:`` (``name.lmdb``), ``cdb:`` (``name.cdb``),
``hash:`` and ``btree:`` (``name.db``, Berkeley DB through the optional ``berkeleydb``
binding: ``pip install 'filterd[hash]'``).

Keys and values are stored as postmap wrote them: with a trailing NUL byte or without (its
``-N``/``-n``; Debian's default is with NUL for lmdb and hash, without for cdb). A lookup tries
the key with the NUL, then without, and keeps to the form that was found first, as Postfix's
readers do; a value ends at its first NUL.

Lookups run on the calling (trio) thread: each is one read of a memory-mapped (lmdb, cdb) or
page-cached (Berkeley DB) local file, a few microseconds when the pages are cached and one
disk read when not -- less than handing the call to a worker thread would cost. A table on a
network file system that may stall is not a case these types are for (Postfix reads them the
same way in its own processes).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from filterd.sdk.tables.base import Table, TableError, TableFailure, TableSettings
from filterd.sdk.tables.names import TableName
from filterd.sdk.tables.source import fold_key

__all__ = ["IndexedTable", "open_table"]

Getter = Callable[[bytes], bytes | None]

_SUFFIX = {"lmdb": ".lmdb", "cdb": ".cdb", "hash": ".db", "btree": ".db"}


class IndexedTable(Table):
    """One opened indexed file; ``get`` reads the raw bytes of one key."""

    def __init__(
        self, name: str, settings: TableSettings, get: Getter, close: Callable[[], None]
    ) -> None:
        super().__init__(name, settings)
        self._get = get
        self._close = close
        self._with_nul = True  # try the key with a trailing NUL
        self._without_nul = True  # try it without

    async def lookup(self, key: str) -> str | None:
        if self.settings.fold_case:
            key = fold_key(key)
        raw = key.encode("utf-8", "surrogateescape")
        try:
            value = self._find(raw)
        except Exception as exc:  # a damaged file, a closed table: a failure, never "not found"
            raise TableFailure(self.name, f"{type(exc).__name__}: {exc}") from exc
        if value is None:
            return None
        return value.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")

    def _find(self, raw: bytes) -> bytes | None:
        if self._with_nul:
            value = self._get(raw + b"\0")
            if value is not None:
                self._without_nul = False
                return value
        if self._without_nul:
            value = self._get(raw)
            if value is not None:
                self._with_nul = False
                return value
        return None

    async def aclose(self) -> None:
        self._close()


def _missing(table: str, path: str, exc: OSError | None = None, message: str = "") -> TableError:
    reason = message or (exc.strerror if exc and exc.strerror else str(exc))
    return TableError(
        table,
        f"open database {path}: {reason}",
        hint=f"build it with `postmap {table}` from its source file, or check the file name",
    )


def _open_lmdb(table: str, path: str) -> IndexedTable:
    import lmdb

    if not os.path.exists(path):
        raise _missing(table, path, message=os.strerror(errno.ENOENT))
    try:
        # Postfix's files are one file (no subdirectory) and locked by Postfix itself.
        env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=0)
    except lmdb.Error as exc:
        raise _missing(table, path, message=str(exc)) from None

    def get(key: bytes) -> bytes | None:
        with env.begin(buffers=False) as txn:
            value: bytes | None = txn.get(key)
            return value

    return IndexedTable(table, TableSettings(), get, env.close)


def _open_cdb(table: str, path: str) -> IndexedTable:
    import cdblib

    try:
        reader: Any = cdblib.Reader.from_file_path(path)
    except OSError as exc:
        raise _missing(table, path, exc) from None

    def get(key: bytes) -> bytes | None:
        value: bytes | None = reader.get(key)
        return value

    return IndexedTable(table, TableSettings(), get, reader.close)


def _open_berkeley(table: str, path: str, kind: str) -> IndexedTable:
    try:
        from berkeleydb import db
    except ImportError:
        raise TableError(
            table,
            f"{kind}: tables need the Berkeley DB binding, which is not installed",
            hint="install it with `pip install 'filterd[hash]'` (it builds against libdb-dev), "
            "or use texthash: on the source file, or lmdb: (`postmap lmdb:FILE`)",
        ) from None
    if not os.path.exists(path):
        raise _missing(table, path, message=os.strerror(errno.ENOENT))
    handle: Any = db.DB()
    try:
        handle.open(path, dbtype=db.DB_HASH if kind == "hash" else db.DB_BTREE, flags=db.DB_RDONLY)
    except db.DBError as exc:
        handle.close()
        raise _missing(table, path, message=str(exc.args[-1] if exc.args else exc)) from None

    def get(key: bytes) -> bytes | None:
        value: bytes | None = handle.get(key)
        return value

    return IndexedTable(table, TableSettings(), get, handle.close)


def open_table(name: TableName, settings: TableSettings) -> Table:
    """Open ``lmdb:``, ``cdb:``, ``hash:`` or ``btree:`` ``name`` (the file ``name`` with the
    type's suffix, as postmap built it)."""
    table = str(name)
    if not name.name:
        raise TableError(table, "no file name", hint=f'write "{name.type}:/etc/postfix/file"')
    path = name.name + _SUFFIX[name.type]
    if name.type == "lmdb":
        opened = _open_lmdb(table, path)
    elif name.type == "cdb":
        opened = _open_cdb(table, path)
    else:
        opened = _open_berkeley(table, path, name.type)
    opened.settings = settings
    return opened
