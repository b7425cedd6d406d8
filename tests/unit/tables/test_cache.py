"""The lookup cache: positive and negative TTLs on trio's clock (a MockClock here), the size
bound, failures never kept, and open_table() wrapping a table only when a TTL is set."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from filterd.sdk.tables import Table, TableFailure, TableSettings, open_table
from filterd.sdk.tables.cache import CachedTable


class _Counting(Table):
    def __init__(self, settings: TableSettings, answers: dict[str, str | None]) -> None:
        super().__init__("test:counting", settings)
        self.answers = answers
        self.asked: list[str] = []
        self.fail = False

    async def lookup(self, key: str) -> str | None:
        self.asked.append(key)
        if self.fail:
            raise TableFailure(self.name, "down")
        return self.answers.get(key)


async def test_answers_and_not_found_are_kept_for_their_ttls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = _Counting(TableSettings(cache_ttl=60, negative_cache_ttl=5), {"a": "A"})
    table = CachedTable(inner)
    assert await table.lookup("a") == "A"
    assert await table.lookup("b") is None
    assert await table.lookup("a") == "A"
    assert await table.lookup("b") is None
    assert inner.asked == ["a", "b"]
    await trio.sleep(6)  # past the negative TTL only
    inner.answers["b"] = "B"
    inner.answers["a"] = "changed"
    assert await table.lookup("b") == "B"
    assert await table.lookup("a") == "A"
    await trio.sleep(60)
    assert await table.lookup("a") == "changed"
    assert (table.hits, table.misses) == (3, 4)


async def test_failures_are_never_kept(autojump_clock: trio.testing.MockClock) -> None:
    inner = _Counting(TableSettings(cache_ttl=60, negative_cache_ttl=60), {"a": "A"})
    table = CachedTable(inner)
    inner.fail = True
    with pytest.raises(TableFailure):
        await table.lookup("a")
    inner.fail = False
    assert await table.lookup("a") == "A"
    assert inner.asked == ["a", "a"]


async def test_the_least_recently_used_keys_go_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = _Counting(TableSettings(cache_ttl=60, cache_size=2), {"a": "A", "b": "B"})
    table = CachedTable(inner)
    await table.lookup("a")
    await table.lookup("b")
    await table.lookup("a")  # b is now the least recently used
    await table.lookup("c")  # not found: negative TTL 0, not kept
    assert len(table) == 2
    await table.lookup("b")
    assert inner.asked == ["a", "b", "c"]
    inner.answers["c"] = "C"
    await table.lookup("c")  # kept: pushes out a
    await table.lookup("a")
    assert inner.asked == ["a", "b", "c", "c", "a"]


def test_open_table_wraps_only_with_a_ttl(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (k TEXT, v TEXT)")
    conn.close()
    cf = tmp_path / "t.cf"
    cf.write_text(f"dbpath = {db}\nquery = SELECT v FROM t WHERE k='%s'\n")
    assert not isinstance(open_table(f"sqlite:{cf}"), CachedTable)
    cached = open_table(f"sqlite:{cf}", TableSettings(negative_cache_ttl=1))
    assert isinstance(cached, CachedTable)
    assert cached.name == f"sqlite:{cf}"
