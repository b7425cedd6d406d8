"""filterd's SMTP benchmark (``make bench-smtp``), at production settings, beside Haraka 3.

    .venv/bin/python bench/run.py [--quick] [--only PARTS] [--processes N] [--repeat N]
                                  [--json FILE] [--keep]

1. **Throughput**: smtp-source into smtp-sink over loopback, directly and through each target
   (``filterd_bench/smtp_targets.py``: filterd at production settings with ``processes = N``
   and ``processes = 1``, with log ``warning``, the empty-chain reference, Haraka 1 process,
   ``nodes=2``, ``nodes=2`` with TCP_NODELAY), in two load shapes (persistent connections as
   Postfix's content_filter keeps them, and a new connection per message), for 4 KiB x 50
   sessions, 100 KiB x 50 and 100 KiB x 1 (``filterd_bench/smtp_matrix.py``).
2. **Latency**: a fresh production filterd between a Python client and a Python sink that stamp
   every message (``filterd_bench/latency_client.py``, ``latency_sink.py``): the closed-loop
   maximum, then a pace of half the maximum; the added latency is filterd's 250 at the client
   minus the next hop's 250 at the sink, p50 and p99.
3. **Memory**: a fresh production filterd's RSS growth while it relays one 100 MiB message.

Then the table of the specification's targets (``filterd_bench/smtp_report.py``), each with its
figure and met / not met. Every child runs in its own process group and is stopped by that
group's id at the end, also on failure or Ctrl-C; every run is bounded in count and time. See
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from filterd_bench import benchinfo
from filterd_bench.bigmessage import relay_big_message, write_message
from filterd_bench.latency import latency_figures
from filterd_bench.latency_client import run_load
from filterd_bench.procs import BenchError, Processes, free_port, group_memory_kib, wait_for_smtp
from filterd_bench.servers import (
    SMTP_SINK,
    START_TIMEOUT,
    FilterdRefused,
    Server,
    start_filterd,
    start_sink,
)
from filterd_bench.smtp_matrix import CELLS, Plan, run_matrix
from filterd_bench.smtp_report import LatencyResult, LogSummary, Results, check_targets, report
from filterd_bench.smtp_targets import PARTS, all_targets, production_settings, start_targets
from filterd_bench.source import SMTP_SOURCE

LATENCY_SINK = Path(__file__).resolve().parent / "filterd_bench" / "latency_sink.py"
LATENCY_SINK_LIMIT = 900.0  # seconds: the sink stops by itself after this
LATENCY_WARM = 200  # messages before the latency measurements
LOG_LINES_SHOWN = 10
MESSAGE_LINE = re.compile(r": from=<[^>]*>, size=\d+, nrcpt=")  # each message handed on


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not os.access(tool, os.X_OK):
            print(f"bench: {tool} is missing (Debian package postfix)", file=sys.stderr)
            return 2
    plan = Plan.quick(args.repeat) if args.quick else Plan.full(args.repeat)
    parts = set(args.only)
    targets = [target for target in all_targets(args.processes) if target.part in parts]
    results = Results(
        machine=benchinfo.machine_info(
            {"node": benchinfo.output(["node", "--version"]) or "not available"}
        ),
        options={
            "quick": args.quick,
            "only": args.only,
            "repeat": args.repeat,
            "processes": args.processes,
        },
        labels={target.key: target.label for target in targets},
    )
    benchinfo.print_machine(results.machine)

    benchinfo.trap_signals()  # KeyboardInterrupt: the finally below stops children
    workdir = Path(tempfile.mkdtemp(prefix="filterd-bench-"))
    procs = Processes()
    keep = args.keep
    try:
        sink = start_sink(procs, workdir)
        print(f"smtp-sink on 127.0.0.1:{sink.port} (pid {sink.child.pid})")
        started = start_targets(targets, procs, workdir, sink, results.notes)
        results.haraka, results.refused = started.haraka, started.refused
        results.production = "filterd" if "filterd" in started.servers else "filterd-p1"
        if started.servers:
            results.cells = run_matrix(started.servers, plan, results.labels)
            print()
        conclude_servers(results, procs, started.servers)
        if "latency" in parts:
            run_latency(results, procs, workdir, plan, args.processes)
        if "rss" in parts:
            run_big_message(results, procs, workdir, sink.port, plan, args.processes)
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
        "--processes",
        type=int,
        choices=range(1, 65),
        default=2,
        metavar="N",
        help="the production filterd's processes = N (default 2; measured beside processes = 1)",
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


def conclude_servers(results: Results, procs: Processes, servers: dict[str, Server]) -> None:
    """After the matrix: every filterd's memory and log, then stop every server but the sink."""
    for key, server in servers.items():
        child = server.child
        label = results.labels.get(key, key)
        if not child.alive():
            results.notes.append(
                f"{label} exited during the run (status {child.popen.returncode}); "
                f"its log ends with:\n{child.log_tail()}"
            )
        elif key.startswith("filterd"):
            memory = group_memory_kib(server.pid)
            if memory:
                results.memory_kib[key] = {
                    "VmHWM": max(m.get("VmHWM", 0) for m in memory.values()),
                    "VmRSS": max(m.get("VmRSS", 0) for m in memory.values()),
                    "processes": len(memory),
                }
        if key != "direct":
            procs.stop(child)
        if key.startswith("filterd"):
            results.logs[key] = summarize_log(child.log, key)


