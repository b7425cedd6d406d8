"""What every benchmark script does around its measurements: the common options and their
checks, repeating a pass the machine disturbed, stopping what was started also on failure or
Ctrl-C, and writing the report."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from filterd_bench import benchinfo
from filterd_bench.loadgen import OTHER_CPU_WARNING
from filterd_bench.procs import BenchError

M = TypeVar("M")


def add_pass_arguments(
    parser: argparse.ArgumentParser,
    *,
    targets: Sequence[str],
    messages: int,
    warmup: int,
    children_help: str,
    concurrency_help: str,
) -> None:
    """``--messages --warmup --rounds --children --concurrency --time-limit --targets
    --noisy-retries --json --keep``: the options of a bench that sends messages in passes."""
    parser.add_argument("--messages", type=int, default=messages, help="messages per measured pass")
    parser.add_argument("--warmup", type=int, default=warmup, help="warm-up messages per pass")
    parser.add_argument("--rounds", type=int, default=1, help="measured passes per target")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 1, help=children_help)
    parser.add_argument("--concurrency", type=int, help=concurrency_help)
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="seconds; a pass past this stops the run"
    )
    parser.add_argument(
        "--targets", default=",".join(targets), help="comma-separated, from " + ",".join(targets)
    )
    parser.add_argument(
        "--noisy-retries",
        type=int,
        default=2,
        help="repeat a pass during which other processes used over "
        f"{OTHER_CPU_WARNING:.0f} %% of a core, at most this many times (default 2)",
    )
    add_output_arguments(parser)


def check_pass_arguments(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    *,
    targets: Sequence[str],
    max_concurrency: int,
    max_messages: int,
    max_warmup: int,
) -> None:
    """Checks what :func:`add_pass_arguments` added (``parser.error`` on a bad value);
    ``--concurrency`` defaults to ``--children`` and ``--targets`` becomes a list."""
    if args.concurrency is None:
        args.concurrency = args.children
    if not 0 <= args.noisy_retries <= 5:
        parser.error("--noisy-retries must be 0..5")
    if not 1 <= args.concurrency <= max_concurrency:
        parser.error(f"--concurrency must be 1..{max_concurrency}")
    if not (1 <= args.messages <= max_messages and 0 <= args.warmup <= max_warmup):
        parser.error(f"--messages must be 1..{max_messages} and --warmup 0..{max_warmup}")
    if not (1 <= args.rounds <= 10 and 1 <= args.children <= 64):
        parser.error("--rounds must be 1..10 and --children 1..64")
    args.targets = [name for name in args.targets.split(",") if name]
    if not args.targets or not set(args.targets) <= set(targets):
        parser.error("--targets: choose from " + ",".join(targets))
    check_time_limit(parser, args)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")


def check_time_limit(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 1 <= args.time_limit <= 3600:
        parser.error("--time-limit must be 1..3600 seconds")


def busy(cpu: Mapping[str, float]) -> bool:
    """Whether other processes used more than :data:`OTHER_CPU_WARNING` % of a core during a
    pass (``cpu``: % of one core per process group, "other" = the rest of the machine)."""
    return cpu.get("other", 0.0) > OTHER_CPU_WARNING


def measure_quietly(
    target: str,
    retries: int,
    measure: Callable[[int], M],
    cpu: Callable[[M], Mapping[str, float]],
    pass_line: Callable[[M], str],
    discarded: list[M],
) -> M:
    """``measure(attempt)``, again while the machine was :func:`busy` with other processes
    during the pass, at most ``retries`` more times; the passes given up on go to
    ``discarded``."""
    for attempt in range(retries + 1):
        measured = measure(attempt)
        print(pass_line(measured))
        if not busy(cpu(measured)) or attempt == retries:
            return measured
        discarded.append(measured)
        print(f"  (other processes were busy: {target}'s pass is repeated)")
    raise AssertionError("unreachable")


def run_guarded(
    name: str,
    workdir: Path,
    keep: bool,
    body: Callable[[], None],
    cleanup: Callable[[], None],
    kept: str = "logs and configurations",
) -> int | None:
    """Runs ``body`` with Ctrl-C and SIGTERM turned into KeyboardInterrupt, then ``cleanup``
    (stopping every process started) whatever happened. None when ``body`` finished; else the
    exit status: 130 after Ctrl-C, 1 after a :class:`BenchError` (its message printed). The
    work directory is removed unless ``keep`` or something failed."""
    benchinfo.trap_signals()
    try:
        body()
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted; stopping every process started", file=sys.stderr)
        return 130
    except BenchError as exc:
        keep = True
        print(f"\n{name}: {exc}", file=sys.stderr)
        return 1
    except Exception:
        keep = True
        raise
    finally:
        benchinfo.ignore_signals()
        cleanup()
        if keep:
            print(f"{name}: {kept} kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return None


def warning_lines(
    passes: Sequence[M],
    label: Callable[[M], str],
    cpu: Callable[[M], Mapping[str, float]],
    problems: Callable[[M], list[str]],
) -> list[str]:
    """The summary's closing lines: the passes the machine disturbed (their figures are
    suspect) and every problem a pass found."""
    lines = []
    suspect = [f"{label(m)} ({cpu(m).get('other', 0):.0f} %)" for m in passes if busy(cpu(m))]
    if suspect:
        lines.append(
            f"\nWARNING: other processes used more than {OTHER_CPU_WARNING:.0f} % of a core "
            "during " + ", ".join(suspect) + ": those figures are suspect"
        )
    found = [f"{label(m)}: {problem}" for m in passes for problem in problems(m)]
    if found:
        lines.append("\nproblems:\n" + "\n".join(found))
    return lines


def finish(report: Any, summary: str, json_path: Path | None, failed: bool) -> int:
    """Prints the summary, writes the report (a dataclass) as JSON when asked; the exit
    status: 1 when a pass went wrong."""
    print()
    print(summary)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(asdict(report), indent=2) + "\n")
        print(f"\nresults written to {json_path}")
    return 1 if failed else 0
