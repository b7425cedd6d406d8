"""The latency arithmetic of bench/run.py (bench/filterd_bench/latency.py): pure helpers only,
never a measurement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

from filterd_bench.latency import Distribution, latency_figures, percentile  # noqa: E402


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([7.0], 1) == 7.0
    assert percentile([1.0, 2.0], 99) == 2.0


@pytest.mark.parametrize("q", [0, -1, 100.5])
def test_percentile_refuses_a_rank_outside_0_100(q: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_distribution_is_in_milliseconds() -> None:
    distribution = Distribution.of([0.001 * n for n in range(1, 101)])
    assert distribution.count == 100
    assert distribution.p50 == pytest.approx(50.0)
    assert distribution.p90 == pytest.approx(90.0)
    assert distribution.p99 == pytest.approx(99.0)
    assert distribution.max == pytest.approx(100.0)


def test_added_latency_is_the_client_reply_less_the_sink_reply() -> None:
    client = {"a": (10.0, 10.004), "b": (20.0, 20.010), "c": (30.0, 30.001)}
    sink = {"a": (10.001, 10.002), "b": (20.002, 20.003), "x": (1.0, 1.0)}
    figures = latency_figures(client, sink)
    assert figures.unmatched == 1  # "c": the sink never stamped it
    assert figures.negative == 0
    assert figures.added is not None
    assert figures.turnaround is not None
    assert figures.added.count == 2
    assert figures.added.p50 == pytest.approx(2.0)  # a: 10.004 - 10.002
    assert figures.added.max == pytest.approx(7.0)  # b: 20.010 - 20.003
    assert figures.turnaround.count == 3
    assert figures.turnaround.max == pytest.approx(10.0)


def test_a_reply_before_the_next_hops_is_counted_as_negative() -> None:
    figures = latency_figures({"a": (1.0, 1.5)}, {"a": (1.0, 1.6)})
    assert figures.negative == 1


def test_no_stamps_no_distributions() -> None:
    figures = latency_figures({}, {})
    assert figures.added is None
    assert figures.turnaround is None
    assert figures.unmatched == 0