def summarize_log(path: Path, key: str) -> LogSummary:
    level = "warning" if key in ("filterd-warn", "filterd-ref") else "info"
    data = path.read_bytes()
    lines = data.decode(errors="replace").splitlines()
    first = lines[:LOG_LINES_SHOWN] if level == "warning" else []
    messages = sum(1 for line in lines if MESSAGE_LINE.search(line))
    return LogSummary(level, len(lines), len(data), messages, first)


def start_production(
    results: Results, procs: Processes, workdir: Path, next_hop: int, name: str, processes: int
) -> tuple[Server, str, str]:
    """A fresh production filterd (``processes``, else 1 if refused): the server, its label
    and its target key in the matrix."""
    if processes > 1:
        try:
            server = start_filterd(
                procs, workdir, next_hop, name=name, settings=production_settings(processes)
            )
            return server, f"f-p{processes}", "filterd"
        except FilterdRefused as exc:
            results.refused = results.refused or str(exc)
    server = start_filterd(
        procs, workdir, next_hop, name=f"{name}-p1", settings=production_settings(1)
    )
    return server, "f-p1", "filterd-p1"


# ----------------------------------------------------------------------------------- latency
def run_latency(
    results: Results, procs: Processes, workdir: Path, plan: Plan, processes: int
) -> None:
    """The closed-loop maximum, then the paced pass at half of it; see the module docstring."""
    size, sessions = CELLS[0]
    port = free_port()
    stamps_file = workdir / "latency-stamps.json"
    argv = [sys.executable, str(LATENCY_SINK), str(port), str(stamps_file), str(LATENCY_SINK_LIMIT)]
    sink = procs.start("latency-sink", argv, log=workdir / "latency-sink.log")
    wait_for_smtp(sink, port, START_TIMEOUT)
    filterd, label, key = start_production(results, procs, workdir, port, "latency", processes)
    print(
        f"latency pass: {label} (pid {filterd.pid}) in front of the latency sink (pid {sink.pid})"
    )
    try:
        run_load(
            filterd.port,
            sessions=sessions,
            count=LATENCY_WARM,
            size=size,
            rate=None,
            time_limit=30.0,
            first_id=0,
        )
        peak = run_load(
            filterd.port,
            sessions=sessions,
            count=plan.max_count,
            size=size,
            rate=None,
            time_limit=plan.target_seconds,
            first_id=1_000_000,
        )
        matrix = results.rate(key, "persistent", size, sessions)
        ceiling = min(peak.achieved, matrix) if matrix else peak.achieved
        latency = LatencyResult(label, sessions, size, peak.achieved, matrix, ceiling / 2)
        if peak.error_count or ceiling <= 0:
            latency.error = "closed-loop pass: " + (peak.problem() or "nothing answered")
            results.latency = latency
            return
        count = max(1, int(latency.paced_rate * plan.latency_seconds))
        paced = run_load(
            filterd.port,
            sessions=sessions,
            count=count,
            size=size,
            rate=latency.paced_rate,
            time_limit=plan.latency_seconds * 2 + 5,
            first_id=2_000_000,
        )
    finally:
        procs.stop(filterd.child)
        procs.stop(sink)  # SIGTERM: the sink writes its stamps and exits
    latency.requested, latency.completed = paced.requested, paced.completed
    latency.achieved_rate = round(paced.achieved, 1)
    latency.lag_ms = round(paced.lag * 1000, 2)
    latency.error = paced.problem()
    try:
        sink_stamps = {
            sender: (float(dot), float(reply))
            for sender, (dot, reply) in json.loads(stamps_file.read_text()).items()
        }
    except (OSError, ValueError) as exc:
        latency.error = f"the sink's stamps: {exc}; its log ends with:\n{sink.log_tail()}"
        sink_stamps = {}
    figures = latency_figures(paced.stamps, sink_stamps)
    latency.added, latency.turnaround = figures.added, figures.turnaround
    latency.unmatched, latency.negative = figures.unmatched, figures.negative
    if figures.unmatched or figures.negative:
        latency.error = (latency.error + "; " if latency.error else "") + (
            f"{figures.unmatched} message(s) not stamped by the sink, {figures.negative} negative"
        )
    results.latency = latency
    if latency.added:
        print(f"  added latency: {latency.added.describe()}\n")


# ------------------------------------------------------------------------------- big message
def run_big_message(
    results: Results, procs: Processes, workdir: Path, sink_port: int, plan: Plan, processes: int
) -> None:
    path = workdir / "big.eml"
    size = write_message(path, plan.big_message)
    filterd, label, _key = start_production(results, procs, workdir, sink_port, "big", processes)
    print(f"one {size / 2**20:.0f} MiB message through a fresh {label} (pid {filterd.pid})")
    try:
        big = relay_big_message(filterd.pid, filterd.port, path)
    except (BenchError, OSError) as exc:
        results.big_message = {"error": str(exc), "message_bytes": size, "target": label}
        print(f"  FAILED: {exc}\n")
        return
    finally:
        procs.stop(filterd.child)
        path.unlink(missing_ok=True)
    results.big_message = asdict(big) | {
        "growth_mib": round(big.growth_mib, 1),
        "target": label,
        "seconds": round(big.seconds, 2),
    }
    print(
        f"  reply {big.reply!r} after {big.seconds:.2f} s "
        f"({big.message_bytes / 2**20 / big.seconds:.0f} MiB/s); VmRSS before "
        f"{big.rss_before_kib / 1024:.1f} MiB, VmHWM after {big.hwm_after_kib / 1024:.1f} MiB: "
        f"growth {big.growth_mib:.1f} MiB\n"
    )


if __name__ == "__main__":
    sys.exit(main())
