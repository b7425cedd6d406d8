"""Postfix with filterd as its smtpd milter, beside the floor: Postfix alone, and Postfix with
a milter that does nothing, in C and in pymilter.

    .venv/bin/python bench/milter_bench.py [--count 1000] [--sessions 10] [--size 4096]
                                           [--rounds 2] [--rest 30] [--variants LIST]
                                           [--write bench/MILTER_RESULTS.md] [--keep]

Each run builds a private, loopback-only Postfix (tests/support/postfix.py), injects `--count`
messages of `--size` bytes with Postfix's own `smtp-source -d -s SESSIONS -m COUNT -l SIZE`
into its smtpd, and measures from the first connection until every message is in the Maildir
and the queue is empty: msg/s end to end. The variants, in this order each round:

- **plain**: no milter (the reference);
- **c-null**: a do-nothing milter in C on Debian's libmilter (bench/null_milter.c, built by
  this script with gcc into bench/.build/, which git ignores);
- **py-null**: a do-nothing milter on pymilter, the library filterd's milter runs on;
- **filterd**: filterd as `smtpd_milters` (deploy/postfix/main.cf.milter.snippet) at
  production settings: log `info` to a file, the seed chain (the embedded default's
  header_checks rules, bench/filterd_bench/chains.py).

Both do-nothing milters negotiate what filterd negotiates for that chain
(`filterd.protocols.milter_map.protocol_flags` of the chain's stages, found by building the
chain with filterd's own code): the same steps are sent, with and without replies.

Per variant: msg/s (median over the rounds), cost = 1 - rate / plain rate, and the milter
process's own CPU per message (/proc/PID/stat, all its threads: less sensitive to the
machine's noise than msg/s). Targets: filterd's own CPU <= 0.30 ms per message, and filterd's
cost <= 1.1 x the C do-nothing milter's cost in the same run. Every child (Postfix's master and
its daemons, filterd, the do-nothing milters) runs in its own process group and is stopped by
its id, also on failure; every wait is bounded.

`--rest` seconds of quiet come before every run. On the benchmark's VM a run started at once
after another one is slower than the same run after a quiet minute: plain Postfix gets 550-700
msg/s right after a run and 780-1,180 msg/s after 30-60 s of quiet, with about 1.5 times less
system (kernel) time per message. The likely cause is the file system: ext4 mounted with
`discard`, so every deleted file (each queue file after delivery, the thousands of files of
the previous run's instance) is trimmed on the virtual disk by kernel work that goes on after
the run that caused it. Without the rest, whichever variant follows a quiet moment wins.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from filterd_bench.chains import chain_toml  # noqa: E402
from filterd_bench.milters import (  # noqa: E402
    MilterError,
    protocol_bits,
    serve_null_pymilter,
    start_c_milter,
    start_pymilter,
)
from filterd_bench.procs import stop_group  # noqa: E402

from tests.support.filterd_proc import FilterdProcess  # noqa: E402
from tests.support.postfix import (  # noqa: E402
    SMTP_SOURCE,
    PostfixInstance,
    free_port,
    make_base_dir,
    milter_main_cf,
)

SENDER = "bench@example.net"
RECIPIENT = "sink@example.org"
WARMUP = 20  # messages through each fresh instance before the clock starts
VARIANTS = ("plain", "c-null", "py-null", "filterd")
LABELS = {
    "plain": "plain Postfix",
    "c-null": "C do-nothing milter (libmilter)",
    "py-null": "pymilter do-nothing milter",
    "filterd": "filterd (seed chain, log info)",
}
FILTERD_CPU_TARGET_MS = 0.30  # filterd's own CPU per message
COST_RATIO_TARGET = 1.1  # filterd's cost / the C do-nothing milter's cost
STOP_GRACE = 10.0


@dataclass(frozen=True)
class Run:
    variant: str  # one of VARIANTS
    round: int
    count: int
    inject_seconds: float  # smtp-source until its last session ended
    total_seconds: float  # until all delivered and the queue is empty
    milter_cpu: float | None = None  # the milter process's CPU seconds (user + system)
    busy: float = 0.0  # share of all CPUs busy (whole machine, /proc/stat) while measuring
    switches: int | None = None  # the milter's context switches (perf stat, --perf)
    threads: int | None = None  # threads it started (perf stat, --perf)

    @property
    def rate(self) -> float:
        return self.count / self.total_seconds

    @property
    def accept_rate(self) -> float:
        return self.count / self.inject_seconds

    @property
    def milter_ms(self) -> float | None:
        """The milter process's CPU milliseconds per message."""
        return None if self.milter_cpu is None else 1000 * self.milter_cpu / self.count

    @property
    def switches_per_message(self) -> float | None:
        return None if self.switches is None else self.switches / self.count

    @property
    def threads_per_message(self) -> float | None:
        return None if self.threads is None else self.threads / self.count

    @property
    def machine_ms(self) -> float:
        """CPU milliseconds of the whole machine (all CPUs) per message."""
        cpus = os.cpu_count() or 1
        return 1000 * self.busy * cpus * self.total_seconds / self.count


