"""The store interface every backend implements, and what a failing store raises."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import trio

from filterd.errors import FilterdError
from filterd.sdk.state.sighting import Maturing, Sighting, Tally

T = TypeVar("T")


class StoreFailure(FilterdError):
    """A store call that could not be answered in time: server down, slow, a broken file.
    Callers never read it as "no record": they apply ``on_store_failure``."""

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"state store {store}: {reason}")
        self.store = store
        self.reason = reason


class StateStore(ABC):
    """Keys and values are text; every record has a time to live (seconds, more than zero).

    Each call is bounded by ``timeout`` (a call past it is abandoned and raises
    ``StoreFailure``), at most ``concurrency`` at once. This class runs a backend's blocking
    work (``_get``, ``_put``...) in worker threads (SQLite); a backend with I/O of its own on trio
    (Redis) overrides the async calls instead.
    """

    def __init__(self, description: str, *, timeout: float, concurrency: int) -> None:
        self.description = description
        self.timeout = timeout
        self._limiter = trio.CapacityLimiter(concurrency)

    async def _run(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread, within the timeout; its errors as StoreFailure."""
        with trio.move_on_after(self.timeout) as scope:
            try:
                return await trio.to_thread.run_sync(
                    call, limiter=self._limiter, abandon_on_cancel=True
                )
            except StoreFailure:
                raise
            except Exception as exc:  # the backend's own errors: connection, file, protocol
                raise StoreFailure(self.description, f"{what}: {exc}") from exc
        assert scope.cancelled_caught
        raise StoreFailure(self.description, f"{what}: no answer within {self.timeout:g}s")

    async def get(self, key: str) -> str | None:
        """The value of a live record, or None."""
        return await self._run("get", partial(self._get, key))

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The values of several records (None for each one missing), in one call: one worker
        thread and, on Redis, one round trip (``MGET``)."""
        return await self._run("get", partial(self._get_many, list(keys)))

    async def set(self, key: str, value: str, ttl: float) -> None:
        """Write a record (replacing any) that lives ``ttl`` seconds from now."""
        await self._run("set", partial(self._set, key, value, _checked(ttl)))

    async def delete(self, key: str) -> None:
        await self._run("delete", partial(self._delete, key))

    async def compare_and_set(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        """Write ``value`` (living ``ttl`` seconds) only if the record still holds
        ``expected`` (None: only if there is no live record). False when another writer came
        first: read again and retry."""
        call = partial(self._compare_and_set, key, expected, value, _checked(ttl))
        return await self._run("compare-and-set", call)

    async def increment(self, key: str, amount: int, ttl: float) -> int:
        """Add ``amount`` to an integer record and return the new value. A missing (or
        expired) record starts at 0 and lives ``ttl`` seconds; an existing one keeps its
        expiry (a fixed window)."""
        return await self._run("increment", partial(self._increment, key, amount, _checked(ttl)))

    async def record_sighting(
        self, key: str, now: int, maturing: Maturing, tally: Tally | None = None
    ) -> Sighting:
        """Record one sighting of ``key`` at ``now`` (unix seconds), counted in ``tally`` when
        it matures the record (``filterd.sdk.state.sighting``), as one atomic step: one
        transaction on SQLite, one round trip on Redis. Greylisting's whole decision."""
        call = partial(self._record_sighting, key, now, maturing, tally)
        return await self._run("sighting", call)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._close)

    # ------------------------------------------------------------ backends (blocking)
    @abstractmethod
    def _get(self, key: str) -> str | None: ...

    def _get_many(self, keys: list[str]) -> list[str | None]:
        return [self._get(key) for key in keys]

    @abstractmethod
    def _set(self, key: str, value: str, ttl: float) -> None: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _compare_and_set(self, key: str, expected: str | None, value: str, ttl: float) -> bool: ...

    @abstractmethod
    def _increment(self, key: str, amount: int, ttl: float) -> int: ...

    @abstractmethod
    def _record_sighting(
        self, key: str, now: int, maturing: Maturing, tally: Tally | None
    ) -> Sighting: ...

    @abstractmethod
    def _close(self) -> None: ...


def _checked(ttl: float) -> float:
    if not ttl > 0:
        raise ValueError(f"a record's time to live must be more than zero, got {ttl!r}")
    return ttl
