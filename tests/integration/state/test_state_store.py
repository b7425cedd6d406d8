"""filterd.sdk.state against real backends: an SQLite file and a private redis-server.

The same behaviour from both (get/set/TTL, compare-and-set, increment, atomic under concurrent
callers); a store that is down or does not answer raises StoreFailure within its timeout; the
SQLite store keeps its records across a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from filterd.sdk.state import (
    Maturing,
    Sighting,
    StateSettings,
    StateStore,
    StoreFailure,
    Tally,
    open_store,
)
from filterd.sdk.state.sighting import next_sighting
from tests.support.redis import RedisInstance, redis_installed, running_redis

needs_redis = pytest.mark.skipif(not redis_installed(), reason="redis-server is not installed")


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisInstance]:
    if not redis_installed():
        pytest.skip("redis-server is not installed")
    with running_redis() as server:
        yield server


@pytest.fixture(params=["sqlite", "redis", "redis-unix"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    kind = request.param
    if kind == "sqlite":
        settings = StateSettings(backend="sqlite", path=tmp_path / "state.sqlite")
    else:
        server: RedisInstance = request.getfixturevalue("redis_server")
        url = server.url if kind == "redis" else server.unix_url
        prefix = f"test:{request.node.name}:"
        settings = StateSettings(backend="redis", url=url, prefix=prefix)
    opened = await open_store(settings)
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_get_set_delete(store: StateStore) -> None:
    assert await store.get("a") is None
    await store.set("a", "1,2", 3600)
    assert await store.get("a") == "1,2"
    await store.set("a", "3,4", 3600)
    assert await store.get("a") == "3,4"
    await store.delete("a")
    assert await store.get("a") is None


async def test_get_many(store: StateStore) -> None:
    await store.set("m1", "one", 3600)
    await store.set("m3", "three", 3600)
    assert await store.get_many(["m1", "m2", "m3", "m1"]) == ["one", None, "three", "one"]
    assert await store.get_many([]) == []


async def test_compare_and_set(store: StateStore) -> None:
    assert await store.compare_and_set("k", None, "one", 3600)
    assert not await store.compare_and_set("k", None, "two", 3600)  # exists now
    assert not await store.compare_and_set("k", "zero", "two", 3600)  # not what it holds
    assert await store.compare_and_set("k", "one", "two", 3600)
    assert await store.get("k") == "two"
    assert not await store.compare_and_set("missing", "x", "y", 3600)
    assert await store.get("missing") is None


async def test_increment_starts_at_zero_and_adds(store: StateStore) -> None:
    assert await store.increment("n", 1, 3600) == 1
    assert await store.increment("n", 5, 3600) == 6
    assert await store.get("n") == "6"


async def test_concurrent_updates_lose_nothing(store: StateStore) -> None:
    async def add_one_by_cas() -> None:
        while True:
            current = await store.get("cas")
            value = str(int(current or "0") + 1)
            if await store.compare_and_set("cas", current, value, 3600):
                return

    async def add_one_by_increment() -> None:
        await store.increment("inc", 1, 3600)

    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(add_one_by_cas)
            nursery.start_soon(add_one_by_increment)
    assert await store.get("cas") == "40"
    assert await store.get("inc") == "40"


async def test_sqlite_records_expire_on_the_store_clock(tmp_path: Path) -> None:
    clock = Clock()
    store = await open_store(StateSettings(path=tmp_path / "s.sqlite"), clock=clock)
    await store.set("a", "x", 60)
    assert await store.increment("n", 2, 60) == 2
    clock.now += 59
    assert await store.get("a") == "x"
    assert await store.increment("n", 1, 60) == 3  # a fixed window: expiry unchanged
    clock.now += 1
    assert await store.get("a") is None
    assert await store.get("n") is None
    assert await store.compare_and_set("a", None, "y", 60)  # an expired record is no record
    assert await store.increment("n", 1, 60) == 1
    await store.aclose()


async def test_sqlite_store_survives_a_restart(tmp_path: Path) -> None:
    settings = StateSettings(path=tmp_path / "s.sqlite")
    first = await open_store(settings)
    await first.set("triplet", "100,100", 3600)
    await first.aclose()
    second = await open_store(settings)
    assert await second.get("triplet") == "100,100"
    mode = await trio.to_thread.run_sync(_journal_mode, tmp_path / "s.sqlite")
    assert mode == "wal"
    await second.aclose()


def _journal_mode(path: Path) -> str:
    import sqlite3

    with sqlite3.connect(path) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


async def test_sqlite_file_that_cannot_be_opened_is_a_store_failure(tmp_path: Path) -> None:
    with pytest.raises(StoreFailure, match="cannot open the database"):
        await open_store(StateSettings(path=tmp_path / "missing-dir" / "s.sqlite"))


@needs_redis
async def test_redis_ttl_is_set_on_the_server(redis_server: RedisInstance) -> None:
    store = await open_store(StateSettings(backend="redis", url=redis_server.url, prefix="ttl:"))
    await store.set("a", "x", 100)
    await store.increment("n", 1, 50)
    await store.increment("n", 1, 5000)  # keeps the first expiry
    assert await store.compare_and_set("c", None, "v", 70)
    ttls = [int(redis_server.command("PTTL", f"ttl:{k}")[1:]) for k in ("a", "n", "c")]
    assert 0 < ttls[0] <= 100_000
    assert 0 < ttls[1] <= 50_000
    assert 0 < ttls[2] <= 70_000
    await store.aclose()


async def test_redis_down_is_a_store_failure_within_the_timeout() -> None:
    with trio.socket.socket() as probe:  # a port nothing listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = StateSettings(backend="redis", url=f"redis://127.0.0.1:{port}/0", timeout=1)
    store = await open_store(settings)
    with trio.fail_after(10):  # the bound is the store's timeout; this only guards the test
        with pytest.raises(StoreFailure, match=r"state store redis:redis://127\.0\.0\.1"):
            await store.get("a")
    await store.aclose()


@needs_redis
async def test_redis_that_does_not_answer_is_a_store_failure(
    redis_server: RedisInstance,
) -> None:
    settings = StateSettings(backend="redis", url=redis_server.url, prefix="slow:", timeout=0.2)
    store = await open_store(settings)
    await store.set("a", "x", 60)
    redis_server.pause(3)
    try:
        with trio.fail_after(10):
            with pytest.raises(StoreFailure, match=r"no answer within 0\.2s|Timeout"):
                await store.get("a")
    finally:
        redis_server.command("CLIENT", "UNPAUSE")
    await store.aclose()


def test_a_redis_url_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match='is not a Redis URL: write "redis://host:port/db"'):
        StateSettings(backend="redis", url="127.0.0.1:6379")


async def test_sqlite_locked_by_another_process_waits_in_a_worker_not_in_the_loop(
    tmp_path: Path,
) -> None:
    """Calls run in the loop's thread on a connection that never waits: a database another
    process has locked sends the write to a worker thread, bounded by the store's timeout
    (a call that waited in the loop's thread would end with "database is locked" instead);
    reads go on meanwhile (WAL)."""
    import sqlite3

    path = tmp_path / "s.sqlite"
    store = await open_store(StateSettings(path=path, timeout=0.3))
    await store.set("a", "old", 3600)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        assert await store.get("a") == "old"
        with pytest.raises(StoreFailure, match=r"set: no answer within 0\.3s"):
            await store.set("a", "new", 3600)
        with pytest.raises(StoreFailure, match=r"increment: no answer within 0\.3s"):
            await store.increment("n", 1, 3600)
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.set("a", "new", 3600)
    assert await store.increment("n", 1, 3600) == 1
    assert await store.get("a") == "new"
    await store.aclose()


async def test_sqlite_purges_expired_rows_in_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from filterd.sdk.state import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "PURGE_EVERY", 4)
    clock = Clock()
    path = tmp_path / "s.sqlite"
    store = await open_store(StateSettings(path=path), clock=clock)
    for key in ("a", "b", "c"):
        await store.set(key, "x", 10)
    clock.now += 20
    await store.set("d", "x", 10)  # the 4th write: the expired a, b and c are deleted

    def keys() -> list[str]:
        with sqlite3.connect(path) as db:
            return [str(row[0]) for row in db.execute("SELECT key FROM state ORDER BY key")]

    assert await trio.to_thread.run_sync(keys) == ["d"]
    await store.aclose()


async def test_sqlite_calls_wait_for_the_stores_own_worker_instead_of_joining_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the store's maintenance holds the write lock in a worker thread, a write from the
    loop's thread waits for it and then runs in the loop's thread: it does not find the
    database locked and follow into a worker thread (where, on SQLite's busy handler, every
    later write queued behind the others: 55 ms p99 at 10 policy connections)."""
    import threading

    from filterd.sdk.state import base
    from filterd.sdk.state import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 1)  # every write: maintenance after
    store = await open_store(StateSettings(path=tmp_path / "s.sqlite", timeout=10.0))
    assert isinstance(store, sqlite_store.SqliteStore)
    holding, release = threading.Event(), threading.Event()
    maintain = sqlite_store.SqliteStore._maintain

    def held_maintenance(self: sqlite_store.SqliteStore) -> None:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            holding.set()
            release.wait(10.0)
            db.execute("COMMIT")
        maintain(self)

    in_workers: list[str] = []
    worker_run = base.StateStore._run

    async def counted(self: base.StateStore, what: str, call: object) -> object:
        in_workers.append(what)
        return await worker_run(self, what, call)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite_store.SqliteStore, "_maintain", held_maintenance)
    monkeypatch.setattr(base.StateStore, "_run", counted)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.set, "a", "1", 3600)  # then its maintenance holds the lock
            assert await trio.to_thread.run_sync(holding.wait, 10.0)
            nursery.start_soon(store.set, "b", "2", 3600)
            await trio.sleep(0.2)  # b is waiting (or, without the wait, in a worker thread)
            release.set()
    assert await store.get("a") == "1"
    assert await store.get("b") == "2"
    assert "set" not in in_workers, in_workers
    await store.aclose()


