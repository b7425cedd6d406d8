"""Greylisting and rules policy services: filterd's policy door (greylist, rules plugins) versus
Debian's postgrey and postfwd.

    .venv/bin/python bench/greylist_bench.py [--requests 5000] [--connections 1,10]
                                             [--targets postgrey,filterd-sqlite,...]
                                             [--processes N] [--cpu N] [--json FILE] [--keep]
                                             [--quick]

One load generator for every server (bench/filterd_bench/policy_support.py's
``run_policy_pass``: one thread, an epoll loop over C persistent TCP connections, one request in
flight on each, as Postfix's smtpd keeps its policy connection), the same requests and the same
settings (``--delay`` seconds, no whitelist, auto-whitelisting after 5, the same host name).
Every request is a protocol_state=RCPT request of a triplet of its own (one /24 per client:
bench/filterd_bench/greylist_support.py). For each connection count C and each target, a fresh
server with an empty database runs three passes over the same ``--requests`` triplets:

- ``new``: every triplet seen for the first time (a write each): ``DEFER_IF_PERMIT 4.2.0
  Greylisted, see ...``;
- ``passing``: after ``--delay`` + 1 s, the same triplets retried: each passes for the first time
  (``PREPEND X-Greylist: ...``; the triplet and the client's pass count are written);
- ``known``: the same triplets once more: ``DUNNO`` (a read, and the triplet's last-seen time
  written, as postgrey does).

Targets: ``postgrey`` (1.37, Debian's, in the foreground, its Berkeley DB in a temporary
directory; one process: it is a Net::Server::Multiplex), ``filterd-sqlite`` (the greylist
plugin's default store, a file in the temporary directory) and ``filterd-redis`` (a private
redis-server, no persistence). filterd runs ``--processes`` policy processes (default: with
SQLite one, as two writing one file wait for its lock; with Redis one per connection, at most one
per CPU); with two or more on one Redis every answer is still checked against what one server
answers: two filterd processes on one Redis give the same answers as one.

Rules (one pass, ``rules``, over the same requests: every answer ``DUNNO``): ``postfwd``
(Debian's postfwd 1.35, postfwd2 with ``--perfmon`` (no logging) and ``--nodns``;
tests/support/postfwd.py) and ``filterd-rules`` (the rules plugin) with the same three rules
(greylist_support.py: two that do not match, a CIDR and recipient-domain rule that answers
DUNNO); ``postfwd-rate`` and ``filterd-rules-rate``: the same with a
``rate(client_address/1000/3600/...)`` rule before them (a rate entry per client, never over the
limit: every request a counter write), in filterd the ratelimit package's ``rate()`` rule action
with its counters in SQLite (one process by default, as for ``filterd-sqlite``).

Every answer is checked (a wrong one counts as an error and makes the exit status 1). Rate =
answered requests / wall time of the pass; p50 and p99 are the times from writing a request to
reading its whole answer. Targets (issue 17): filterd at least 3x postgrey at 1 and at 10
connections, on ``new`` and ``known``; the rules at least 4x postfwd (``filterd-rules-rate`` /
``postfwd-rate``: postfwd with its rate() rule). ``--quick``: a smoke run (300 requests per pass).

Every process started (filterd, postgrey, redis-server) runs in its own process group and is
stopped by its id at the end, also on failure or Ctrl-C; every pass is bounded by
``--time-limit``, every answer by 30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from filterd_bench import benchinfo
from filterd_bench.greylist_support import (
    GREYLISTED,
    KNOWN,
    PASSED,
    POSTGREY,
    classify,
    postfwd,
    postfwd_available,
    postgrey,
    postgrey_installed,
    postgrey_version,
    redis_installed,
    redis_state,
    redis_version,
    requests,
    running_redis,
    sqlite_state,
    start_filterd_greylist,
    start_filterd_rules,
)
from filterd_bench.loadgen import CpuMeter, PassResult, wait_until
from filterd_bench.policy_support import PolicyTcpSession, child_pids, run_policy_pass
from filterd_bench.procs import BenchError, Processes
from filterd_bench.runner import add_output_arguments, finish, run_guarded, warning_lines

RATIO_TARGET = 3.0
RULES_RATIO_TARGET = 4.0
DEFAULT_REQUESTS = 5000
QUICK_REQUESTS = 300
TARGETS = ("postgrey", "filterd-sqlite", "filterd-redis")
RULES_TARGETS = ("postfwd-rate", "postfwd", "filterd-rules", "filterd-rules-rate")
PHASES = (("new", GREYLISTED), ("passing", PASSED), ("known", KNOWN))
RULES_PHASES = (("rules", KNOWN),)


@dataclass
class Measured:
    connections: int
    target: str
    phase: str
    processes: int
    result: PassResult
    p50_ms: float
    p99_ms: float
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    machine: dict[str, str]
    options: dict[str, object]
    passes: list[Measured] = field(default_factory=list)

    def find(self, connections: int, target: str, phase: str) -> Measured | None:
        for m in self.passes:
            if (m.connections, m.target, m.phase) == (connections, target, phase):
                return m
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # every process started from here inherits it
    if "postgrey" in args.targets and not postgrey_installed():
        print(f"greylist_bench: {POSTGREY} (or its user) is missing "
              "(deploy/install-system-packages.sh)", file=sys.stderr)  # fmt: skip
        return 2
    if {"postfwd", "postfwd-rate"} & set(args.targets) and not postfwd_available():
        print("greylist_bench: postfwd2 is missing (deploy/install-system-packages.sh)",
              file=sys.stderr)  # fmt: skip
        return 2
    if "filterd-redis" in args.targets and not redis_installed():
        print("greylist_bench: redis-server is missing (deploy/install-system-packages.sh)",
              file=sys.stderr)  # fmt: skip
        return 2
    report = Report(
        machine=benchinfo.machine_info(
            {"postgrey": postgrey_version(), "redis-server": redis_version()}
        ),
        options={
            "requests": args.requests,
            "connections": args.connections,
            "targets": args.targets,
            "delay": args.delay,
            "processes": args.processes,
            "time_limit": args.time_limit,
            "cpu": args.cpu,
            "quick": args.quick,
        },
    )
    benchinfo.print_machine(report.machine)
    print(f"machine idle before the run: {benchinfo.idle_percent(2.0):.0f} %")
    if args.cpu is not None:
        print(f"every process of this run is pinned to CPU {args.cpu} (--cpu)")
    print(
        f"{args.requests} triplets; per server: new (greylisted), passing (after the "
        f"{args.delay} s delay), known (passed before)\n"
    )

    workdir = Path(tempfile.mkdtemp(prefix="filterd-greylist-bench-"))
    procs = Processes()

    def body() -> None:
        with contextlib.ExitStack() as stack:
            redis = (
                stack.enter_context(running_redis()) if "filterd-redis" in args.targets else None
            )
            if redis is not None:
                print(f"redis-server on 127.0.0.1:{redis.port} (pid {redis.pid})")
            run = 0
            for connections in args.connections:
                for target in args.targets:
                    run += 1
                    if target == "postgrey":
                        servers = _postgrey(workdir, args.delay)
                    elif target in ("postfwd", "postfwd-rate"):
                        servers = _postfwd(workdir, rate=target == "postfwd-rate")
                    elif target in ("filterd-rules", "filterd-rules-rate"):
                        servers = _filterd_rules(procs, workdir, target, connections, run, args)
                    else:
                        if target == "filterd-redis":
                            assert redis is not None
                            state = redis_state(redis, prefix=f"bench{run}:")
                        else:
                            state = sqlite_state(workdir / f"greylist-{run}.sqlite")
                        servers = _filterd(procs, workdir, target, state, connections, run, args)
                    with servers as (port, pid, processes):
                        report.passes += bench_server(target, port, pid, processes, connections,
                                                      run, args)  # fmt: skip

    status = run_guarded("greylist_bench", workdir, args.keep, body, procs.stop_all)
    if status is not None:
        return status
    return finish(report, summary(report), args.json, any(m.problems for m in report.passes))


@contextlib.contextmanager
def _postgrey(workdir: Path, delay: int) -> Iterator[tuple[int, int, int]]:
    with postgrey(workdir, delay) as (port, pid):
        print(f"postgrey on 127.0.0.1:{port} (pid {pid})")
        yield port, pid, 1


@contextlib.contextmanager
def _postfwd(workdir: Path, *, rate: bool) -> Iterator[tuple[int, int, int]]:
    with postfwd(workdir, rate=rate) as (port, groups):
        print(f"postfwd{' (rate)' if rate else ''} on 127.0.0.1:{port} (process groups {groups})")
        yield port, groups[0] if groups else 0, 1


@contextlib.contextmanager
def _filterd_rules(
    procs: Processes,
    workdir: Path,
    target: str,
    connections: int,
    run: int,
    args: argparse.Namespace,
) -> Iterator[tuple[int, int, int]]:
    processes = args.processes or default_processes(target, connections)
    rate = target == "filterd-rules-rate"
    server = start_filterd_rules(
        procs, workdir, name=f"{target}-{run}", processes=processes, rate=rate
    )
    try:
        print(f"{target} on 127.0.0.1:{server.port} (pid {server.pid}, processes = {processes})")
        yield server.port, server.pid, processes
        if not server.child.alive():
            raise BenchError(f"{target} exited during the run:\n{server.child.log_tail()}")
    finally:
        procs.stop(server.child)


@contextlib.contextmanager
def _filterd(
    procs: Processes,
    workdir: Path,
    target: str,
    state: str,
    connections: int,
    run: int,
    args: argparse.Namespace,
) -> Iterator[tuple[int, int, int]]:
    processes = args.processes or default_processes(target, connections)
    server = start_filterd_greylist(
        procs, workdir, name=f"{target}-{run}", state=state, delay=args.delay, processes=processes
    )
    try:
        print(f"{target} on 127.0.0.1:{server.port} (pid {server.pid}, processes = {processes})")
        yield server.port, server.pid, processes
        if not server.child.alive():
            raise BenchError(f"{target} exited during the run:\n{server.child.log_tail()}")
    finally:
        procs.stop(server.child)


def default_processes(target: str, connections: int) -> int:
    """SQLite: one process (two writing one file wait for its lock: slower here); Redis and
    the rules without state: one per connection, at most one per CPU."""
    if target in ("filterd-sqlite", "filterd-rules-rate"):
        return 1
    return min(connections, os.cpu_count() or 1)


def bench_server(
    target: str,
    port: int,
    pid: int,
    processes: int,
    connections: int,
    run: int,
    args: argparse.Namespace,
) -> list[Measured]:
    """The three passes against one fresh server, each over ``connections`` new connections."""
    groups = {"server": pid} if pid else {}
    if target.startswith("filterd"):
        wait_until(lambda: len(child_pids(pid)) >= processes - 1, timeout=30.0)
        workers = child_pids(pid)
        if len(workers) != processes - 1:
            raise BenchError(f"{target} has {len(workers)} policy workers, not {processes - 1}")
        groups.update({f"server-w{i}": worker for i, worker in enumerate(workers, 1)})
    measured = []
    new_ended = 0.0
    phases = RULES_PHASES if target in RULES_TARGETS else PHASES
    for number, (phase, expected) in enumerate(phases):
        if phase == "passing":  # the delay of the last triplet seen is over (whole seconds)
            time.sleep(max(0.0, new_ended + args.delay + 1.0 - time.monotonic()))
        jobs = requests(args.requests, expected, serial_base=(run * 4 + number) * args.requests)
        measured.append(one_pass(target, phase, processes, connections, jobs, port, groups, args))
        if phase == "new":
            new_ended = time.monotonic()
    return measured


def one_pass(
    target: str,
    phase: str,
    processes: int,
    connections: int,
    jobs: list,  # type: ignore[type-arg]
    port: int,
    groups: dict[str, int],
    args: argparse.Namespace,
) -> Measured:
    sessions: list[PolicyTcpSession] = []
    latencies: list[float] = []
    try:
        sessions = [PolicyTcpSession(port) for _ in range(connections)]  # not timed
        result = run_policy_pass(
            f"{target}-{phase}",
            jobs,
            list(sessions),
            time_limit=args.time_limit,
            meter=CpuMeter(groups),
            classify=classify,
            latencies=latencies,
        )
    finally:
        for session in sessions:
            session.close()
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    measured = Measured(connections, target, phase, processes, result, p50 * 1e3, p99 * 1e3)
    if not result.ok:
        measured.problems.append(result.problem())
    print(pass_line(measured))
    return measured


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def server_cpu(m: Measured) -> float:
    return sum(value for name, value in m.result.cpu.items() if name.startswith("server"))


def pass_line(m: Measured) -> str:
    cpu = m.result.cpu
    status = "ok" if not m.problems else "PROBLEM: " + "; ".join(m.problems)
    return (
        f"C={m.connections} {m.target:>18} {m.phase:<7}: {m.result.completed} answers in "
        f"{m.result.seconds:.3f} s = {m.result.rate:,.0f} req/s, p50 {m.p50_ms:.2f} ms, "
        f"p99 {m.p99_ms:.2f} ms; CPU % of one core: server {server_cpu(m):.0f}, client "
        f"{cpu.get('client', 0):.0f}, other {cpu.get('other', 0):.0f}; {status}"
    )


def summary(report: Report) -> str:
    header = (
        f"{'C':>2}  {'target':<18} {'P':>1} {'pass':<7} {'answers':>7} {'req/s':>7} "
        f"{'p50 ms':>6} {'p99 ms':>6} {'server CPU':>10} {'client CPU':>10} {'other CPU':>9}"
    )
    lines = ["greylisting, requests/second (protocol_state=RCPT, one triplet per request):"]
    lines += [header, "-" * len(header)]
    for m in report.passes:
        cpu = m.result.cpu
        lines.append(
            f"{m.connections:>2}  {m.target:<18} {m.processes:>1} {m.phase:<7} "
            f"{m.result.completed:>7} {m.result.rate:>7,.0f} {m.p50_ms:>6.2f} {m.p99_ms:>6.2f} "
            f"{server_cpu(m):>9.0f}% {cpu.get('client', 0):>9.0f}% {cpu.get('other', 0):>8.0f}%"
        )
    lines.append("")
    for connections in sorted({m.connections for m in report.passes}):
        for phase, _ in PHASES:
            reference = report.find(connections, "postgrey", phase)
            if reference is None or not reference.result.rate:
                continue
            for target in TARGETS[1:]:
                ours_pass = report.find(connections, target, phase)
                if ours_pass is None:
                    continue
                ratio = ours_pass.result.rate / reference.result.rate
                verdict = "met" if ratio >= RATIO_TARGET else "NOT met"
                lines.append(
                    f"C={connections} {phase:<7} {target} / postgrey = {ratio:.2f} "
                    f"(target >= {RATIO_TARGET:g}: {verdict})"
                )
    for connections in sorted({m.connections for m in report.passes}):
        for ours, theirs, what in (
            ("filterd-rules", "postfwd", "the same three rules, no rate()"),
            ("filterd-rules-rate", "postfwd-rate", "with rate(), SQLite counters"),
        ):
            rules = report.find(connections, ours, "rules")
            postfwd_pass = report.find(connections, theirs, "rules")
            if rules is not None and postfwd_pass is not None and postfwd_pass.result.rate:
                ratio = rules.result.rate / postfwd_pass.result.rate
                verdict = "met" if ratio >= RULES_RATIO_TARGET else "NOT met"
                lines.append(
                    f"C={connections} rules   {ours} / {theirs} = {ratio:.2f} ({what}; "
                    f"target >= {RULES_RATIO_TARGET:g}: {verdict})"
                )
    lines += warning_lines(
        report.passes,
        lambda m: f"C={m.connections} {m.target} {m.phase}",
        lambda m: m.result.cpu,
        lambda m: m.problems,
    )
    lines.append(
        "\nP = server processes; CPU: % of one core over the pass; server = postgrey, or every "
        "filterd process; client = this script; other = the rest of the machine (redis-server "
        "included)."
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=None, help=f"triplets per pass (default {DEFAULT_REQUESTS})"
    )
    parser.add_argument(
        "--connections",
        type=lambda s: [int(part) for part in s.split(",")],
        default=[1, 10],
        help="connection counts, comma-separated (default 1,10)",
    )
    parser.add_argument(
        "--targets",
        type=lambda s: [part.strip() for part in s.split(",")],
        default=list(TARGETS + RULES_TARGETS),
        help=f"comma-separated, of {','.join(TARGETS + RULES_TARGETS)} (default: all)",
    )
    parser.add_argument("--delay", type=int, default=2, help="greylisting delay, seconds")
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="filterd policy processes (default: SQLite 1; Redis one per connection, at most "
        "one per CPU)",
    )
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per pass")
    parser.add_argument("--cpu", type=int, default=None, help="run every process on this CPU")
    add_output_arguments(parser)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK_REQUESTS} requests per pass unless --requests is given",
    )
    args = parser.parse_args(argv)
    if args.quick and args.requests is None:
        args.requests = QUICK_REQUESTS
    args.requests = args.requests or DEFAULT_REQUESTS
    known = TARGETS + RULES_TARGETS
    unknown = [t for t in args.targets if t not in known]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    if not 1 <= args.requests <= 65_536:
        parser.error("--requests must be between 1 and 65536 (one /24 of 10.0.0.0/8 each)")
    return args


if __name__ == "__main__":
    sys.exit(main())
