"""A lookup cache for any table: answers kept ``settings.cache_ttl`` seconds, "not found" kept
``settings.negative_cache_ttl`` seconds, at most ``settings.cache_size`` keys (the least
recently used dropped first). A failure (:class:`TableFailure`) is never kept: the next
lookup asks the table again.

:func:`filterd.sdk.tables.open_table` wraps a table in one when either TTL is set. The cache
lives in the opened table: a reload opens new tables, so a reload starts with an empty cache;
nothing else empties it before its entries expire. Time is trio's clock
(:func:`trio.current_time`).
"""

from __future__ import annotations

from collections import OrderedDict

import trio

from filterd.sdk.tables.base import Table

__all__ = ["CachedTable"]


class CachedTable(Table):
    """``inner`` behind a cache; ``name``, ``settings`` and ``fixed_string`` are the inner
    table's. :attr:`hits` and :attr:`misses` count lookups answered from the cache or not."""

    def __init__(self, inner: Table) -> None:
        super().__init__(inner.name, inner.settings)
        self.inner = inner
        self.fixed_string = inner.fixed_string
        self._entries: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def lookup(self, key: str) -> str | None:
        now = trio.current_time()
        entry = self._entries.get(key)
        if entry is not None:
            expires, value = entry
            if now < expires:
                self._entries.move_to_end(key)
                self.hits += 1
                return value
            del self._entries[key]
        self.misses += 1
        value = await self.inner.lookup(key)  # a TableFailure passes through, not kept
        ttl = self.settings.cache_ttl if value is not None else self.settings.negative_cache_ttl
        if ttl > 0 and self.settings.cache_size > 0:
            self._entries[key] = (trio.current_time() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.settings.cache_size:
                self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        self._entries.clear()
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"<CachedTable {self.inner!r}>"
