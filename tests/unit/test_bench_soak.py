"""The verdicts and the duration of bench/soak.py (bench/filterd_bench/soak_report.py): pure
helpers only, never a measurement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

from filterd_bench.soak_report import (  # noqa: E402
    HEADER,
    Sample,
    Totals,
    parse_duration,
    table_row,
    verdicts,
    warmup_seconds,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("120", 120.0), ("120s", 120.0), ("30m", 1800.0), (" 1h ", 3600.0), ("1.5m", 90.0)],
)
def test_duration_takes_seconds_minutes_and_hours(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "30x", "-5", "30m5s"])
def test_a_duration_it_cannot_read_names_the_forms_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match=r"seconds \(120\) or minutes \(30m\)"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["10", "25h"])
def test_a_duration_out_of_bounds_names_the_bounds(text: str) -> None:
    with pytest.raises(ValueError, match="choose between 70 s and 24 h"):
        parse_duration(text)


def test_the_warm_up_is_a_tenth_of_the_run_and_at_least_a_minute() -> None:
    assert warmup_seconds(120.0) == 60.0
    assert warmup_seconds(1800.0) == 180.0


def sample(t: float, rss: int, fds: int) -> Sample:
    return Sample(t, rss, 3, fds, 0, 0, 0, 0, 0.0, 1.0, 2.0, 0.5)


def run(rss_after: int, fds_after: int) -> list[Sample]:
    """Warm-up samples at 10..60 s (the reference is the one at 60 s), then two after it."""
    warm = [sample(t, 900 + t, 40) for t in (10.0, 20.0, 30.0, 40.0, 50.0)]
    return [
        *warm,
        sample(60.0, 1000, 50),
        sample(70.0, 1000, 50),
        sample(80.0, rss_after, fds_after),
    ]


def by_name(samples: list[Sample], totals: Totals) -> dict[str, bool]:
    return {verdict.name: verdict.ok for verdict in verdicts(samples, totals, 60.0)}


CLEAN = Totals(sent=100, accepted=100, delivered=100)


def test_growth_up_to_ten_percent_after_the_warm_up_is_flat() -> None:
    found = by_name(run(rss_after=1100, fds_after=55), CLEAN)
    assert found == {
        "rss_kib flat": True,
        "fds flat": True,
        "no errors": True,
        "nothing lost": True,
    }


def test_growth_past_ten_percent_after_the_warm_up_fails() -> None:
    found = by_name(run(rss_after=1101, fds_after=56), CLEAN)
    assert found["rss_kib flat"] is False
    assert found["fds flat"] is False


def test_growth_during_the_warm_up_does_not_count() -> None:
    samples = [sample(10.0, 100, 5), sample(60.0, 1000, 50), sample(70.0, 1050, 50)]
    assert by_name(samples, CLEAN)["rss_kib flat"] is True


def test_no_sample_after_the_warm_up_is_not_flat() -> None:
    verdict = verdicts([sample(10.0, 100, 5)], CLEAN, 60.0)[0]
    assert not verdict.ok
    assert "no samples on both sides" in verdict.detail


def test_an_error_fails_and_is_quoted() -> None:
    totals = Totals(100, 100, 100, errors=1, error_texts=["smtp-source: 451 4.3.0 try later"])
    verdict = next(v for v in verdicts(run(1000, 50), totals, 60.0) if v.name == "no errors")
    assert not verdict.ok
    assert "451 4.3.0" in verdict.line()


@pytest.mark.parametrize(
    ("delivered", "words"), [(99, "1 lost"), (101, "1 delivered but not acknowledged")]
)
def test_a_sink_count_other_than_the_accepted_count_fails(delivered: int, words: str) -> None:
    totals = Totals(sent=100, accepted=100, delivered=delivered)
    verdict = next(v for v in verdicts(run(1000, 50), totals, 60.0) if v.name == "nothing lost")
    assert not verdict.ok
    assert words in verdict.detail


def test_nothing_accepted_is_not_a_pass() -> None:
    assert by_name(run(1000, 50), Totals())["nothing lost"] is False


def test_a_table_row_lines_up_with_the_header() -> None:
    row = table_row(sample(60.0, 1024 * 50, 42))
    assert len(row) == len(HEADER)
    assert row.split()[:3] == ["60", "50.0", "42"]