# --------------------------------------------------------------------------------- sightings
T0 = 1_700_000_000
DAY = 86_400
MATURING = Maturing(wait=300, restart_after=2 * DAY, keep=35 * DAY)


async def sight(store: StateStore, key: str, now: int, tally: Tally | None) -> Sighting:
    """One sighting, checked against the pure step (next_sighting) over the records as they
    stood: the backend's answer and what it wrote are the step's (the Lua script and the
    SQLite transaction hold to one definition)."""
    before = await store.get(key), await store.get(tally.key) if tally else None
    expected, writes = next_sighting(*before, now, MATURING, tally)
    seen = await store.record_sighting(key, now, MATURING, tally)
    assert seen == expected
    if writes.record is not None:
        assert await store.get(key) == writes.record[0]
    if tally is not None and writes.tally is not None:
        assert await store.get(tally.key) == writes.tally[0]
    return seen


async def test_a_sighting_matures_counts_and_trusts(store: StateStore) -> None:
    tally = Tally("src", trusted_at=2, every=3600, keep=35 * DAY)
    assert await sight(store, "k1", T0, tally) == Sighting(T0)
    assert await sight(store, "k1", T0 + 10, tally) == Sighting(T0)
    assert await sight(store, "k1", T0 + 300, tally) == Sighting(T0, counted=1)
    assert await sight(store, "k1", T0 + 400, tally) == Sighting(T0, matured_before=True)
    await sight(store, "k2", T0 + 500, tally)
    assert await sight(store, "k2", T0 + 800, tally) == Sighting(T0 + 500)  # within the hour
    await sight(store, "k3", T0 + 4000, tally)
    assert await sight(store, "k3", T0 + 4300, tally) == Sighting(T0 + 4000, counted=2)
    assert await sight(store, "k4", T0 + 5000, tally) == Sighting(T0 + 5000, trusted=True)
    assert await store.get("k4") is None  # a trusted source's sightings are not recorded
    assert await store.get("src") == f"2,{T0 + 4300}"
    await sight(store, "k4", T0 + 8000, tally)  # trusted: counted again after the hour
    assert await store.get("src") == f"3,{T0 + 8000}"