def filterd_milter_config(port: int) -> str:
    """filterd's milter at production settings: log info (FilterdProcess writes it to a
    file), the seed chain."""
    return f"""
[run]
allow_root = true
[log]
level = "info"
[[listen]]
address = "127.0.0.1:{port}"
protocol = "milter"
[delivery]
method = "maildir"
{chain_toml("seed")}"""


def chain_stages(config_text: str) -> frozenset[str]:
    """The chain stages filterd's milter finds in ``config_text``, found as it finds them
    (filterd.frontdoors.milter.bridge): they decide what it negotiates."""
    from filterd.chain.build import build_chain
    from filterd.config.load import parse_config
    from filterd.sdk.stages import STAGES

    chain = build_chain(parse_config(config_text, serving=False))
    return frozenset(stage for stage in STAGES if chain.has_stage(stage))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, all its threads, so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_idle() -> tuple[int, int]:
    """Busy and idle jiffies of all CPUs together (first line of /proc/stat)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle, idle


def delivered_count(postfix: PostfixInstance) -> int:
    """Number of files in the instance's Maildir (no reading: cheap enough to poll)."""
    total = 0
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError):
            total += sum(1 for _ in os.scandir(postfix.mail_dir / "maildir" / sub))
    return total


def wait_delivered(postfix: PostfixInstance, count: int, timeout: float) -> None:
    """Until `count` messages are in the Maildir and the queue is empty; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        if delivered_count(postfix) >= count and not postfix.queue_json():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{delivered_count(postfix)} of {count} delivered after {timeout}s\n"
                + postfix.diagnostics()
            )
        time.sleep(0.02)


def smtp_source(
    postfix: PostfixInstance, count: int, sessions: int, size: int, timeout: float
) -> None:
    """`smtp-source -d -s SESSIONS -m COUNT -l SIZE` into the instance's smtpd."""
    argv = [str(SMTP_SOURCE), "-d", "-s", str(sessions), "-m", str(count), "-l", str(size)]
    argv += ["-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{postfix.smtp_port}"]
    subprocess.run(argv, check=True, capture_output=True, timeout=timeout)


def start_milter(
    variant: str, stack: ExitStack, workdir: Path, stages: frozenset[str], timeout: float
) -> tuple[int | None, dict[str, str], FilterdProcess | None]:
    """The variant's milter, stopped by ``stack``: its pid (None for plain), Postfix's
    settings for it, and the FilterdProcess for "filterd"."""
    if variant == "plain":
        return None, {}, None
    port = free_port()
    if variant == "filterd":
        filterd = FilterdProcess(filterd_milter_config(port), workdir / "filterd")
        stack.callback(filterd.stop)
        filterd.start()
        assert filterd.pid is not None
        return filterd.pid, milter_main_cf(port), filterd
    log = workdir / f"{variant}.log"
    if variant == "c-null":
        proc = start_c_milter(port, protocol_bits(stages), log, timeout)
    else:
        proc = start_pymilter(Path(__file__).resolve(), port, log, timeout)
    stack.callback(stop_group, proc, STOP_GRACE)
    return proc.pid, milter_main_cf(port), None


