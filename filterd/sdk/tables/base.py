"""What every lookup table is: an exact ``postmap -q``-style query, asynchronous, that answers
a value, "not found" (``None``), or raises :class:`TableFailure` -- never "not found" for a
failure.

Search orders (access(5), virtual(5), canonical(5)) are built on top of this one exact query
in :mod:`filterd.sdk.tables.search`; tables themselves know nothing of addresses.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from filterd.errors import FilterdError

__all__ = ["Table", "TableError", "TableFailure", "TableSettings"]


class TableError(FilterdError):
    """A table that cannot be opened: an unknown type, a missing file, a malformed line or
    parameter. ``str()`` names the table (``type:name``), the file and line when known, and
    the fix; raised when the table is opened (start-up, reload, ``filterd query``)."""

    def __init__(
        self, table: str, message: str, *, file: str = "", line: int | None = None, hint: str = ""
    ) -> None:
        where = f"{file}:{line}: " if file and line is not None else f"{file}: " if file else ""
        fix = f" (fix: {hint})" if hint else ""
        super().__init__(f"table {table}: {where}{message}{fix}")
        self.table = table
        self.file = file
        self.line = line
        self.message = message
        self.hint = hint


class TableFailure(FilterdError):
    """A lookup that could not be answered: server down, bad credentials, timeout, a result
    over ``expansion_limit``. Postfix's DICT_ERR_RETRY: callers answer a temporary error
    (``451 4.3.0 <addr>: Temporary lookup failure``), never "not found"."""

    def __init__(self, table: str, reason: str) -> None:
        super().__init__(f"table {table}: query error: {reason}")
        self.table = table
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TableSettings:
    """How lookups of one opened table behave; the defaults suit a plugin.

    ``timeout``: seconds one lookup may take before it is a :class:`TableFailure`.
    ``max_concurrency``: lookups of this table in flight at once (for database tables also the
    connection pool's size); more wait their turn.
    ``fold_case``: fold keys of fixed-string tables to lower case, as Postfix does by default
    (``postmap -f`` turns it off); regexp:/pcre:/cidr: never fold.
    ``cache_ttl``, ``negative_cache_ttl``: seconds an answer, or a "not found", is kept by
    :mod:`filterd.sdk.tables.cache` (0: not kept; both 0, the default: no cache; failures are
    never kept). ``cache_size``: the most keys kept (the least recently used go first).
    """

    timeout: float = 10.0
    max_concurrency: int = 8
    fold_case: bool = True
    cache_ttl: float = 0.0
    negative_cache_ttl: float = 0.0
    cache_size: int = 10_000


class Table(abc.ABC):
    """One opened table. ``name`` is how it was written (``mysql:/etc/postfix/m.cf``)."""

    #: False for regexp:, pcre: and cidr: (patterns decide; no parent-domain walk or
    #: user@/domain splitting in the search orders, as access(5) says).
    fixed_string: bool = True

    def __init__(self, name: str, settings: TableSettings) -> None:
        self.name = name
        self.settings = settings

    @abc.abstractmethod
    async def lookup(self, key: str) -> str | None:
        """The value for exactly ``key`` (what ``postmap -q key TABLE`` prints), or ``None``.

        Raises :class:`TableFailure` when the table cannot answer. Fixed-string tables fold
        the key to lower case when ``settings.fold_case`` is set.
        """

    async def aclose(self) -> None:  # noqa: B027 - most tables hold nothing to close
        """Close connections and files; the table answers no lookup afterwards."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
