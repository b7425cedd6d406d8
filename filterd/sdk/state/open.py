"""``open_store``: the store a ``StateSettings`` names, ready to use."""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from filterd.sdk.state.base import StateStore, StoreFailure
from filterd.sdk.state.redis import RedisStore
from filterd.sdk.state.settings import StateSettings
from filterd.sdk.state.sqlite import SqliteStore


async def open_store(
    settings: StateSettings, *, clock: Callable[[], float] = time.time
) -> StateStore:
    """Open the store (``Plugin.start``). The SQLite file is created if missing; a failure to
    open it raises StoreFailure (filterd does not start). A Redis server is not required to be
    up yet: its calls fail (and ``on_store_failure`` applies) until it is. ``clock`` is the
    SQLite store's time for expiry (Redis keeps its own)."""
    if settings.backend == "redis":
        return RedisStore(
            settings.url,
            prefix=settings.prefix,
            timeout=settings.timeout,
            concurrency=settings.concurrency,
        )
    store = SqliteStore(
        settings.path, timeout=settings.timeout, concurrency=settings.concurrency, clock=clock
    )
    try:
        await trio.to_thread.run_sync(store.open)
    except Exception as exc:
        raise StoreFailure(store.description, f"cannot open the database: {exc}") from exc
    return store
