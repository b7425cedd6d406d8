"""bench/soak.py's arithmetic and report (pure: no I/O, unit-tested in
tests/unit/test_bench_soak.py): the duration it is given, one sample every 10 s, the printed
table and the verdicts.

Verdicts (issue 18):

- **RSS flat** and **descriptors flat**: the largest value after the warm-up is within
  ``FLAT_TOLERANCE`` (10 %) of the value at the end of the warm-up; the warm-up is the first
  10 % of the run, at least ``MIN_WARMUP`` seconds (the sample taken last at or before that
  time is the reference).
- **no errors**: no load batch or probe message got anything but 250 (or timed out), and filterd
  did not exit.
- **nothing lost**: the messages the sink received equal the messages filterd answered 250 to
  (fewer is a lost message; more is a message the client gave up on after filterd relayed it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

FLAT_TOLERANCE = 0.10
WARMUP_SHARE = 0.10
MIN_WARMUP = 60.0  # seconds
MIN_DURATION = 70.0  # seconds: at least one sample after the shortest warm-up
MAX_DURATION = 24 * 3600.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smh]?)")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from ``"120"``, ``"120s"``, ``"30m"`` or ``"1h"``; ``ValueError`` with the fix
    otherwise (also outside MIN_DURATION..MAX_DURATION)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"DURATION {text!r}: write seconds (120) or minutes (30m) or hours (1h)")
    seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if not MIN_DURATION <= seconds <= MAX_DURATION:
        raise ValueError(
            f"DURATION {text!r}: choose between {MIN_DURATION:.0f} s and "
            f"{MAX_DURATION / 3600:.0f} h (the warm-up alone is {MIN_WARMUP:.0f} s)"
        )
    return seconds


def warmup_seconds(duration: float) -> float:
    return max(MIN_WARMUP, WARMUP_SHARE * duration)


@dataclass
class Sample:
    """One reading, ``t`` seconds after the soak's load started."""

    t: float
    rss_kib: int  # VmRSS summed over filterd's processes
    processes: int
    fds: int  # open descriptors summed over filterd's processes (/proc/PID/fd)
    sent: int  # messages handed to the load generator and the probe so far
    accepted: int  # ... answered 250 by filterd
    delivered: int  # ... received by the sink since the soak started
    errors: int
    load_rate: float  # messages/s the load generator achieved in this window
    probe_p50_ms: float | None  # added latency of this window's probe messages
    probe_p99_ms: float | None
    loadavg: float  # the machine's 1-minute load average


@dataclass
class Verdict:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


@dataclass
class Totals:
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    errors: int = 0
    error_texts: list[str] = field(default_factory=list)


def flat_verdict(name: str, unit: str, samples: Sequence[Sample], warmup: float) -> Verdict:
    """``name`` is an attribute of ``Sample`` (rss_kib, fds)."""
    before = [sample for sample in samples if sample.t <= warmup]
    after = [sample for sample in samples if sample.t > warmup]
    if not before or not after:
        return Verdict(name, False, f"no samples on both sides of the {warmup:.0f} s warm-up")
    reference = float(getattr(before[-1], name))
    peak = max(float(getattr(sample, name)) for sample in after)
    limit = reference * (1 + FLAT_TOLERANCE)
    growth = (peak - reference) / reference * 100 if reference else float("inf")
    return Verdict(
        f"{name} flat",
        peak <= limit,
        f"{reference:.0f} {unit} at the end of the warm-up ({before[-1].t:.0f} s), "
        f"max after it {peak:.0f} {unit} ({growth:+.1f} %, limit +{FLAT_TOLERANCE * 100:.0f} %)",
    )


def verdicts(samples: Sequence[Sample], totals: Totals, warmup: float) -> list[Verdict]:
    errors = Verdict(
        "no errors",
        totals.errors == 0,
        f"{totals.errors} error(s)"
        + (f", first: {totals.error_texts[0]}" if totals.error_texts else ""),
    )
    lost = totals.accepted - totals.delivered
    lost_verdict = Verdict(
        "nothing lost",
        lost == 0 and totals.accepted > 0,
        f"accepted {totals.accepted}, delivered at the sink {totals.delivered}"
        + (f": {lost} lost" if lost > 0 else "")
        + (f": {-lost} delivered but not acknowledged to the client" if lost < 0 else ""),
    )
    return [
        flat_verdict("rss_kib", "KiB", samples, warmup),
        flat_verdict("fds", "descriptors", samples, warmup),
        errors,
        lost_verdict,
    ]


HEADER = (
    f"{'t s':>6} {'RSS MiB':>8} {'fds':>5} {'p50 ms':>7} {'p99 ms':>7} {'load/s':>7} "
    f"{'sent':>9} {'accepted':>9} {'delivered':>9} {'errors':>6} {'load1':>6}"
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table_row(sample: Sample) -> str:
    return (
        f"{sample.t:6.0f} {sample.rss_kib / 1024:8.1f} {sample.fds:5d} "
        f"{_ms(sample.probe_p50_ms):>7} {_ms(sample.probe_p99_ms):>7} {sample.load_rate:7.1f} "
        f"{sample.sent:9d} {sample.accepted:9d} {sample.delivered:9d} {sample.errors:6d} "
        f"{sample.loadavg:6.2f}"
    )