async def test_a_sighting_starts_over_and_mends_what_it_finds(store: StateStore) -> None:
    await sight(store, "late", T0, None)
    assert await sight(store, "late", T0 + 2 * DAY + 1, None) == Sighting(T0 + 2 * DAY + 1)
    await store.set("damaged", "not,numbers", 60)
    await store.set("src", "x", 60)
    tally = Tally("src", trusted_at=5, every=3600, keep=DAY)
    assert await sight(store, "damaged", T0, tally) == Sighting(T0)
    await store.set("future", f"{T0 + 1000},{T0 + 1000}", 60)
    assert await sight(store, "future", T0, None) == Sighting(T0)
    await store.set("old", f" {T0 - 400}, {T0 - 400},extra", 60)  # spaces, a third field
    assert await sight(store, "old", T0, tally) == Sighting(T0 - 400, counted=1)
    # digits Python's int() would take and the Lua script would not: damaged on both
    await store.set("underscored", f"{T0 - 400:_},{T0 - 400:_}", 60)
    assert await sight(store, "underscored", T0, None) == Sighting(T0)
    arabic = str(T0 - 400).translate(
        str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
    )
    await store.set("arabic", f"{arabic},{arabic}", 60)
    assert await sight(store, "arabic", T0, None) == Sighting(T0)


async def test_concurrent_sightings_are_atomic(store: StateStore) -> None:
    tally = Tally("src", trusted_at=99, every=3600, keep=DAY)
    await store.record_sighting("k", T0, MATURING, tally)
    seen: list[Sighting] = []

    async def one() -> None:
        seen.append(await store.record_sighting("k", T0 + 300, MATURING, tally))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert sorted(s.matured_before for s in seen) == [False] + [True] * 19
    assert [s.counted for s in seen if s.counted is not None] == [1]


@needs_redis
async def test_a_redis_sighting_is_one_round_trip(redis_server: RedisInstance) -> None:
    store = await open_store(StateSettings(backend="redis", url=redis_server.url, prefix="rt:"))
    tally = Tally("src", trusted_at=1, every=3600, keep=DAY)
    await store.record_sighting("warm-up", T0, MATURING, tally)  # loads the script once
    for now in (T0, T0 + 300, T0 + 400):  # new, maturing (counted: trusted), trusted
        with redis_server.monitor() as sent:
            await store.record_sighting("k", now, MATURING, tally)
        assert len(sent) == 1, sent
        assert '"evalsha"' in sent[0].lower(), sent
    await store.aclose()
