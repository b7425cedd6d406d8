"""filterd's throughput benchmark (``make bench``): smtp-source into smtp-sink over loopback,
directly, through filterd (empty chain), through filterd with the header_checks plugin as its
chain (bench/header_checks.regexp), and through Haraka 3 as a forwarding relay: one process, a
cluster of two (nodes=2), and one process with TCP_NODELAY on its outgoing connections
(bench/haraka/).

    .venv/bin/python bench/run.py [--quick] [--only direct,filterd,filterd-hc,haraka,rss]
                                  [--repeat N] [--json FILE] [--keep]

Matrix: body sizes 4 KiB and 100 KiB x 1, 10 and 50 parallel sessions. Each cell first sends a
short warm-up batch, which also measures the rate; the measured batch is then sized to last
about ``target_seconds`` (bounded by a message count), and smtp-source is killed if it runs past
the cell's time limit. The rate is messages / wall time of the smtp-source run.

Then, on a fresh filterd, the RSS growth while relaying one 100 MiB message.

Every child runs in its own process group and is stopped by that group's id at the end, also on
failure or Ctrl-C. See docs/benchmarks.md for the columns and results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filterd_bench import benchinfo
from filterd_bench.bigmessage import BigMessageResult, relay_big_message, write_message
from filterd_bench.procs import (
    BenchError,
    Processes,
    group_cpu_seconds,
    machine_busy_seconds,
    memory_kib,
    reaped_children_seconds,
)
from filterd_bench.servers import (
    SMTP_SINK,
    HarakaUnavailable,
    Server,
    install_haraka,
    start_filterd,
    start_haraka,
    start_sink,
)
from filterd_bench.source import SMTP_SOURCE, SourceRun, run_source

SIZES = (4 * 1024, 100 * 1024)
SESSIONS = (1, 10, 50)
PARTS = ("direct", "filterd", "filterd-hc", "haraka", "rss")
LABELS = {
    "direct": "direct",
    "filterd": "filterd",
    "filterd-hc": "filterd-hc",
    "haraka1": "Haraka-1p",
    "haraka2": "Haraka-n2",
    "haraka1nd": "Haraka-1p-nd",
}
# target: (smtp.ini nodes, TCP_NODELAY preload); nodes=0 is one process, no cluster
HARAKA_VARIANTS = {"haraka1": (0, False), "haraka2": (2, False), "haraka1nd": (0, True)}
# (size, sessions, minimum ratio filterd / Haraka) from the specification
TARGETS = ((4 * 1024, 50, 1.0), (4 * 1024, 1, 10.0), (100 * 1024, 50, 1.5))
# (size, sessions, maximum cost of the header_checks chain: 1 - filterd-hc rate / filterd rate)
HC_COST_TARGET = (4 * 1024, 50, 0.15)
FILTERDS = {"filterd": False, "filterd-hc": True}  # target: with the header_checks chain
RSS_TARGET_MIB = 16.0
OTHER_CPU_WARNING = 15.0  # % of a core used by other processes that makes a run suspect


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
    repeat: int = 1  # measured runs per cell (the median is reported)

    @classmethod
    def full(cls, repeat: int) -> Plan:
        return cls(5.0, 20_000, 20, 20, 5.0, 20.0, 300, 100 * 1024 * 1024, repeat)

    @classmethod
    def quick(cls, repeat: int) -> Plan:
        return cls(1.0, 1_000, 10, 10, 3.0, 10.0, 50, 20 * 1024 * 1024, repeat)


@dataclass
class Cell:
    target: str
    size: int
    sessions: int
    messages: int = 0
    seconds: float = 0.0
    rate: float | None = None  # msg/s (median of the runs); None: not measured
    runs: list[float] = field(default_factory=list)  # msg/s of each measured run
    partial: bool = False  # the rate is from a run that stopped early
    server_cpu_percent: float | None = None  # of one core, the server's process group
    # of one core: the machine's CPU time less the benchmark's own (server, smtp-sink,
    # smtp-source) -- other work on the machine that competed with the measurement
    other_cpu_percent: float | None = None
    error: str = ""


@dataclass
class Results:
    machine: dict[str, str]
    options: dict[str, object]
    cells: list[Cell] = field(default_factory=list)
    filterd_memory_kib: dict[str, int] = field(default_factory=dict)
    filterd_log_lines: list[str] = field(default_factory=list)
    filterd_hc_memory_kib: dict[str, int] = field(default_factory=dict)  # filterd-hc's
    filterd_hc_log_lines: list[str] = field(default_factory=list)
    haraka: str = ""  # version, or why it did not run
    big_message: dict[str, object] = field(default_factory=dict)
    targets: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things that went wrong besides the cells

    def cell(self, target: str, size: int, sessions: int) -> Cell | None:
        for cell in self.cells:
            if (cell.target, cell.size, cell.sessions) == (target, size, sessions):
                return cell
        return None

    def rate(self, target: str, size: int, sessions: int) -> float | None:
        cell = self.cell(target, size, sessions)
        return cell.rate if cell is not None else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not os.access(tool, os.X_OK):
            print(f"bench: {tool} is missing (Debian package postfix)", file=sys.stderr)
            return 2
    plan = Plan.quick(args.repeat) if args.quick else Plan.full(args.repeat)
    parts = set(args.only)
    results = Results(
        machine=benchinfo.machine_info(
            {"node": benchinfo.output(["node", "--version"]) or "not available"}
        ),
        options={"quick": args.quick, "only": args.only, "repeat": args.repeat},
    )
    benchinfo.print_machine(results.machine)

    benchinfo.trap_signals()  # KeyboardInterrupt: the finally below stops children
    workdir = Path(tempfile.mkdtemp(prefix="filterd-bench-"))
    procs = Processes()
    keep = args.keep
    try:
        sink = start_sink(procs, workdir)
        print(f"smtp-sink on 127.0.0.1:{sink.port} (pid {sink.child.pid})")
        servers: dict[str, Server] = {}
        if "direct" in parts:
            servers["direct"] = sink
        for target, header_checks in FILTERDS.items():
            if target in parts:
                server = start_filterd(
                    procs,
                    workdir,
                    sink.port,
                    name=target,
                    level="warning",
                    header_checks=header_checks,
                )
                chain = "header_checks chain" if header_checks else "empty chain"
                print(f"{target} ({chain}) on 127.0.0.1:{server.port} (pid {server.pid})")
                servers[target] = server
        if "haraka" in parts:
            servers |= start_harakas(results, procs, workdir, sink.port)
        if servers:
            print()
            run_matrix(results, servers, plan)
        for target, server in servers.items():
            child = server.child
            if not child.alive():
                results.notes.append(
                    f"{LABELS[target]} exited during the run (status {child.popen.returncode}); "
                    f"its log ends with:\n{child.log_tail()}"
                )
            elif target == "filterd":
                results.filterd_memory_kib = memory_kib(server.pid)  # before stopping it
            elif target == "filterd-hc":
                results.filterd_hc_memory_kib = memory_kib(server.pid)
            if target != "direct":
                procs.stop(child)
        if "filterd" in servers:
            results.filterd_log_lines = servers["filterd"].child.log.read_text().splitlines()
        if "filterd-hc" in servers:
            log = servers["filterd-hc"].child.log
            results.filterd_hc_log_lines = log.read_text().splitlines()
        if "rss" in parts:
            run_big_message(results, procs, workdir, sink.port, plan)
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping every process started", file=sys.stderr)
        return 130
    except BenchError as exc:
        keep = True
        print(f"\nbench: {exc}", file=sys.stderr)
        return 1
    except Exception:
        keep = True
        raise
    finally:
        benchinfo.ignore_signals()  # let the clean-up below finish
        procs.stop_all()
        if keep:
            print(f"bench: logs and configurations kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    results.targets = check_targets(results)
    print()
    print(report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(results), indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--only",
        type=_parts,
        default=list(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        choices=range(1, 10),
        default=1,
        metavar="N",
        help="measured runs per cell, 1-9; the median rate is reported (default: 1)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (logs, configurations; always kept on failure)",
    )
    return parser.parse_args(argv)


def _parts(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"choose from {','.join(PARTS)}")
    return parts


# ------------------------------------------------------------------------------------ matrix
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


def run_matrix(results: Results, servers: dict[str, Server], plan: Plan) -> None:
    """Every cell in turn; within a cell the targets take turns (warm-ups, then ``repeat``
    rounds of one measured run each), so that a disturbance hits them alike. The servers not
    being measured are idle."""
    for target, server in servers.items():
        warm = run_source(
            server.port, size=SIZES[0], sessions=10, count=plan.target_warmup, timeout=20.0
        )
        problem = f" -- {warm.problem}" if warm.problem else ""
        print(f"{LABELS[target]}: warm-up {warm.completed} messages{problem}")
    print()
    groups = {server.pid for server in servers.values()}
    for size, sessions in cells():
        measures = [Measure(target, server) for target, server in servers.items()]
        for measure in measures:
            calibrate(measure, plan, size, sessions)
        for _ in range(plan.repeat):
            for measure in measures:
                if measure.active:
                    measure_once(measure, plan, size, sessions, groups)
        for measure in measures:
            cell = conclude(measure, size, sessions)
            results.cells.append(cell)
            print(describe(LABELS[cell.target], cell))
        print()


def cells() -> Iterator[tuple[int, int]]:
    for size in SIZES:
        for sessions in SESSIONS:
            yield size, sessions


def calibrate(measure: Measure, plan: Plan, size: int, sessions: int) -> None:
    """The cell's warm-up, whose rate sizes the measured runs to about ``target_seconds``."""
    warm_count = max(plan.warm_count, 2 * sessions)
    warm = run_source(
        measure.server.port,
        size=size,
        sessions=sessions,
        count=warm_count,
        timeout=plan.warm_timeout,
    )
    if not warm.ok and not warm.timed_out:
        measure.error = "warm-up: " + warm.problem
    elif warm.rate <= 0:
        measure.error = "warm-up: " + (warm.problem or "nothing sent")
    count = int(warm.rate * plan.target_seconds)
    count = min(max(count, plan.min_count, 2 * sessions), plan.max_count)
    measure.count = -(-count // sessions) * sessions  # whole rounds of the sessions


def measure_once(measure: Measure, plan: Plan, size: int, sessions: int, groups: set[int]) -> None:
    server = measure.server.pid
    before = _cpu_sample(server, groups)
    run = run_source(
        measure.server.port,
        size=size,
        sessions=sessions,
        count=measure.count,
        timeout=plan.cell_timeout,
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


def conclude(measure: Measure, size: int, sessions: int) -> Cell:
    """The cell's rate is the median of its runs' rates (the last one's if it failed)."""
    cell = Cell(measure.target, size, sessions, error=measure.error)
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
    where = f"{label:<15} {size_label(cell.size):>7} x {cell.sessions:>2} sessions:"
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


# ------------------------------------------------------------------------------------ Haraka
def start_harakas(
    results: Results, procs: Processes, workdir: Path, sink_port: int
) -> dict[str, Server]:
    """The Haraka variants that could be installed and started (the reasons for the others
    go into ``results.haraka``)."""
    try:
        binary, version = install_haraka()
    except HarakaUnavailable as exc:
        results.haraka = f"not run: {exc}"
        print(f"Haraka: {results.haraka}")
        return {}
    results.haraka = f"Haraka {version}"
    servers: dict[str, Server] = {}
    for target, (nodes, nodelay) in HARAKA_VARIANTS.items():
        try:
            server = start_haraka(procs, workdir, binary, sink_port, nodes=nodes, nodelay=nodelay)
        except HarakaUnavailable as exc:
            print(f"{LABELS[target]}: not run: {exc}")
            results.haraka += f"; {LABELS[target]} not run: {exc}"
            continue
        if nodes:
            time.sleep(2.0)  # the first worker greets; give the others time to listen too
        print(f"{LABELS[target]}: Haraka {version} on 127.0.0.1:{server.port} (pid {server.pid})")
        servers[target] = server
    return servers


# ------------------------------------------------------------------------------- big message
def run_big_message(
    results: Results, procs: Processes, workdir: Path, sink_port: int, plan: Plan
) -> None:
    path = workdir / "big.eml"
    size = write_message(path, plan.big_message)
    filterd = start_filterd(procs, workdir, sink_port, name="filterd-big", level="warning")
    print(f"one {size / 2**20:.0f} MiB message through a fresh filterd (pid {filterd.child.pid})")
    try:
        big: BigMessageResult = relay_big_message(filterd.child.pid, filterd.port, path)
    except (BenchError, OSError) as exc:
        results.big_message = {"error": str(exc), "message_bytes": size}
        print(f"  FAILED: {exc}\n")
        return
    finally:
        procs.stop(filterd.child)
        path.unlink(missing_ok=True)
    results.big_message = asdict(big) | {"growth_mib": round(big.growth_mib, 1)}
    print(
        f"  reply {big.reply!r} after {big.seconds:.2f} s "
        f"({big.message_bytes / 2**20 / big.seconds:.0f} MiB/s); VmRSS before "
        f"{big.rss_before_kib / 1024:.1f} MiB, VmHWM after {big.hwm_after_kib / 1024:.1f} MiB: "
        f"growth {big.growth_mib:.1f} MiB\n"
    )


# ----------------------------------------------------------------------------------- report
COLUMNS = ("direct", "filterd", "filterd-hc", "haraka1", "haraka2", "haraka1nd")
RATIOS = {  # column title: (the target whose rate is divided, the one it is divided by)
    "hc/f": ("filterd-hc", "filterd"),
    "f/direct": ("filterd", "direct"),
    "f/H-1p": ("filterd", "haraka1"),
    "f/H-n2": ("filterd", "haraka2"),
    "f/H-1p-nd": ("filterd", "haraka1nd"),
}


@dataclass
class Check:
    what: str
    value: float | None
    met: bool | None  # None: not measured
    specified: bool = True  # False: for information, not one of the specification's targets
    unit: str = ""  # of the value, as printed


def check_targets(results: Results) -> list[Check]:
    checks: list[Check] = []
    ran = {cell.target for cell in results.cells}
    for size, sessions, minimum in TARGETS:
        filterd = results.rate("filterd", size, sessions)
        for haraka in ("haraka1", "haraka2", "haraka1nd"):
            if "filterd" not in ran or haraka not in ran:
                continue
            other = results.rate(haraka, size, sessions)
            ratio = filterd / other if filterd and other else None
            checks.append(
                Check(
                    f"{size_label(size)}, {sessions} session(s): filterd >= {minimum:g} x "
                    f"{LABELS[haraka]}",
                    round(ratio, 2) if ratio is not None else None,
                    ratio >= minimum if ratio is not None else None,
                    specified=haraka != "haraka1nd",
                )
            )
    size, sessions, maximum = HC_COST_TARGET
    if "filterd" in ran and "filterd-hc" in ran:
        empty = results.rate("filterd", size, sessions)
        chain = results.rate("filterd-hc", size, sessions)
        cost = 1 - chain / empty if empty and chain is not None else None
        checks.append(
            Check(
                f"{size_label(size)}, {sessions} session(s): the header_checks chain costs "
                f"< {maximum:.0%} of the empty chain's rate (cost = 1 - hc/f)",
                round(cost * 100, 1) if cost is not None else None,
                cost < maximum if cost is not None else None,
                unit="%",
            )
        )
    growth = results.big_message.get("growth_mib")
    big_size = results.big_message.get("message_bytes")
    if isinstance(growth, float) and isinstance(big_size, int):
        mib = big_size / 2**20
        checks.append(
            Check(
                f"RSS growth for one {mib:.0f} MiB message < {RSS_TARGET_MIB:g} MiB",
                growth,
                growth < RSS_TARGET_MIB,
            )
        )
    return checks


def report(results: Results) -> str:
    ran = {cell.target for cell in results.cells}
    columns = [c for c in COLUMNS if c in ran]
    ratio_columns = {
        title: pair for title, pair in RATIOS.items() if pair[0] in ran and pair[1] in ran
    }
    rate_rows = [["body", "sessions", *(LABELS[c] for c in columns), *ratio_columns]]
    cpu_rows = [["body", "sessions", *(LABELS[c] for c in columns)]]
    other_rows = [list(row) for row in cpu_rows]
    for size, sessions in cells():
        ratios = []
        for top_target, bottom_target in ratio_columns.values():
            top = results.rate(top_target, size, sessions)
            bottom = results.rate(bottom_target, size, sessions)
            ratios.append(f"{top / bottom:.2f}" if top and bottom else "-")
        where = [size_label(size), str(sessions)]
        rates = [rate_text(results.cell(c, size, sessions)) for c in columns]
        rate_rows.append([*where, *rates, *ratios])
        cell_list = [results.cell(c, size, sessions) for c in columns]
        cpu_rows.append(
            [*where, *(cpu_text(c.server_cpu_percent if c else None) for c in cell_list)]
        )
        other_rows.append(
            [*where, *(cpu_text(c.other_cpu_percent if c else None) for c in cell_list)]
        )
    if not columns:
        return "no throughput measured" + _report_tail(results)
    lines = ["messages/second (smtp-source -d -s SESSIONS -l BODY; one transaction per message):"]
    lines += format_table(rate_rows)
    lines += ["", "server CPU, % of one core (direct: smtp-sink's; Haraka-n2: all 3 processes):"]
    lines += format_table(cpu_rows)
    lines += ["", "other processes' CPU during each cell, % of one core (not the benchmark's):"]
    lines += format_table(other_rows)
    return "\n".join(lines) + _report_tail(results)


def _report_tail(results: Results) -> str:
    lines = [""]
    if results.haraka:
        lines.append(f"Haraka: {results.haraka}")
    ran = {cell.target for cell in results.cells}
    for target, memory, log in (
        ("filterd", results.filterd_memory_kib, results.filterd_log_lines),
        ("filterd-hc", results.filterd_hc_memory_kib, results.filterd_hc_log_lines),
    ):
        if memory:
            lines.append(
                f"{target} memory after its cells: peak RSS (VmHWM) "
                f"{memory['VmHWM'] / 1024:.1f} MiB, RSS (VmRSS) {memory['VmRSS'] / 1024:.1f} MiB"
            )
        if target in ran:
            lines.append(f"{target} log (level warning) during its cells: {len(log)} line(s)")
            lines.extend(f"    {line}" for line in log[:10])
    big = results.big_message
    if "growth_mib" in big:
        lines.append(
            f"one {int(str(big['message_bytes'])) / 2**20:.0f} MiB message through filterd: "
            f"RSS growth {big['growth_mib']} MiB (VmHWM after - VmRSS before)"
        )
    elif big:
        lines.append(f"large message: FAILED: {big.get('error')}")
    busy = sorted(c.other_cpu_percent for c in results.cells if c.other_cpu_percent is not None)
    if busy and busy[len(busy) // 2] > OTHER_CPU_WARNING:
        lines.append(
            f"WARNING: other processes used {busy[len(busy) // 2]:.0f}% of a core (median over "
            f"the cells) during the measurements: these figures are disturbed"
        )
    lines.extend(results.notes)
    problems = [cell for cell in results.cells if cell.error]
    if problems:
        lines.append("problems (* in the table: rate of a run that stopped early):")
        lines.extend(
            f"  {LABELS[c.target]} {size_label(c.size)} x {c.sessions}: {c.error}" for c in problems
        )
    if results.targets:
        lines += [
            "",
            "targets (f = filterd, hc = filterd-hc: filterd with the header_checks chain):",
        ]
        for check in results.targets:
            met = {True: "met", False: "NOT met", None: "not measured"}[check.met]
            value = "-" if check.value is None else f"{check.value:g}{check.unit}"
            note = "" if check.specified else "  (for information)"
            lines.append(f"  {check.what}: {value} -> {met}{note}")
    return "\n".join(lines)


def format_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(text.rjust(width) for text, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def rate_text(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    if cell.rate is None:
        return "FAILED"
    return f"{cell.rate:,.0f}" + ("*" if cell.partial else "")


def cpu_text(percent: float | None) -> str:
    return "-" if percent is None else f"{percent:.0f}"


def size_label(size: int) -> str:
    return f"{size // 1024} KiB"


if __name__ == "__main__":
    sys.exit(main())
