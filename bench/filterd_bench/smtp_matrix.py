"""The throughput matrix of bench/run.py: every cell (load shape x body size x sessions) with
every target in turn.

Each cell first sends a short warm-up batch per target, which also measures its rate; the
measured batch is then sized to last about ``target_seconds`` (bounded by a message count), and
smtp-source is killed if it runs past the cell's time limit. The rate is messages / wall time of
the smtp-source run; with ``repeat`` > 1 the targets take turns ``repeat`` times and the median
is reported.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from filterd_bench.procs import group_cpu_seconds, machine_busy_seconds, reaped_children_seconds
from filterd_bench.servers import Server
from filterd_bench.source import SourceRun, run_source

Shape = Literal["persistent", "per-message"]
SHAPES: tuple[Shape, ...] = ("persistent", "per-message")
SHAPE_TEXT = {
    "persistent": "one connection per session (smtp-source -d)",
    "per-message": "a new connection per message (smtp-source without -d)",
}
CELLS = ((4 * 1024, 50), (100 * 1024, 50), (100 * 1024, 1))  # (body bytes, sessions)


@dataclass(frozen=True)
class Plan:
    target_seconds: float  # aim of each measured batch
    max_count: int  # ... but never more messages than this
    min_count: int
    warm_count: int  # per-cell warm-up: max(this, 2 x sessions) messages
    warm_timeout: float
    cell_timeout: float  # smtp-source is killed past this
    target_warmup: int  # once per server, 4 KiB over 10 sessions
    big_message: int  # bytes
    latency_seconds: float  # the paced latency pass
    repeat: int = 1  # measured runs per cell (the median is reported)

    @classmethod
    def full(cls, repeat: int) -> Plan:
        return cls(5.0, 20_000, 20, 20, 5.0, 20.0, 300, 100 * 1024 * 1024, 10.0, repeat)

    @classmethod
    def quick(cls, repeat: int) -> Plan:
        return cls(1.0, 1_000, 10, 10, 3.0, 10.0, 50, 20 * 1024 * 1024, 3.0, repeat)


@dataclass
class Cell:
    target: str
    shape: Shape
    size: int
    sessions: int
    messages: int = 0
    seconds: float = 0.0
    rate: float | None = None  # msg/s (median of the runs); None: not measured
    runs: list[float] = field(default_factory=list)  # msg/s of each measured run
    partial: bool = False  # the rate is from a run that stopped early
    server_cpu_percent: float | None = None  # of one core, the server's process group
    # of one core: the machine's CPU time less the benchmark's own (servers, smtp-sink,
    # smtp-source) -- other work on the machine that competed with the measurement
    other_cpu_percent: float | None = None
    error: str = ""


@dataclass
class Measure:
    """One target's measurement in one cell, in progress."""

    target: str
    server: Server
    count: int = 0  # messages per measured run, from the warm-up's rate
    runs: list[SourceRun] = field(default_factory=list)
    server_cpu: float = 0.0  # CPU seconds over the measured runs
    other_cpu: float = 0.0
    error: str = ""

    @property
    def active(self) -> bool:
        return not self.error and all(run.ok for run in self.runs)


def cells() -> Iterator[tuple[Shape, int, int]]:
    for shape in SHAPES:
        for size, sessions in CELLS:
            yield shape, size, sessions


def warm_up(servers: dict[str, Server], plan: Plan, labels: dict[str, str]) -> None:
    """Once per server: a batch of 4 KiB messages over 10 sessions."""
    for target, server in servers.items():
        warm = run_source(
            server.port, size=CELLS[0][0], sessions=10, count=plan.target_warmup, timeout=20.0
        )
        problem = f" -- {warm.problem}" if warm.problem else ""
        print(f"{labels[target]}: warm-up {warm.completed} messages{problem}")


