"""filterd's own CPU per relayed message at log ``info`` against ``warning``: the log's cost
measured so that other work on the machine does not move it.

    .venv/bin/python bench/log_cpu.py [--rounds 5] [--messages 4000] [--sessions 50]

Two filterds (bench/filterd.toml, the seed chain, ``processes = 1``, each stderr to a file),
one at log ``info`` and one at ``warning``, relay into one smtp-sink. Each round sends
``--messages`` 4 KiB messages through each in turn (smtp-source, both load shapes: persistent
connections and a new connection per message) and reads the user+system CPU time of the
filterd's process group from /proc before and after. The figure is that CPU time divided by the
messages delivered, in µs; the rounds alternate which filterd goes first. Reported: the median
over the rounds with the spread, and the median of the rounds' differences. Throughput depends
on what else the two cores do; CPU time per message less so, but a loaded machine still moves
it (caches, the scheduler, another process on the same core) by more than the log costs: on a
shared machine take many rounds, and ``--instructions`` for a figure that does not move.

``--baseline TREE``: two more filterds, at each level, run from another version's source
tree (``git archive <commit> filterd | tar -x -C TREE``; put first on their PYTHONPATH), in
the same rounds: before and after a change, measured under the same disturbance.

``--instructions``: instead, each filterd runs under ``valgrind --tool=callgrind
--instr-atstart=no`` (as bench/policy_instructions.py does) and the figure is its user-space
instructions per message over ``--messages`` persistent-connection messages after a warm-up: a
count that other work on the machine does not move, but that leaves out the kernel's side (the
write system calls). Under callgrind filterd runs ~50 times slower: use ``--messages 1000``.
Each round runs every filterd once (``--baseline`` too), the order alternating; the cost is the
median of the rounds' differences: a run's count still moves by some ±20 k instructions per
message with how many sessions' commands a turn of the event loop handles, so take several.

Every process runs in its own process group and is stopped by its id, also on failure; the
temporary directory is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filterd_bench.procs import (
    CLOCK_TICKS,
    BenchError,
    Processes,
    free_port,
    process_stats,
    wait_for_smtp,
)
from filterd_bench.servers import (
    START_TIMEOUT,
    FilterdSettings,
    Server,
    filterd_binary,
    filterd_config,
    start_sink,
)
from filterd_bench.source import run_source

SIZE = 4096
SOURCE_TIMEOUT = 300.0
WARMUP = 300
LEVELS = ("info", "warning")
SHAPES = {"persistent": True, "per-message": False}
CALLGRIND_START_TIMEOUT = 120.0
_TOTALS = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds (1..50)")
    parser.add_argument("--messages", type=int, default=4000, help="messages per run")
    parser.add_argument("--sessions", type=int, default=50, help="smtp-source sessions")
    parser.add_argument("--shape", choices=[*SHAPES, "both"], default="both")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a source tree of another filterd version (its filterd/ package), measured in "
        "the same rounds (first on PYTHONPATH)",
    )
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 50 and 1 <= args.messages <= 100_000):
        parser.error("--rounds must be 1..50 and --messages 1..100000")
    shapes = list(SHAPES) if args.shape == "both" else [args.shape]
    workdir = Path(tempfile.mkdtemp(prefix="filterd-log-cpu-"))
    procs = Processes()
    try:
        if args.instructions:
            counted = count_instructions(
                procs, workdir, args.rounds, args.messages, args.sessions, args.baseline
            )
        else:
            figures = measure(
                procs, workdir, shapes, args.rounds, args.messages, args.sessions, args.baseline
            )
    except BenchError as exc:
        print(f"log_cpu: {exc} (files kept in {workdir})", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
    if args.instructions:
        report_instructions(counted)
    else:
        report(figures)
    if args.json is not None:
        saved = counted if args.instructions else figures
        args.json.write_text(json.dumps(saved, indent=2) + "\n")
    if args.keep:
        print(f"files kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


@dataclass(frozen=True)
class Variant:
    """One filterd of the comparison: its log level and, for ``--baseline``, the source tree
    put first on its PYTHONPATH."""

    level: str
    tree: Path | None = None

    @property
    def name(self) -> str:
        return self.level if self.tree is None else f"baseline {self.level}"


def measure(
    procs: Processes,
    workdir: Path,
    shapes: list[str],
    rounds: int,
    messages: int,
    sessions: int,
    baseline: Path | None = None,
) -> dict[str, dict[str, list[float]]]:
    """µs of filterd CPU per message, by shape and variant, one figure per round."""
    sink = start_sink(procs, workdir)
    variants = [Variant(level) for level in LEVELS]
    if baseline is not None:
        variants += [Variant(level, baseline) for level in LEVELS]
    servers = {v.name: _start(procs, workdir, sink.port, v) for v in variants}
    for server in servers.values():
        _send(server, WARMUP, sessions, persistent=True)
    figures: dict[str, dict[str, list[float]]] = {
        s: {k: [] for v in variants for k in (v.name, f"{v.name} system")} for s in shapes
    }
    for number in range(rounds):
        order = variants if number % 2 == 0 else variants[::-1]
        for shape in shapes:
            for variant in order:
                server = servers[variant.name]
                user, system = group_cpu(server.pid)
                _send(server, messages, sessions, persistent=SHAPES[shape])
                user_after, system_after = group_cpu(server.pid)
                spent = user_after + system_after - user - system
                figures[shape][variant.name].append(spent / messages * 1e6)
                figures[shape][f"{variant.name} system"].append(
                    (system_after - system) / messages * 1e6
                )
        line = ", ".join(
            f"{shape} {v.name} {figures[shape][v.name][-1]:.0f}"
            for shape in shapes
            for v in variants
        )
        print(f"round {number + 1}: µs/msg {line}", flush=True)
    return figures


def _start(procs: Processes, workdir: Path, sink_port: int, variant: Variant) -> Server:
    """A filterd relaying into ``sink_port``: the seed chain, one process, stderr to a file."""
    port = free_port()
    name = f"filterd-{variant.name.replace(' ', '-')}"
    config = workdir / f"{name}.toml"
    config.write_text(filterd_config(port, sink_port, FilterdSettings(variant.level, "seed")))
    env = None
    if variant.tree is not None:
        env = dict(os.environ, PYTHONPATH=str(variant.tree))
    argv = [str(filterd_binary()), "run", "-c", str(config)]
    child = procs.start(name, argv, log=workdir / f"{name}.log", env=env)
    wait_for_smtp(child, port, START_TIMEOUT)
    return Server(child, port)


def count_instructions(
    procs: Processes,
    workdir: Path,
    rounds: int,
    messages: int,
    sessions: int,
    baseline: Path | None = None,
) -> dict[str, list[float]]:
    """filterd's user-space instructions per message (callgrind), by variant, one figure per
    round; the rounds alternate the order of the variants."""
    sink = start_sink(procs, workdir)
    variants = [Variant(level) for level in LEVELS]
    if baseline is not None:
        variants += [Variant(level, baseline) for level in LEVELS]
    figures: dict[str, list[float]] = {v.name: [] for v in variants}
    for number in range(rounds):
        for variant in variants if number % 2 == 0 else variants[::-1]:
            figure = _instructions(procs, workdir, sink.port, variant, messages, sessions)
            figures[variant.name].append(figure)
        line = ", ".join(f"{name} {values[-1]:,.0f}" for name, values in figures.items())
        print(f"round {number + 1}: instructions/msg {line}", flush=True)
    return figures


def _instructions(
    procs: Processes, workdir: Path, sink_port: int, variant: Variant, messages: int, sessions: int
) -> float:
    """One filterd under callgrind: its instructions per message over ``messages``
    persistent-connection messages after a warm-up."""
    port = free_port()
    name = f"filterd-{variant.name.replace(' ', '-')}"
    config = workdir / f"{name}.toml"
    config.write_text(filterd_config(port, sink_port, FilterdSettings(variant.level, "seed")))
    out = workdir / f"callgrind-{name}.out"
    for old in workdir.glob(f"{out.name}*"):
        old.unlink()
    env = None if variant.tree is None else dict(os.environ, PYTHONPATH=str(variant.tree))
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    argv += [f"--callgrind-out-file={out}", sys.executable, str(filterd_binary())]
    child = procs.start(
        name, [*argv, "run", "-c", str(config)], log=workdir / f"{name}.log", env=env
    )
    wait_for_smtp(child, port, CALLGRIND_START_TIMEOUT)
    server = Server(child, port)
    _send(server, WARMUP, sessions, persistent=True)
    _callgrind_control(child.pid, "-i", "on")
    _send(server, messages, sessions, persistent=True)
    _callgrind_control(child.pid, "-i", "off")
    _callgrind_control(child.pid, "-d")
    procs.stop(child, grace=30.0)
    totals = [  # the dump (-d) and the file written at exit
        int(n)
        for dump in workdir.glob(f"{out.name}*")
        for n in _TOTALS.findall(dump.read_text(errors="replace"))
    ]
    if not totals:
        raise BenchError(f"callgrind wrote no instruction count into {out}")
    return sum(totals) / messages


def report_instructions(figures: dict[str, list[float]]) -> None:
    print("\nfilterd instructions per message (callgrind; median of the rounds, [min-max]):")
    for prefix in ("", "baseline "):
        info_name, warning_name = f"{prefix}info", f"{prefix}warning"
        if info_name not in figures:
            continue
        info, warning = figures[info_name], figures[warning_name]
        differences = [i - w for i, w in zip(info, warning, strict=True)]
        shares = [(i - w) / i * 100 for i, w in zip(info, warning, strict=True)]
        print(
            f"  {prefix or 'this ':9} info {statistics.median(info):,.0f}"
            f" [{min(info):,.0f}-{max(info):,.0f}]"
            f"  warning {statistics.median(warning):,.0f}"
            f" [{min(warning):,.0f}-{max(warning):,.0f}]"
            f"  info costs (median of the rounds' differences) "
            f"{statistics.median(differences):,.0f} = {statistics.median(shares):.1f} %"
            f" [{min(shares):.1f}-{max(shares):.1f} %]"
        )


def _callgrind_control(pid: int, *options: str) -> None:
    done = subprocess.run(
        ["callgrind_control", *options, str(pid)], capture_output=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"callgrind_control {' '.join(options)}: {done.stderr!r}")


def group_cpu(pgid: int) -> tuple[float, float]:
    """User and system CPU seconds of the live processes in a process group."""
    user = system = 0
    for _pid, fields in process_stats():
        if int(fields[2]) == pgid:
            user += int(fields[11])
            system += int(fields[12])
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def _send(server: Server, count: int, sessions: int, *, persistent: bool) -> None:
    run = run_source(
        server.port,
        size=SIZE,
        sessions=sessions,
        count=count,
        timeout=SOURCE_TIMEOUT,
        persistent=persistent,
    )
    if not run.ok:
        raise BenchError(f"smtp-source into {server.child.name}: {run.problem}")


def report(figures: dict[str, dict[str, list[float]]]) -> None:
    print("\nfilterd CPU per message (user+system, µs; median of the rounds, [min-max]):")
    for shape, by_name in figures.items():
        for prefix in ("", "baseline "):
            info_name, warning_name = f"{prefix}info", f"{prefix}warning"
            if info_name not in by_name:
                continue
            info = statistics.median(by_name[info_name])
            warning = statistics.median(by_name[warning_name])
            spread = {n: f"[{min(v):.0f}-{max(v):.0f}]" for n, v in by_name.items()}
            cost = (info - warning) / info * 100 if info else 0.0
            paired = statistics.median(
                i - w for i, w in zip(by_name[info_name], by_name[warning_name], strict=True)
            )
            print(
                f"  {shape:12} {prefix or 'this ':9} info {info:6.0f} {spread[info_name]:>11}"
                f"  warning {warning:6.0f} {spread[warning_name]:>11}"
                f"  info costs {info - warning:5.1f} µs = {cost:4.1f} %"
                f" (median of the rounds' differences: {paired:.1f} µs ="
                f" {paired / info * 100:.1f} %)"
            )


if __name__ == "__main__":
    sys.exit(main())
