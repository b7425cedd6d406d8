"""filterd's soak run (``make soak DURATION=30m``): a steady load through the full chain for a
long time, watching for leaks and losses.

    .venv/bin/python bench/soak.py --duration 30m [--processes N] [--json FILE] [--keep]

1. A production filterd (``filterd_bench/smtp_targets.production_settings``: log ``info``, the
   seed chain, ``processes = 2``) relays into the latency sink (``filterd_bench/latency_sink.py``),
   which counts every message and stamps the probe's.
2. **Max-rate probe**: smtp-source closed loop (``SESSIONS`` persistent sessions, 4 KiB bodies),
   first ``PROBE_FIRST`` messages, then about ``PROBE_SECONDS`` worth of them: the maximum rate.
3. **Soak**: for DURATION, smtp-source paced (``filterd_bench/soak_load.py``) at ``LOAD_SHARE``
   (70 %) of that maximum, minus the probe client's ``PROBE_RATE``; beside it the probe client
   (``filterd_bench/latency_client.py``) sends ``PROBE_RATE`` messages/s, paced, one session.
   Every ``SAMPLE_SECONDS`` (10 s, one probe pass): filterd's RSS and open descriptors (every
   process of its process group, read between two smtp-source runs, so that they do not count
   the sessions open at that instant), the probe's added latency p50/p99 in that window
   (filterd's 250 at the client minus the sink's 250, ``filterd_bench/latency.py``), messages
   sent, accepted (250; an smtp-source run's count when it ends, so the sink can be ahead in
   the middle of the run) and delivered at the sink, errors, the load average.
4. The load stops, the sink drains (bounded), a last sample; then the table, the verdicts
   (``filterd_bench/soak_report.py``) and a JSON file (default
   ``bench/results/soak-<DURATION>.json``). Exit status 0 only if every verdict passes.

Bounded: DURATION is at most 24 h, the probe and every smtp-source run have time limits, the
drain has ``DRAIN_TIMEOUT``. Every child runs in its own process group and is stopped by that
group's id, also on failure or Ctrl-C. Loopback only. See docs/benchmarks.md, "Soak".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filterd_bench import benchinfo
from filterd_bench.latency import latency_figures
from filterd_bench.latency_client import run_load
from filterd_bench.procs import (
    BenchError,
    Child,
    Processes,
    free_port,
    group_memory_kib,
    process_stats,
    wait_for_smtp,
)
from filterd_bench.servers import START_TIMEOUT, Server, start_filterd
from filterd_bench.smtp_targets import production_settings
from filterd_bench.soak_load import MAX_ERRORS_KEPT, LoadCounts, PacedSource
from filterd_bench.soak_report import (
    HEADER,
    Sample,
    Totals,
    parse_duration,
    table_row,
    verdicts,
    warmup_seconds,
)
from filterd_bench.source import SMTP_SOURCE, run_source

BENCH = Path(__file__).resolve().parent
LATENCY_SINK = BENCH / "filterd_bench" / "latency_sink.py"
RESULTS = BENCH / "results"
SIZE = 4 * 1024  # body bytes
SESSIONS = 20
PROBE_FIRST = 1000  # messages of the first max-rate pass (also the warm-up)
PROBE_SECONDS = 15.0  # the second, measured max-rate pass aims at this long
PROBE_TIMEOUT = 60.0
LOAD_SHARE = 0.70
PROBE_RATE = 10.0  # messages/s of the latency probe client
PROBE_SLACK = 10.0  # seconds a probe pass may take past its last message's due time
SAMPLE_SECONDS = 10.0
DRAIN_TIMEOUT = 60.0
STATUS_TIMEOUT = 15.0  # the sink's answer to SIGUSR1
LOG_PROBLEM = re.compile(r"\]: (warning|error|fatal|panic|critical): ")
LOG_PROBLEMS_SHOWN = 5


@dataclass
class SoakResults:
    machine: dict[str, str]
    options: dict[str, object]
    max_rate: float = 0.0
    load_rate: float = 0.0
    warmup_seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    late_ticks: int = 0
    verdicts: list[dict[str, object]] = field(default_factory=list)
    log_problems: int = 0  # filterd's log lines at warning level or worse (but root's)
    log_problems_first: list[str] = field(default_factory=list)
    loadavg_end: str = ""


class SinkStatus:
    """The latency sink's counts and stamps, asked for with SIGUSR1 (see latency_sink.py)."""

    def __init__(self, child: Child, path: Path) -> None:
        self.child, self.path, self.asked = child, path, 0

    def read(self) -> tuple[int, dict[str, tuple[float, float]]]:
        self.asked += 1
        os.kill(self.child.pid, signal.SIGUSR1)
        deadline = time.monotonic() + STATUS_TIMEOUT
        while time.monotonic() < deadline:
            try:
                status = json.loads(self.path.read_text())
            except (OSError, ValueError):
                status = {}
            if status.get("dumps", 0) >= self.asked:
                stamps = {key: (float(a), float(b)) for key, (a, b) in status["stamps"].items()}
                return int(status["messages"]), stamps
            if not self.child.alive():
                break
            time.sleep(0.05)
        raise BenchError(
            f"the sink did not write its status; its log ends with:\n{self.child.log_tail()}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if not os.access(SMTP_SOURCE, os.X_OK):
        print(f"soak: {SMTP_SOURCE} is missing (Debian package postfix)", file=sys.stderr)
        return 2
    results = SoakResults(
        benchinfo.machine_info(),
        {
            "duration": args.duration,
            "processes": args.processes,
            "sessions": SESSIONS,
            "size": SIZE,
            "load_share": LOAD_SHARE,
            "probe_rate": PROBE_RATE,
            "sample_seconds": SAMPLE_SECONDS,
        },
    )
    results.warmup_seconds = warmup_seconds(args.duration)
    benchinfo.print_machine(results.machine)
    benchinfo.trap_signals()
    workdir = Path(tempfile.mkdtemp(prefix="filterd-soak-"))
    procs = Processes()
    keep = args.keep
    try:
        soak(results, procs, workdir, args.duration, args.processes)
    except KeyboardInterrupt:
        print("\nsoak: interrupted; stopping every process started", file=sys.stderr)
        return 130
    except BenchError as exc:
        keep = True
        print(f"\nsoak: {exc}", file=sys.stderr)
        return 1
    except Exception:
        keep = True
        raise
    finally:
        benchinfo.ignore_signals()
        procs.stop_all()
        if keep:
            print(f"soak: logs and configurations kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results.loadavg_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    found = verdicts(results.samples, results.totals, results.warmup_seconds)
    results.verdicts = [asdict(verdict) for verdict in found]
    print()
    print(
        f"max rate {results.max_rate:.0f} msg/s, soak load {results.load_rate:.0f} msg/s + "
        f"probe {PROBE_RATE:.0f} msg/s for {args.duration:.0f} s, warm-up "
        f"{results.warmup_seconds:.0f} s; load average at the start "
        f"{results.machine['loadavg']}, at the end {results.loadavg_end}"
    )
    for verdict in found:
        print(verdict.line())
    print(f"filterd's log: {results.log_problems} line(s) at warning level or worse")
    for line in results.log_problems_first:
        print(f"  {line}")
    json_path = args.json or RESULTS / f"soak-{args.duration_text}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(asdict(results), indent=2) + "\n")
    print(f"\nresults written to {json_path}")
    return 0 if all(verdict.ok for verdict in found) else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", default="30m", help="seconds (120) or 30m or 1h")
    parser.add_argument(
        "--processes",
        type=int,
        choices=range(1, 65),
        default=2,
        metavar="N",
        help="filterd's processes = N (default 2)",
    )
    parser.add_argument("--json", type=Path, help="the JSON file (default bench/results/)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (always kept on failure)"
    )
    args = parser.parse_args(argv)
    try:
        seconds = parse_duration(args.duration)
    except ValueError as exc:
        parser.error(str(exc))
    args.duration_text = args.duration.strip().lower().replace(" ", "")
    if args.duration_text.isdigit():
        args.duration_text += "s"
    args.duration = seconds
    return args


def soak(
    results: SoakResults, procs: Processes, workdir: Path, duration: float, processes: int
) -> None:
    port = free_port()
    status_file = workdir / "sink-status.json"
    argv = [sys.executable, str(LATENCY_SINK), str(port), str(workdir / "sink-stamps.json")]
    argv += [str(duration + 3600), str(status_file)]
    sink_child = procs.start("latency-sink", argv, log=workdir / "latency-sink.log")
    wait_for_smtp(sink_child, port, START_TIMEOUT)
    settings = production_settings(processes)
    filterd = start_filterd(procs, workdir, port, name="filterd", settings=settings)
    print(
        f"filterd ({settings.describe()}, pid {filterd.pid}) in front of the latency sink "
        f"(pid {sink_child.pid}); work directory {workdir}"
    )
    results.max_rate = max_rate(filterd.port)
    results.load_rate = max(1.0, LOAD_SHARE * results.max_rate - PROBE_RATE)
    print(
        f"max-rate probe: {results.max_rate:.0f} msg/s; soak load {results.load_rate:.0f} msg/s "
        f"({LOAD_SHARE * 100:.0f} % less the probe's {PROBE_RATE:.0f}/s) for {duration:.0f} s\n"
    )
    time.sleep(1.0)  # let the last relayed messages land
    run = SoakRun(results, filterd, SinkStatus(sink_child, status_file))
    run.run(duration)
    results.log_problems, results.log_problems_first = log_problems(filterd.child.log)


class SoakRun:
    """The soak phase: the paced load in the background, the probe client in the foreground,
    one sample after each probe pass."""

    def __init__(self, results: SoakResults, filterd: Server, sink: SinkStatus) -> None:
        self.results, self.filterd, self.sink = results, filterd, sink
        self.delivered_before = sink.read()[0]
        self.load = PacedSource(filterd.port, rate=results.load_rate, size=SIZE, sessions=SESSIONS)
        self.probe = LoadCounts()
        self.start = self.last_t = 0.0
        self.last_accepted = 0
        self.stamps: dict[str, tuple[float, float]] = {}  # the last probe pass's

    def run(self, duration: float) -> None:
        """One probe pass per window, each ending at its sample's due time (start + k x 10 s),
        until DURATION; then the drain and a last sample."""
        print(HEADER)
        self.start = time.monotonic()
        self.load.start()
        try:
            window = 1
            while window * SAMPLE_SECONDS <= duration + SAMPLE_SECONDS / 2:
                left = self.start + window * SAMPLE_SECONDS - time.monotonic()
                self.probe_pass(max(1, int(PROBE_RATE * left)))
                print(table_row(self.sample()))
                window += 1
        finally:
            self.load.stop()
        self.drain()
        print(table_row(self.sample(final=True)) + "  (after the drain)")
        self.results.late_ticks = self.load.counts().late

    def probe_pass(self, count: int) -> None:
        probe = run_load(
            self.filterd.port,
            sessions=1,
            count=count,
            size=SIZE,
            rate=PROBE_RATE,
            time_limit=count / PROBE_RATE + PROBE_SLACK,
            first_id=self.probe.sent,
        )
        self.probe.sent += probe.requested
        self.probe.accepted += probe.completed
        self.stamps = probe.stamps
        if probe.error_count or probe.timed_out:
            self.probe.errors += max(1, probe.error_count)
            if len(self.probe.error_texts) < MAX_ERRORS_KEPT:
                self.probe.error_texts.append(f"probe: {probe.problem()}")

    def drain(self) -> None:
        """Until the sink has every accepted message (bounded by DRAIN_TIMEOUT)."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            accepted = self.load.counts().accepted + self.probe.accepted
            if self.sink.read()[0] - self.delivered_before >= accepted:
                return
            time.sleep(1.0)

    def readings(self) -> tuple[dict[int, dict[str, int]], int, LoadCounts]:
        """filterd's memory and descriptors (every process of its group), the load's counts."""
        memory = group_memory_kib(self.filterd.pid)
        return memory, group_descriptors(self.filterd.pid), self.load.counts()

    def sample(self, *, final: bool = False) -> Sample:
        """One row, appended to the results; the totals updated. The probe's latency is the
        last pass's (none after the drain)."""
        probe_stamps = {} if final else self.stamps
        # between two smtp-source runs: the load's counts first, then the sink's, so that the
        # sink, which has every message before filterd answers 250, can only be ahead
        memory, fds, load = self.load.between_runs(self.readings)
        t = time.monotonic() - self.start
        window = max(t - self.last_t, 1e-9)
        delivered, sink_stamps = self.sink.read()
        child = self.filterd.child
        alive = child.alive()
        figures = latency_figures(probe_stamps, sink_stamps)
        totals = self.results.totals
        totals.sent = load.sent + self.probe.sent
        totals.accepted = load.accepted + self.probe.accepted
        totals.delivered = delivered - self.delivered_before
        totals.errors = load.errors + self.probe.errors
        totals.error_texts = (load.error_texts + self.probe.error_texts)[:MAX_ERRORS_KEPT]
        if figures.unmatched or figures.negative:
            self.probe.errors += 1
            totals.errors += 1
            totals.error_texts.append(
                f"probe: {figures.unmatched} message(s) not stamped by the sink, "
                f"{figures.negative} negative"
            )
        if not alive:
            totals.errors += 1
            totals.error_texts.insert(0, f"filterd exited (status {child.popen.returncode})")
        sample = Sample(
            t=round(t, 1),
            rss_kib=sum(fields.get("VmRSS", 0) for fields in memory.values()),
            processes=len(memory),
            fds=fds,
            sent=totals.sent,
            accepted=totals.accepted,
            delivered=totals.delivered,
            errors=totals.errors,
            load_rate=0.0 if final else round((load.accepted - self.last_accepted) / window, 1),
            probe_p50_ms=round(figures.added.p50, 3) if figures.added else None,
            probe_p99_ms=round(figures.added.p99, 3) if figures.added else None,
            loadavg=float(Path("/proc/loadavg").read_text().split()[0]),
        )
        self.last_accepted, self.last_t = load.accepted, t
        self.results.samples.append(sample)
        if not alive:
            raise BenchError(f"filterd exited; its log ends with:\n{child.log_tail()}")
        return sample


def log_problems(path: Path) -> tuple[int, list[str]]:
    """How many of filterd's log lines are at warning level or worse (but the expected one
    about root), and the first ``LOG_PROBLEMS_SHOWN`` of them."""
    count = 0
    first: list[str] = []
    with path.open(errors="replace") as log:
        for line in log:
            if LOG_PROBLEM.search(line) and "allow_root" not in line:
                count += 1
                if len(first) < LOG_PROBLEMS_SHOWN:
                    first.append(line.rstrip("\n"))
    return count, first


def group_descriptors(pgid: int) -> int:
    """Open descriptors of every live process of a process group (/proc/PID/fd)."""
    total = 0
    for pid, fields in process_stats():
        if int(fields[2]) == pgid:
            try:
                total += len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                continue  # it has just exited
    return total


def max_rate(port: int) -> float:
    """Closed loop: ``PROBE_FIRST`` messages, then about ``PROBE_SECONDS`` of them."""
    first = run_source(port, size=SIZE, sessions=SESSIONS, count=PROBE_FIRST, timeout=PROBE_TIMEOUT)
    if first.problem:
        raise BenchError(f"max-rate probe: {first.problem}")
    count = max(PROBE_FIRST, int(first.rate * PROBE_SECONDS))
    second = run_source(port, size=SIZE, sessions=SESSIONS, count=count, timeout=PROBE_TIMEOUT)
    if second.problem:
        raise BenchError(f"max-rate probe: {second.problem}")
    print(
        f"max-rate probe: {first.completed} messages at {first.rate:.0f} msg/s, then "
        f"{second.completed} at {second.rate:.0f} msg/s"
    )
    return second.rate


if __name__ == "__main__":
    sys.exit(main())