def run_matrix(servers: dict[str, Server], plan: Plan, labels: dict[str, str]) -> list[Cell]:
    """Every cell in turn; within a cell the targets take turns (warm-ups, then ``repeat``
    rounds of one measured run each), so that a disturbance hits them alike. The servers not
    being measured are idle."""
    warm_up(servers, plan, labels)
    groups = {server.pid for server in servers.values()}
    results: list[Cell] = []
    for shape, size, sessions in cells():
        print(f"\n{size_label(size)} x {sessions} session(s), {SHAPE_TEXT[shape]}:")
        measures = [Measure(target, server) for target, server in servers.items()]
        for measure in measures:
            calibrate(measure, plan, shape, size, sessions)
        for _ in range(plan.repeat):
            for measure in measures:
                if measure.active:
                    measure_once(measure, plan, shape, size, sessions, groups)
        for measure in measures:
            cell = conclude(measure, shape, size, sessions)
            results.append(cell)
            print(describe(labels[cell.target], cell))
    return results


def calibrate(measure: Measure, plan: Plan, shape: Shape, size: int, sessions: int) -> None:
    """The cell's warm-up, whose rate sizes the measured runs to about ``target_seconds``."""
    warm_count = max(plan.warm_count, 2 * sessions)
    warm = run_source(
        measure.server.port,
        size=size,
        sessions=sessions,
        count=warm_count,
        timeout=plan.warm_timeout,
        persistent=shape == "persistent",
    )
    if not warm.ok and not warm.timed_out:
        measure.error = "warm-up: " + warm.problem
    elif warm.rate <= 0:
        measure.error = "warm-up: " + (warm.problem or "nothing sent")
    count = int(warm.rate * plan.target_seconds)
    count = min(max(count, plan.min_count, 2 * sessions), plan.max_count)
    measure.count = -(-count // sessions) * sessions  # whole rounds of the sessions


def measure_once(
    measure: Measure, plan: Plan, shape: Shape, size: int, sessions: int, groups: set[int]
) -> None:
    server = measure.server.pid
    before = _cpu_sample(server, groups)
    run = run_source(
        measure.server.port,
        size=size,
        sessions=sessions,
        count=measure.count,
        timeout=plan.cell_timeout,
        persistent=shape == "persistent",
    )
    after = _cpu_sample(server, groups)
    server_cpu, own, machine = (b - a for a, b in zip(before, after, strict=True))
    measure.runs.append(run)
    measure.server_cpu += server_cpu
    measure.other_cpu += max(0.0, machine - own)


def _cpu_sample(server: int, groups: set[int]) -> tuple[float, float, float]:
    """CPU seconds so far: the server's group; all the benchmark's processes; the machine."""
    own = sum(group_cpu_seconds(pgid) for pgid in groups) + reaped_children_seconds()
    return group_cpu_seconds(server), own, machine_busy_seconds()


def conclude(measure: Measure, shape: Shape, size: int, sessions: int) -> Cell:
    """The cell's rate is the median of its runs' rates (the last one's if it failed)."""
    cell = Cell(measure.target, shape, size, sessions, error=measure.error)
    runs = measure.runs
    if not runs:
        return cell
    last = runs[-1]
    cell.messages = sum(run.completed for run in runs)
    seconds = sum(run.seconds for run in runs)
    cell.seconds = round(seconds, 3)
    cell.runs = [round(run.rate, 1) for run in runs]
    rate = statistics.median(run.rate for run in runs) if last.ok else last.rate
    cell.rate = round(rate, 1) if last.completed else None
    cell.partial = not last.ok
    cell.error = last.problem
    if seconds > 0:
        cell.server_cpu_percent = round(measure.server_cpu / seconds * 100, 1)
        cell.other_cpu_percent = round(measure.other_cpu / seconds * 100, 1)
    return cell


def describe(label: str, cell: Cell) -> str:
    where = f"  {label:<10}"
    if cell.rate is None:
        return f"{where} FAILED: {cell.error}"
    text = f"{where} {cell.messages:>6} msgs in {cell.seconds:6.2f} s: {cell.rate:>8,.0f} msg/s"
    if len(cell.runs) > 1:
        text += " (median of " + " ".join(f"{rate:,.0f}" for rate in cell.runs) + ")"
    if cell.server_cpu_percent is not None:
        text += (
            f"  (server CPU {cell.server_cpu_percent:.0f}%, other {cell.other_cpu_percent:.0f}%)"
        )
    if cell.error:
        text += f"  PROBLEM: {cell.error}"
    return text


def size_label(size: int) -> str:
    return f"{size // 1024} KiB"