def one_run(variant: str, number: int, args: argparse.Namespace, stages: frozenset[str]) -> Run:
    """A fresh Postfix (and the variant's milter), warm up, then measure `args.count`
    messages."""
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="filterd-milter-bench-"))
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        measured, extra, filterd = start_milter(variant, stack, workdir, stages, args.timeout)
        postfix = PostfixInstance(make_base_dir(), main_cf_extra=extra)
        if not args.keep:
            stack.callback(shutil.rmtree, postfix.base_dir, ignore_errors=True)
        stack.callback(postfix.stop)
        postfix.start()

        smtp_source(postfix, WARMUP, min(args.sessions, WARMUP), args.size, args.timeout)
        wait_delivered(postfix, WARMUP, args.timeout)

        perf = PerfWatch(measured, args, f"{variant}-{number}") if measured is not None else None
        if perf is not None:
            stack.callback(perf.stop)
        cpu_before = cpu_seconds(measured) if measured is not None else 0.0
        busy_before, idle_before = machine_busy_idle()
        start = time.monotonic()
        smtp_source(postfix, args.count, args.sessions, args.size, args.timeout)
        injected = time.monotonic()
        wait_delivered(postfix, WARMUP + args.count, args.timeout)
        done = time.monotonic()
        busy_after, idle_after = machine_busy_idle()
        switches, threads = perf.stop() if perf is not None else (None, None)
        busy = busy_after - busy_before
        busy_share = busy / max(1, busy + idle_after - idle_before)
        cpu = cpu_seconds(measured) - cpu_before if measured is not None else None

        if filterd is not None:
            # The milter really saw every message (one "from=<...>, size=..., nrcpt=" line each).
            seen = len(re.findall(r"from=<[^>]*>, size=\d+, nrcpt=", filterd.output_text()))
            if seen < WARMUP + args.count:
                raise RuntimeError(f"filterd logged {seen} messages, expected more")
            if filterd.stop() != 0:
                raise RuntimeError("filterd did not exit 0:\n" + filterd.output_text()[-3000:])
        log = postfix.log_text()
        refused = re.findall(r"milter-reject|reject:", log)
        if refused:
            raise RuntimeError(f"{len(refused)} refusals in the Postfix log")
        # e.g. a step answered that was negotiated without a reply: Postfix says so
        complaints = re.findall(r"warning: .*milter.*", log)
        if complaints:
            raise RuntimeError(f"Postfix warns about the milter: {complaints[0]}")
        return Run(
            variant,
            number,
            args.count,
            injected - start,
            done - start,
            cpu,
            busy_share,
            switches,
            threads,
        )


def _py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise MilterError("--py-spy: py-spy is not installed (pip install py-spy)")
    return found


