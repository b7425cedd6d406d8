"""window.take's ``bucket_most``: with a bound on every bucket's count (rate(): one per request,
an excess given back), the previous bucket is read only when the bound could take the count
past the limit, and every answer (exceeded, and the count when exceeded) is the one the full
read gives. Real SQLite stores on a fake clock."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import trio
from filterd_ratelimit.window import give_back, take
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.sdk.state import StateSettings, StateStore, open_store

START = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


async def opened(path: Path, clock: Callable[[], float]) -> StateStore:
    return await open_store(StateSettings(path=path), clock=clock)


async def counted(
    store: StateStore, key: str, *, limit: int, window: int, now: float, bound: bool
) -> tuple[bool, float]:
    """As the rate() rule action counts: take one, give it back on an excess when the limit
    existed; (exceeded, count)."""
    usage = await take(
        store, key, 1, limit=limit, window=window, now=now, bucket_most=limit if bound else None
    )
    if usage.exceeded and usage.estimate - usage.amount > 0:
        await give_back(store, usage)
    return usage.exceeded, usage.estimate if usage.exceeded else 0.0


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=6),
    window=st.integers(min_value=2, max_value=20),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=8, allow_nan=False), st.sampled_from("ab")),
        min_size=1,
        max_size=60,
    ),
)
def test_the_bound_never_changes_an_answer(
    limit: int, window: int, steps: list[tuple[float, str]]
) -> None:
    async def run() -> None:
        clock = Clock()
        with tempfile.TemporaryDirectory() as directory:
            full = await opened(Path(directory) / "full.sqlite", clock)
            bounded = await opened(Path(directory) / "bounded.sqlite", clock)
            try:
                for number, (pause, who) in enumerate(steps):
                    clock.now += pause
                    key = f"rules:rate:sender={who}:R1+{limit}_{window}"
                    args = {"limit": limit, "window": window, "now": clock.now}
                    expected = await counted(full, key, **args, bound=False)
                    got = await counted(bounded, key, **args, bound=True)
                    assert got == expected, (number, clock.now - START, who)
            finally:
                await full.aclose()
                await bounded.aclose()

    trio.run(run)


async def test_a_count_far_from_the_limit_is_one_store_call(tmp_path: Path) -> None:
    clock = Clock()
    store = await opened(tmp_path / "rates.sqlite", clock)
    reads: list[str] = []
    real_get = store.get

    async def get(key: str) -> str | None:
        reads.append(key)
        return await real_get(key)

    store.get = get  # type: ignore[method-assign]
    try:
        now = START // 3600 * 3600 + 1800  # half way through the bucket of an hour
        for _ in range(3):
            usage = await take(store, "k", 1, limit=100, window=3600, now=now, bucket_most=100)
            assert not usage.exceeded
        assert reads == []  # 100 * 0.5 + 3 <= 100: the previous bucket cannot matter
        near = await take(store, "k", 1, limit=6, window=3600, now=now, bucket_most=6)
        assert not near.exceeded
        assert len(reads) == 1  # 6 * 0.5 + 4 > 6: read
        unbounded = await take(store, "k", 1, limit=100, window=3600, now=now)
        assert not unbounded.exceeded
        assert len(reads) == 2  # no bound: always read
    finally:
        await store.aclose()
