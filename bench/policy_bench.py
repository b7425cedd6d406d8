"""SPF policy checks: filterd's policy service (spf plugin) versus Debian's policyd-spf, requests/s.

    .venv/bin/python bench/policy_bench.py [--domains 100] [--requests 2000]
                                           [--connections 1,4] [--json FILE] [--keep]
                                           [--processes N] [--cpu N]

A loopback authoritative DNS server (tests/support/dns_server.py's ``DnsServer``, in a process
of its own: bench/filterd_bench/dns_child.py) serves SPF records for ``--domains`` sender
domains, half of which pass and half fail for the clients of the requests (the zone is
described in bench/filterd_bench/policy_support.py). Every request is a protocol_state=RCPT
request as Postfix sends it, with its own ``instance``. For each connection count C:

- ``filterd``: a fresh filterd (so its DNS cache is empty) with a ``protocol = "policy"``
  listener and the spf plugin as its chain (``skip_networks = []``, resolver = the loopback
  server, MAIL FROM check only, Received-SPF only), C persistent TCP connections, request →
  answer on each. ``cold``: one request per domain (the first pass over the domains);
  ``warm``: then ``--requests`` requests cycling over the same domains, the DNS answers now
  cached by the plugin (TTL 3600 s); every request still has a client address, sender and
  HELO of its own (no two in a pass are the same check), so pyspf runs for each one.
  ``repeat``: the warm pass's checks once more (same clients, senders and HELO names, new
  ``instance`` values): the plugin's SPF result cache answers them without pyspf. This is
  filterd's best case, shown for what the result cache gives; it is not the target's measure.
- ``policyd-spf``: C policyd-spf processes (Postfix's spawn(8) starts one per policy
  connection), each fed on its stdin and read on its stdout, request → answer. Debian's
  policyd-spf has no resolver setting; bench/filterd_bench/policyd_spf_shim.py points pyspf's
  DNS library at the loopback server inside the process and runs policyd-spf's own ``main``.
  Configuration: Debian's shipped one with ``HELO_reject = No_Check`` and ``debugLevel = 0``
  (filterd: ``helo_check = "off"``, log level warning). The same two passes; policyd-spf keeps
  no DNS cache between requests, so both passes do every lookup.

filterd runs ``--processes`` policy processes (``[[listen]] processes``; default: one per
connection, at most one per CPU, as policyd-spf gets one process per connection). Each process
has caches of its own and the cold pass reaches each with part of the domains only, so with
more than one, every connection asks for every domain once more before the warm pass (checks
of their own, not measured); the warm pass's DNS query count (0) shows every cache was warm.

A pass is driven from one thread: an epoll loop over the C sessions writes a session's next
request as soon as its answer is in (``run_policy_pass``), for both servers. Every answer is
checked (pass: ``PREPEND Received-SPF: Pass``, fail: ``550 5.7.23``); a wrong one counts as an
error. Rate = answered requests / wall time of the pass (connections and
processes are opened, and each policyd-spf process answers one warm-up request, before the
clock starts). The figure of merit is filterd warm / policyd-spf (second pass) at the same C;
target >= 5.

``--cpu N`` runs every process of the benchmark on CPU N only. Over one connection each request
wakes the server and then the client; on this VM whether they share a CPU moves the rate by
±20 % from one run to the next, and on one CPU the figure repeats within 2 %. (With one CPU,
policyd-spf's C processes cannot use a second one either: compare C > 1 without it.)

Every process started runs in its own process group and is stopped by its id at the end, also
on failure or Ctrl-C; every pass is bounded by ``--time-limit``, every answer by 30 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filterd_bench import benchinfo
from filterd_bench.dns_child import DnsChild
from filterd_bench.loadgen import CpuMeter, PassResult, Session, run_pass
from filterd_bench.policy_support import (
    POLICYD_SPF,
    POLICYD_SPF_CONF,
    SYSTEM_PYTHON,
    PolicydSpfSession,
    PolicyTcpSession,
    Request,
    build_zone,
    child_pids,
    domain,
    expected,
    make_request,
    policyd_spf_version,
    requests_over_domains,
    run_policy_pass,
    start_filterd_policy,
    warmup_request,
)
from filterd_bench.procs import BenchError, Processes
from filterd_bench.runner import (
    add_output_arguments,
    check_time_limit,
    finish,
    run_guarded,
    warning_lines,
)

RATIO_TARGET = 5.0
DNS_TTL = 3600


@dataclass
class Measured:
    connections: int
    target: str  # "filterd" | "policyd-spf"
    phase: str  # "cold" | "warm" | "repeat" (filterd only)
    result: PassResult
    dns_queries: int
    dns_types: str
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    machine: dict[str, str]
    options: dict[str, object]
    passes: list[Measured] = field(default_factory=list)

    def rate(self, connections: int, target: str, phase: str) -> float | None:
        for m in self.passes:
            if (m.connections, m.target, m.phase) == (connections, target, phase):
                return m.result.rate
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # every process started from here inherits it
    for tool in (POLICYD_SPF, Path(SYSTEM_PYTHON)):
        if not tool.exists():
            print(
                f"policy_bench: {tool} is missing "
                "(apt-get install postfix-policyd-spf-python; deploy/install-system-packages.sh)",
                file=sys.stderr,
            )
            return 2
    report = Report(
        machine=benchinfo.machine_info(
            {
                "policyd-spf": f"postfix-policyd-spf-python {policyd_spf_version()}",
                "pyspf (filterd)": benchinfo.version("pyspf"),
                "dnspython (filterd)": benchinfo.version("dnspython"),
            }
        ),
        options={
            "domains": args.domains,
            "requests": args.requests,
            "connections": args.connections,
            "time_limit": args.time_limit,
            "cpu": args.cpu,
        },
    )
    benchinfo.print_machine(report.machine)
    print(f"machine idle before the run: {benchinfo.idle_percent(2.0):.0f} %")
    if args.cpu is not None:
        print(f"every process of this run is pinned to CPU {args.cpu} (--cpu)")
    cold = requests_over_domains(args.domains, args.domains)
    warm = requests_over_domains(args.domains, args.requests)
    repeat = requests_over_domains(args.domains, args.requests)  # warm's senders, new instances
    print(
        f"{args.domains} sender domains (half pass, half fail); passes: {len(cold)} requests "
        f"(cold: one per domain), then {len(warm)} (warm), then filterd only: the warm "
        f"pass's {len(repeat)} again (repeat)\n"
    )

    workdir = Path(tempfile.mkdtemp(prefix="filterd-policy-bench-"))
    procs = Processes()
    dns: list[DnsChild] = []

    def body() -> None:
        dns.append(DnsChild(build_zone(args.domains), workdir, ttl=DNS_TTL))
        print(f"DNS server on {dns[0].address} (pid {dns[0].pid})")
        conf = workdir / "policyd-spf.conf"
        conf.write_text(POLICYD_SPF_CONF)
        for connections in args.connections:
            report.passes += bench_filterd(
                procs, workdir, dns[0], connections, cold, warm, repeat, args
            )
            report.passes += bench_policyd_spf(workdir, dns[0], conf, connections, cold, warm, args)

    def cleanup() -> None:
        procs.stop_all()
        for child in dns:
            child.stop()

    status = run_guarded("policy_bench", workdir, args.keep, body, cleanup)
    if status is not None:
        return status
    return finish(report, summary(report), args.json, any(m.problems for m in report.passes))


def bench_filterd(
    procs: Processes,
    workdir: Path,
    dns: DnsChild,
    connections: int,
    cold: list[Request],
    warm: list[Request],
    repeat: list[Request],
    args: argparse.Namespace,
) -> list[Measured]:
    """A fresh filterd (empty caches): warm-up, cold pass, warm pass, repeat pass; then it is
    stopped."""
    processes = args.processes or min(connections, os.cpu_count() or 1)
    server = start_filterd_policy(
        procs, workdir, dns.address, name=f"filterd-c{connections}", processes=processes
    )
    try:
        print(
            f"filterd (policy, spf) on 127.0.0.1:{server.port} (pid {server.pid}, "
            f"processes = {processes})"
        )

        def open_session(index: int) -> Session[Request]:
            return PolicyTcpSession(server.port)

        # threads, pyspf and the plugin's first check, on a domain of its own
        warmup = [warmup_request() for _ in range(connections)]
        done = run_pass("filterd-warmup", warmup, connections, open_session, time_limit=30.0)
        if not done.ok:
            raise BenchError(f"filterd: the warm-up failed: {done.problem()}")
        groups = {"server": server.pid, "dns": dns.pid}
        workers = child_pids(server.pid)
        if len(workers) != processes - 1:
            raise BenchError(f"filterd has {len(workers)} policy workers, not {processes - 1}")
        groups.update({f"server-w{i}": pid for i, pid in enumerate(workers, 1)})
        measured = [one_pass("filterd", "cold", connections, cold, open_session, dns, args, groups)]
        if processes > 1:
            # Each process has caches of its own, and the cold pass reached each one with a
            # part of the domains only: every connection asks for every domain once more
            # (checks of their own, not measured), so that the warm pass finds every cache warm.
            _prime(server.port, args.domains, connections, offset=2 * args.requests)
        for phase, jobs in (("warm", warm), ("repeat", repeat)):
            measured.append(
                one_pass(
                    "filterd",
                    phase,
                    connections,
                    jobs,
                    open_session,
                    dns,
                    args,
                    groups,
                )
            )
        if not server.child.alive():
            raise BenchError(f"filterd exited during the run:\n{server.child.log_tail()}")
        return measured
    finally:
        procs.stop(server.child)


def _prime(port: int, domains: int, connections: int, offset: int) -> None:
    """``connections`` connections at once (so filterd spreads them as in a pass), each asking
    for every domain once, with checks of their own (not measured)."""
    sessions = [PolicyTcpSession(port) for _ in range(connections)]
    failures: list[str] = []

    def ask_every_domain(number: int, session: PolicyTcpSession) -> None:
        base = offset + number * domains
        try:
            for index in range(domains):
                session.handle(make_request(domain(index), expected(index), base + index))
        except Exception as exc:  # reported below, in the main thread
            failures.append(f"{type(exc).__name__}: {exc}")

    threads = [
        threading.Thread(target=ask_every_domain, args=(number, session), daemon=True)
        for number, session in enumerate(sessions)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for session in sessions:
            session.close()
    if failures or any(thread.is_alive() for thread in threads):
        raise BenchError(f"filterd: priming the caches failed: {failures[:3] or 'timeout'}")


def bench_policyd_spf(
    workdir: Path,
    dns: DnsChild,
    conf: Path,
    connections: int,
    cold: list[Request],
    warm: list[Request],
    args: argparse.Namespace,
) -> list[Measured]:
    measured = []
    for phase, jobs in (("cold", cold), ("warm", warm)):
        groups = {"dns": dns.pid}

        def open_session(index: int, groups: dict[str, int] = groups) -> Session[Request]:
            session = PolicydSpfSession(dns.port, conf, workdir / "policyd-spf.log")
            groups[f"server-{index}"] = session.pid  # CPU: every policyd-spf process
            return session

        measured.append(
            one_pass("policyd-spf", phase, connections, jobs, open_session, dns, args, groups)
        )
    return measured


def one_pass(
    target: str,
    phase: str,
    connections: int,
    jobs: list[Request],
    open_session: Callable[[int], Session[Request]],
    dns: DnsChild,
    args: argparse.Namespace,
    groups: dict[str, int],
) -> Measured:
    meter = CpuMeter(groups)  # policyd-spf sessions add their processes to ``groups``
    sessions: list[PolicyTcpSession | PolicydSpfSession] = []
    try:
        for index in range(connections):  # not timed (policyd-spf: started and warmed up)
            session = open_session(index)
            assert isinstance(session, PolicyTcpSession | PolicydSpfSession)
            sessions.append(session)
        before, _ = dns.count()
        result = run_policy_pass(
            f"{target}-{phase}", jobs, sessions, time_limit=args.time_limit, meter=meter
        )
        after, types = dns.count()
    finally:
        for session in sessions:
            session.close()
    measured = Measured(connections, target, phase, result, after - before, types)
    if not result.ok:
        measured.problems.append(result.problem())
    print(pass_line(measured))
    return measured


def server_cpu(m: Measured) -> float:
    return sum(value for name, value in m.result.cpu.items() if name.startswith("server"))


def pass_line(m: Measured) -> str:
    cpu = m.result.cpu
    status = "ok" if not m.problems else "PROBLEM: " + "; ".join(m.problems)
    tags = ", ".join(f"{tag} {n}" for tag, n in sorted(m.result.tags.items()))
    return (
        f"C={m.connections} {m.target:>11} {m.phase}: {m.result.completed} requests "
        f"({tags}) in {m.result.seconds:.3f} s = {m.result.rate:,.0f} req/s; DNS queries "
        f"{m.dns_queries}; CPU % of one core: server {server_cpu(m):.0f}, DNS "
        f"{cpu.get('dns', 0):.0f}, client {cpu.get('client', 0):.0f}, other "
        f"{cpu.get('other', 0):.0f}; {status}"
    )


def summary(report: Report) -> str:
    header = (
        f"{'C':>2}  {'target':<12} {'pass':<6} {'requests':>8} {'seconds':>8} {'req/s':>7} "
        f"{'DNS queries':>11} {'server CPU':>10} {'DNS CPU':>7} {'client CPU':>10} "
        f"{'other CPU':>9}"
    )
    lines = ["requests/second (protocol_state=RCPT, one request per message):", header]
    lines.append("-" * len(header))
    for m in report.passes:
        cpu = m.result.cpu
        lines.append(
            f"{m.connections:>2}  {m.target:<12} {m.phase:<6} {m.result.completed:>8} "
            f"{m.result.seconds:>8.3f} {m.result.rate:>7,.0f} {m.dns_queries:>11} "
            f"{server_cpu(m):>9.0f}% {cpu.get('dns', 0):>6.0f}% {cpu.get('client', 0):>9.0f}% "
            f"{cpu.get('other', 0):>8.0f}%"
        )
    lines.append("")
    for connections in sorted({m.connections for m in report.passes}):
        filterd_warm = report.rate(connections, "filterd", "warm")
        filterd_cold = report.rate(connections, "filterd", "cold")
        policyd = report.rate(connections, "policyd-spf", "warm")
        if filterd_warm is None or not policyd:
            continue
        ratio = filterd_warm / policyd
        verdict = "met" if ratio >= RATIO_TARGET else "NOT met"
        cold_ratio = f"{filterd_cold / policyd:.2f}" if filterd_cold is not None else "-"
        filterd_repeat = report.rate(connections, "filterd", "repeat")
        repeat_ratio = f"{filterd_repeat / policyd:.2f}" if filterd_repeat is not None else "-"
        lines.append(
            f"C={connections}: filterd warm / policyd-spf = {ratio:.2f} (target >= "
            f"{RATIO_TARGET:g}: {verdict}); filterd cold / policyd-spf = {cold_ratio}; "
            f"filterd repeat / policyd-spf = {repeat_ratio} (not the target's measure)"
        )
    lines += warning_lines(
        report.passes,
        lambda m: f"C={m.connections} {m.target} {m.phase}",
        lambda m: m.result.cpu,
        lambda m: m.problems,
    )
    lines.append(
        "\nCPU: % of one core over the pass; server = filterd, or all C policyd-spf processes; "
        "DNS = the loopback DNS server; client = this script; other = the rest of the machine."
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--domains", type=int, default=100, help="sender domains (cold pass)")
    parser.add_argument("--requests", type=int, default=2000, help="requests of the warm pass")
    parser.add_argument(
        "--connections",
        default="1,4",
        help="comma-separated connection counts (filterd connections = policyd-spf processes)",
    )
    parser.add_argument(
        "--time-limit", type=float, default=120.0, help="seconds; a pass stops after this"
    )
    add_output_arguments(parser)
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="filterd's policy processes ([[listen]] processes); default: one per connection, "
        "at most one per CPU (policyd-spf gets one per connection)",
    )
    parser.add_argument(
        "--cpu",
        type=int,
        help="run everything (this script, the DNS server, filterd, policyd-spf) on this one "
        "CPU: a steadier figure, without the cost of waking a process on the other CPU",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.processes <= 64:
        parser.error("--processes must be 0 (automatic) .. 64")
    if args.cpu is not None and args.cpu not in os.sched_getaffinity(0):
        parser.error(f"--cpu: CPU {args.cpu} is not one this process may run on")
    try:
        args.connections = [int(value) for value in args.connections.split(",")]
    except ValueError:
        parser.error("--connections wants numbers separated by commas, e.g. 1,4")
    if not all(1 <= c <= 32 for c in args.connections):
        parser.error("--connections: each count must be 1..32")
    if not (2 <= args.domains <= 1000 and 1 <= args.requests <= 100_000):
        parser.error("--domains must be 2..1000 and --requests 1..100000")
    check_time_limit(parser, args)
    return args


if __name__ == "__main__":
    sys.exit(main())
