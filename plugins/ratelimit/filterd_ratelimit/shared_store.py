"""One state store per file (or Redis server and prefix) in a filterd process, shared by the
rule actions ``rate()``, ``size()``, ``rcpt()`` (and their ``5321`` kin) that name it: one
SQLite connection pool and one loop-thread connection instead of one per action.

Opened with the SDK's :func:`filterd.sdk.state.open_store` by the first action that needs it,
closed when the last one stops. Stores that differ in anything the store itself uses (its
timeout, concurrency, clock) are not shared. Kept per trio run (``RunVar``): a store never
outlives the run that opened it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import trio

from filterd.sdk.state import StateSettings, StateStore, open_store

__all__ = ["acquire_store", "release_store"]


@dataclass(slots=True)
class _Shared:
    store: StateStore
    users: int = 1


@dataclass(slots=True)
class _Registry:
    lock: trio.Lock = field(default_factory=trio.Lock)
    stores: dict[Hashable, _Shared] = field(default_factory=dict)


_REGISTRY: trio.lowlevel.RunVar[_Registry] = trio.lowlevel.RunVar("filterd_ratelimit_stores")


def _registry() -> _Registry:
    try:
        return _REGISTRY.get()
    except LookupError:
        registry = _Registry()
        _REGISTRY.set(registry)
        return registry


def store_key(settings: StateSettings, clock: Callable[[], float]) -> Hashable:
    """What makes two settings the same store: the file (absolute) or the server and prefix,
    and what the store itself uses."""
    where: tuple[str, ...]
    if settings.backend == "redis":
        where = ("redis", settings.url, settings.prefix)
    else:
        where = ("sqlite", os.path.abspath(settings.path))
    return (*where, settings.timeout, settings.concurrency, clock)


async def acquire_store(settings: StateSettings, clock: Callable[[], float]) -> StateStore:
    """The process's store for ``settings``, opened if no action holds it yet (raises
    ``StoreFailure`` as ``open_store`` does). Give it back with :func:`release_store`."""
    registry = _registry()
    key = store_key(settings, clock)
    async with registry.lock:  # two actions starting at once open one store
        shared = registry.stores.get(key)
        if shared is not None:
            shared.users += 1
            return shared.store
        store = await open_store(settings, clock=clock)
        registry.stores[key] = _Shared(store)
        return store


async def release_store(store: StateStore) -> None:
    """One user less; the last one closes the store."""
    registry = _registry()
    for key, shared in list(registry.stores.items()):
        if shared.store is store:
            shared.users -= 1
            if shared.users > 0:
                return
            del registry.stores[key]
            break
    await store.aclose()