class PerfWatch:
    """Optional watchers of the milter process (every thread, those it starts too) while
    measuring, each stopped by its own pid (SIGINT), also on failure:

    - ``--perf``: ``perf stat``: its context switches;
    - ``--perf-record DIR``: ``perf record -g`` (CPU-clock samples with native call chains)
      into DIR/VARIANT-ROUND.data, for ``perf report -i``;
    - ``--py-spy DIR``: ``py-spy record --native --threads`` (Python and native frames) into
      DIR/VARIANT-ROUND.txt, collapsed stacks (one ``stack count`` line each)."""

    def __init__(self, pid: int, args: argparse.Namespace, name: str) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stat = Path(tempfile.mkstemp(prefix="filterd-milter-perf-", suffix=".csv")[1])
        self._counts: dict[str, int] = {}
        if args.perf:
            events = "task-clock,context-switches,cpu-migrations,sched:sched_process_fork"
            self._start(["perf", "stat", "-x", ",", "-e", events, "-o", str(self._stat)], pid)
        if args.perf_record is not None:
            args.perf_record.mkdir(parents=True, exist_ok=True)
            data = str(args.perf_record / f"{name}.data")
            self._start(
                ["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g", "-o", data], pid
            )
        if args.py_spy is not None:
            args.py_spy.mkdir(parents=True, exist_ok=True)
            raw = str(args.py_spy / f"{name}.txt")
            rate = ["--rate", "500", "--format", "raw", "--output", raw]
            self._start([_py_spy(), "record", "--native", "--threads", *rate], pid)
        if self._procs:
            time.sleep(1.0)  # attached to every thread

    def _start(self, argv: list[str], pid: int) -> None:
        self._procs.append(
            subprocess.Popen(
                [*argv, "-p", str(pid)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def stop(self) -> tuple[int | None, int | None]:
        """Stop the watchers; the context switches and the threads started that ``perf stat``
        counted (None without ``--perf``)."""
        procs, self._procs = self._procs, []
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stop_group(proc, STOP_GRACE)
        if procs:
            for line in self._stat.read_text().splitlines():
                fields = line.split(",")
                if len(fields) > 2 and fields[0].replace(".", "").isdigit():
                    self._counts[fields[2]] = int(float(fields[0]))
        self._stat.unlink(missing_ok=True)
        forks = self._counts.get("sched:sched_process_fork")
        return self._counts.get("context-switches"), forks


# ------------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class Summary:
    """One variant over the rounds: medians."""

    variant: str
    rate: float
    cost: float | None  # 1 - rate / plain rate; None without plain
    milter_ms: float | None
    machine_ms: float


def summarize(runs: list[Run]) -> dict[str, Summary]:
    variants = [v for v in VARIANTS if any(r.variant == v for r in runs)]
    rates = {v: statistics.median(r.rate for r in runs if r.variant == v) for v in variants}
    plain = rates.get("plain")
    found: dict[str, Summary] = {}
    for variant in variants:
        mine = [r for r in runs if r.variant == variant]
        cpu = [ms for r in mine if (ms := r.milter_ms) is not None]
        found[variant] = Summary(
            variant,
            rates[variant],
            1 - rates[variant] / plain if plain else None,
            statistics.median(cpu) if cpu else None,
            statistics.median(r.machine_ms for r in mine),
        )
    return found


def paired_costs(runs: list[Run], variant: str) -> list[float]:
    """Each round's cost of ``variant``: beside that round's plain run."""
    plain = {r.round: r.rate for r in runs if r.variant == "plain"}
    return [1 - r.rate / plain[r.round] for r in runs if r.variant == variant and r.round in plain]


def targets(summary: dict[str, Summary]) -> list[tuple[str, str, str]]:
    """(target, figure, met / NOT met / not measured)."""
    rows = []
    filterd = summary.get("filterd")
    what = f"filterd's own CPU per message <= {FILTERD_CPU_TARGET_MS:.2f} ms"
    if filterd is not None and filterd.milter_ms is not None:
        met = filterd.milter_ms <= FILTERD_CPU_TARGET_MS
        rows.append((what, f"{filterd.milter_ms:.2f} ms", "met" if met else "NOT met"))
    else:
        rows.append((what, "-", "not measured"))
    c_null = summary.get("c-null")
    what = f"filterd's cost <= {COST_RATIO_TARGET:g} x the C do-nothing milter's cost"
    if filterd and c_null and filterd.cost is not None and c_null.cost:
        ratio = filterd.cost / c_null.cost
        figure = f"{ratio:.2f} x ({filterd.cost:.1%} / {c_null.cost:.1%})"
        rows.append((what, figure, "met" if ratio <= COST_RATIO_TARGET else "NOT met"))
    else:
        rows.append((what, "-", "not measured"))
    return rows


def _fmt(value: float | None, text: str) -> str:
    return "-" if value is None else text.format(value)


def report(runs: list[Run], args: argparse.Namespace, command: str, protocol: int) -> str:
    summary = summarize(runs)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# Milter benchmark: Postfix with filterd as smtpd milter, beside the floor",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}",
        "",
        f"Load: `smtp-source -d -s {args.sessions} -m {args.count} -l {args.size}` into a private"
        " loopback Postfix (tests/support/postfix.py), delivery by virtual(8) into one Maildir;"
        f" {WARMUP} warm-up messages per fresh instance first, after {args.rest:g} s of quiet"
        " (`--rest`). Clock: first connection until all messages are delivered and the queue"
        " is empty. filterd: log `info` to a file, the seed chain (header_checks, the embedded"
        " default's rules). The do-nothing milters negotiate as filterd does for that chain:"
        f" protocol bits 0x{protocol:x}.",
        "",
        f"Load average when the report was written: {load}.",
        "",
        "| variant | msg/s (median) | cost vs plain | milter CPU ms/msg | machine CPU ms/msg |"
        " cost per round |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for variant, item in summary.items():
        paired = ", ".join(f"{c:.1%}" for c in paired_costs(runs, variant))
        lines.append(
            f"| {LABELS[variant]} | {item.rate:.1f} | {_fmt(item.cost, '{:.1%}')}"
            f" | {_fmt(item.milter_ms, '{:.3f}')} | {item.machine_ms:.2f}"
            f" | {paired if variant != 'plain' else '-'} |"
        )
    lines += [
        "",
        "| target | figure | status |",
        "|---|---|---|",
        *(f"| {what} | {figure} | **{status}** |" for what, figure, status in targets(summary)),
        "",
        "Every run:",
        "",
        "| round | variant | accepted msg/s (smtp-source) | delivered msg/s (end to end)"
        " | milter CPU ms/msg | all CPUs busy | machine CPU ms/msg |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {r.round} | {r.variant} | {r.accept_rate:.1f} | {r.rate:.1f}"
        f" ({r.total_seconds:.2f} s) | {_fmt(r.milter_ms, '{:.3f}')} | {r.busy:.0%}"
        f" | {r.machine_ms:.2f} |"
        for r in runs
    )
    return "\n".join(lines) + "\n"


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    postfix = subprocess.run(
        ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    return (
        f"{os.cpu_count()} CPU(s) ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, Postfix {postfix}"
    )


def _variants(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    if not chosen or any(part not in VARIANTS for part in chosen):
        raise argparse.ArgumentTypeError(f"choose from {','.join(VARIANTS)}")
    return [variant for variant in VARIANTS if variant in chosen]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="messages per run")
    parser.add_argument("--sessions", type=int, default=10, help="parallel SMTP sessions")
    parser.add_argument("--size", type=int, default=4096, help="message size in bytes")
    parser.add_argument("--rounds", type=int, default=2, help="runs per variant")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of every wait (s)")
    parser.add_argument(
        "--variants",
        type=_variants,
        default=list(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)} (default: all, in that order)",
    )
    parser.add_argument("--write", type=Path, help="also write the Markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the Postfix directories")
    parser.add_argument(
        "--rest",
        type=float,
        default=30.0,
        help="seconds of quiet before each run (default 30; see the module's docstring)",
    )
    parser.add_argument(
        "--perf", action="store_true", help="count the milter's context switches (perf stat)"
    )
    parser.add_argument(
        "--perf-record",
        type=Path,
        metavar="DIR",
        help="perf record -g of the milter while measuring, into DIR/VARIANT-ROUND.data",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="py-spy record --native of the milter while measuring: DIR/VARIANT-ROUND.txt"
        " (collapsed stacks); needs py-spy (pip install py-spy)",
    )
    parser.add_argument("--serve-null", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    stages = chain_stages(filterd_milter_config(10029))
    if args.serve_null is not None:
        serve_null_pymilter(args.serve_null, stages)
        return 0
    if not (1 <= args.count <= 100_000 and 1 <= args.rounds <= 10 and 1 <= args.sessions <= 100):
        parser.error("count 1..100000, rounds 1..10, sessions 1..100")
    if not 0 <= args.rest <= 600:
        parser.error("--rest must be 0..600 seconds")
    command = " ".join([".venv/bin/python", "bench/milter_bench.py", *sys.argv[1:]])
    protocol = protocol_bits(stages)
    print(f"chain stages {sorted(stages)}: the milters negotiate protocol bits 0x{protocol:x}")
    runs: list[Run] = []
    try:
        for number in range(1, args.rounds + 1):
            for variant in args.variants:
                time.sleep(args.rest)  # the previous run's deleted files are discarded meanwhile
                run = one_run(variant, number, args, stages)
                print(
                    f"round {number} {variant:8}: {run.rate:7.1f} msg/s delivered"
                    f" ({run.total_seconds:.2f} s), {run.accept_rate:7.1f} msg/s accepted,"
                    f" milter CPU {_fmt(run.milter_ms, '{:.3f}')} ms/msg, CPUs busy {run.busy:.0%}"
                    f"{_fmt(run.switches_per_message, ', {:.1f} context switches/msg')}"
                    f"{_fmt(run.threads_per_message, ', {:.3f} new threads/msg')}",
                    flush=True,
                )
                runs.append(run)
    except MilterError as exc:
        print(f"milter_bench: {exc}", file=sys.stderr)
        return 1
    text = report(runs, args, command, protocol)
    print(text)
    if args.write is not None:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
