"""A small threaded load generator for bench/spamd_bench.py and bench/policy_bench.py.

``run_pass(jobs, concurrency, open_session, time_limit)`` opens ``concurrency`` sessions (one
per thread: an SMTP connection, a policy connection, a policyd-spf process's pipes, or nothing
for spamc), releases them together, lets them take the jobs in order from a shared list until it
is empty or the time limit passes, and times the pass from the release to the last answer.
Opening the sessions is not timed. Every blocking call a session makes has its own timeout, so
a thread that has not finished ``time_limit`` + ``JOIN_GRACE`` seconds after the release is
reported (``stuck``) and left behind as a daemon thread.

``CpuMeter`` reads, around a pass, the CPU time of the process groups of the servers (live
members plus the children they have reaped), of this process (all its threads, plus the
children it has reaped: spamc), and of the whole machine, so that a report can say which
process was busy and how much other work competed with the measurement.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from filterd_bench.procs import (
    CLOCK_TICKS,
    machine_busy_seconds,
    process_stats,
    reaped_children_seconds,
)

JobT = TypeVar("JobT")
JobT_contra = TypeVar("JobT_contra", contravariant=True)

OTHER_CPU_WARNING = 15.0  # % of a core used by other processes that makes a pass suspect
JOIN_GRACE = 30.0  # seconds past the time limit before a worker thread counts as stuck
MAX_ERRORS_KEPT = 20


class Session(Protocol[JobT_contra]):
    """One worker's connection (or process): ``handle`` does one job and returns a short tag
    that the pass counts (``"pass"``, ``"fail"``, ``"gtube"`` ...); it raises on an error."""

    def handle(self, job: JobT_contra) -> str: ...

    def close(self) -> None: ...


@dataclass
class PassResult:
    label: str
    requested: int
    completed: int = 0
    seconds: float = 0.0
    tags: dict[str, int] = field(default_factory=dict)  # a plain dict: asdict() keeps it
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    timed_out: bool = False
    stuck: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # name -> % of one core

    @property
    def rate(self) -> float:
        """Jobs answered without an error per second of the pass's wall time."""
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return (
            self.completed == self.requested
            and self.error_count == 0
            and not self.timed_out
            and self.stuck == 0
        )

    def problem(self) -> str:
        parts = []
        if self.timed_out:
            parts.append("time limit reached")
        if self.stuck:
            parts.append(f"{self.stuck} worker(s) stuck")
        if self.error_count:
            parts.append(f"{self.error_count} error(s), first: {self.errors[0]}")
        if self.completed != self.requested:
            parts.append(f"{self.completed}/{self.requested} answered")
        return "; ".join(parts)


@dataclass
class _Shared(Generic[JobT]):
    jobs: Sequence[JobT]
    deadline: float = 0.0
    next_index: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> JobT | None:
        with self.lock:
            if self.next_index >= len(self.jobs) or time.monotonic() >= self.deadline:
                return None
            job = self.jobs[self.next_index]
            self.next_index += 1
            return job


def run_pass(
    label: str,
    jobs: Sequence[JobT],
    concurrency: int,
    open_session: Callable[[int], Session[JobT]],
    *,
    time_limit: float,
    meter: CpuMeter | None = None,
) -> PassResult:
    """Run ``jobs`` over ``concurrency`` sessions; see the module docstring."""
    result = PassResult(label, len(jobs))
    shared: _Shared[JobT] = _Shared(jobs)
    sessions: list[Session[JobT]] = []
    try:
        sessions.extend(open_session(i) for i in range(concurrency))  # not timed
        start = threading.Barrier(concurrency + 1)
        finished: list[float] = []
        lock = threading.Lock()

        def work(session: Session[JobT]) -> None:
            try:
                start.wait(timeout=60)
            except threading.BrokenBarrierError:
                return
            while (job := shared.take()) is not None:
                try:
                    tag = session.handle(job)
                except Exception as exc:  # counted and reported, the pass goes on
                    with lock:
                        result.error_count += 1
                        if len(result.errors) < MAX_ERRORS_KEPT:
                            result.errors.append(f"{type(exc).__name__}: {exc}".strip())
                    continue
                with lock:
                    result.completed += 1
                    result.tags[tag] = result.tags.get(tag, 0) + 1
            with lock:
                finished.append(time.monotonic())

        threads = [
            threading.Thread(target=work, args=(session,), name=f"{label}-{i}", daemon=True)
            for i, session in enumerate(sessions)
        ]
        for thread in threads:
            thread.start()
        if meter is not None:
            meter.begin()
        began = time.monotonic()
        shared.deadline = began + time_limit
        start.wait(timeout=60)
        for thread in threads:
            thread.join(timeout=max(0.0, shared.deadline + JOIN_GRACE - time.monotonic()))
        result.stuck = sum(thread.is_alive() for thread in threads)
        ended = max(finished) if finished else time.monotonic()
        result.seconds = ended - began
        result.timed_out = shared.next_index < len(jobs)
        if meter is not None:
            result.cpu = meter.end()
    finally:
        for session in sessions:
            try:
                session.close()
            except Exception as exc:
                result.errors.append(f"closing a session: {type(exc).__name__}: {exc}")
    return result


def group_cpu_total(pgid: int) -> float:
    """CPU seconds (user + system) of a process group's live members, plus what they have
    reaped of their exited children (a preforking server replaces its children)."""
    ticks = sum(
        sum(int(value) for value in fields[11:15])
        for _pid, fields in process_stats()
        if int(fields[2]) == pgid
    )
    return ticks / CLOCK_TICKS


class CpuMeter:
    """CPU use during a pass, in % of one core: each named process group, ``client`` (this
    process and the children it reaped, e.g. spamc), ``other`` (the rest of the machine:
    work that competed with the measurement) and ``machine`` (everything)."""

    def __init__(self, groups: dict[str, int] | None = None) -> None:
        # read at each sample, not copied: sessions may add their processes until begin()
        self.groups = groups if groups is not None else {}
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {name: group_cpu_total(pgid) for name, pgid in self.groups.items()}
        sample["client"] = time.process_time() + reaped_children_seconds()
        sample["machine"] = machine_busy_seconds()
        return sample

    def begin(self) -> None:
        self._start = self._sample()
        self._wall = time.monotonic()

    def end(self) -> dict[str, float]:
        end = self._sample()
        wall = max(time.monotonic() - self._wall, 1e-9)
        used = {name: 100.0 * (end[name] - self._start[name]) / wall for name in end}
        known = sum(value for name, value in used.items() if name != "machine")
        used["other"] = max(0.0, used["machine"] - known)
        return used


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
