"""SpamAssassin through filterd versus spamc straight to spamd: messages/second.

    .venv/bin/python bench/spamd_bench.py [--messages 200] [--warmup 20] [--rounds 1]
                                          [--children N] [--concurrency C]
                                          [--targets spamc,filterd,spamd-raw]
                                          [--noisy-retries 2]
                                          [--json FILE] [--keep]

One real spamd (tests/support/spamd.py's ``running_spamd``: ``-x -L``, loopback) with
``-m N`` children, N = the machine's cores by default. One fixed message set: the 48 messages of
tests/data/mail/cpython-test-email plus a GTUBE message, CRLF, repeated in order to
``--messages``. The targets each send the whole set with concurrency C (``--concurrency``;
default N, the number of spamd children):

- ``spamc``: ``spamc -x -y`` (the SYMBOLS request) per message, C at a time, straight to spamd;
- ``filterd``: SMTP (C persistent connections, one transaction per message) into filterd,
  whose chain is the spamassassin plugin (symbols mode; address = that spamd,
  ``max_connections = N``), relaying into smtp-sink;
- ``spamd-raw`` (for information): the same SYMBOLS request written by this script itself,
  C connections at a time, without a spamc process per message: spamd's own capacity.

Per round and target: a warm-up pass (``--warmup`` messages, not counted), then the measured
pass; the targets take turns, and their order alternates from round to round. A pass during
which other processes (not spamd, filterd, smtp-sink or this script) used more than 15 % of a
core is repeated, at most ``--noisy-retries`` times (the machine is shared). Rate = messages
answered / wall time of the pass. spamd's log is read around each pass: it must have scanned
every message once (and found GTUBE in each GTUBE message), else the pass is reported as wrong.
The figure of merit is filterd's rate / spamc's (median over the rounds); target >= 0.95;
filterd / spamd-raw is printed too.

Every process started runs in its own process group and is stopped by its id at the end, also
on failure or Ctrl-C; each pass is bounded by ``--time-limit`` and every scan by a timeout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from filterd_bench import benchinfo
from filterd_bench.loadgen import (
    OTHER_CPU_WARNING,
    CpuMeter,
    PassResult,
    Session,
    run_pass,
    wait_until,
)
from filterd_bench.procs import BenchError, Processes
from filterd_bench.repo_support import GTUBE, SPAMD, SpamdInstance, running_spamd, spamd_installed
from filterd_bench.runner import (
    add_pass_arguments,
    check_pass_arguments,
    finish,
    measure_quietly,
    run_guarded,
    warning_lines,
)
from filterd_bench.servers import SMTP_SINK, Server, start_sink
from filterd_bench.spamd_support import (
    ScanCounts,
    SmtpSession,
    SpamcSession,
    SpamdSession,
    count_results,
    message_set,
    start_filterd_spamassassin,
)

TARGETS = ("spamc", "filterd", "spamd-raw")
RATIO_TARGET = 0.95


@dataclass
class Measured:
    round: int
    target: str
    result: PassResult
    scans: ScanCounts  # spamd's "result:" lines during the pass
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    machine: dict[str, str]
    options: dict[str, object]
    passes: list[Measured] = field(default_factory=list)
    discarded: list[Measured] = field(default_factory=list)  # noisy passes that were repeated

    def rates(self, target: str) -> list[float]:
        return [m.result.rate for m in self.passes if m.target == target]

    def median(self, target: str) -> float | None:
        rates = self.rates(target)
        return statistics.median(rates) if rates else None

    def ratio(self) -> float | None:
        spamc, filterd = self.median("spamc"), self.median("filterd")
        if not spamc or filterd is None:
            return None
        return filterd / spamc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if not spamd_installed() or not os.access(SMTP_SINK, os.X_OK):
        print(f"spamd_bench: needs {SPAMD}, spamc and {SMTP_SINK}", file=sys.stderr)
        return 2
    children = args.children
    spamd_version = benchinfo.output([SPAMD, "--version"]) or "?"
    report = Report(
        machine=benchinfo.machine_info({"spamd": spamd_version.splitlines()[0]}),
        options={
            "messages": args.messages,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "children": children,
            "concurrency": args.concurrency,
            "targets": args.targets,
            "time_limit": args.time_limit,
            "noisy_retries": args.noisy_retries,
        },
    )
    benchinfo.print_machine(report.machine)
    print(f"machine idle before the run: {benchinfo.idle_percent(2.0):.0f} %")
    messages = message_set(args.messages, GTUBE)
    warmup = messages[: args.warmup]
    gtubes = sum(1 for message in messages if GTUBE.encode() in message)
    print(
        f"{len(messages)} messages per pass ({gtubes} GTUBE), "
        f"{sum(map(len, messages)) // len(messages)} bytes on average; "
        f"concurrency {args.concurrency}"
    )

    workdir = Path(tempfile.mkdtemp(prefix="filterd-spamd-bench-"))
    procs = Processes()

    def body() -> None:
        with running_spamd(children=children, allow_tell=False, keep_workdir=args.keep) as spamd:
            print(f"spamd -m {children} on {spamd.host}:{spamd.port} (pid {spamd.pid})")
            sink = start_sink(procs, workdir)
            filterd = start_filterd_spamassassin(procs, workdir, sink.port, spamd.address, children)
            print(
                f"smtp-sink on 127.0.0.1:{sink.port}; filterd (spamassassin chain) on "
                f"127.0.0.1:{filterd.port} (pid {filterd.pid})\n"
            )
            groups = {"spamd": spamd.pid, "filterd": filterd.pid, "smtp-sink": sink.pid}
            for round_no in range(args.rounds):
                order = args.targets if round_no % 2 == 0 else args.targets[::-1]
                for target in order:

                    def one_pass(
                        attempt: int, target: str = target, round_no: int = round_no
                    ) -> Measured:
                        return measure(
                            target, round_no, spamd, filterd, messages, warmup, gtubes, args, groups
                        )

                    report.passes.append(
                        measure_quietly(
                            target,
                            args.noisy_retries,
                            one_pass,
                            lambda m: m.result.cpu,
                            pass_line,
                            report.discarded,
                        )
                    )
            if not filterd.child.alive():
                raise BenchError(f"filterd exited during the run:\n{filterd.child.log_tail()}")
            if args.keep:
                print(f"spamd_bench: spamd's log kept in {spamd.log_path}", file=sys.stderr)

    status = run_guarded("spamd_bench", workdir, args.keep, body, procs.stop_all)
    if status is not None:
        return status
    return finish(report, summary(report), args.json, any(m.problems for m in report.passes))


def measure(
    target: str,
    round_no: int,
    spamd: SpamdInstance,
    filterd: Server,
    messages: list[bytes],
    warmup: list[bytes],
    gtubes: int,
    args: argparse.Namespace,
    groups: dict[str, int],
) -> Measured:
    concurrency = args.concurrency

    def open_session(index: int) -> Session[bytes]:
        if target == "spamc":
            return SpamcSession(spamd.host, spamd.port)
        if target == "spamd-raw":
            return SpamdSession(spamd.host, spamd.port)
        return SmtpSession(filterd.port)

    def scans() -> ScanCounts:
        return count_results(spamd.log_path.read_bytes())

    if warmup:
        start = scans()
        warm = run_pass(f"{target}-warmup", warmup, concurrency, open_session, time_limit=60.0)
        if not warm.ok:
            raise BenchError(f"{target}: the warm-up failed: {warm.problem()}")
        # spamd may log a result line just after its answer: let the warm-up's lines land
        wait_until(lambda: scans().scanned >= start.scanned + len(warmup), 5.0)
    before = scans()
    result = run_pass(
        target,
        messages,
        concurrency,
        open_session,
        time_limit=args.time_limit,
        meter=CpuMeter(groups),
    )
    # spamd writes its result line around the time it answers: wait for the last ones
    wait_until(lambda: scans().scanned >= before.scanned + result.completed, 5.0)
    counts = scans() - before
    measured = Measured(round_no, target, result, counts)
    if not result.ok:
        measured.problems.append(result.problem())
    if counts.scanned != len(messages):
        measured.problems.append(f"spamd scanned {counts.scanned}, expected {len(messages)}")
    if counts.gtube != gtubes:
        measured.problems.append(f"spamd hit GTUBE {counts.gtube} times, expected {gtubes}")
    if target != "filterd" and result.tags.get("gtube", 0) != gtubes:
        measured.problems.append(
            f"spamc saw GTUBE {result.tags.get('gtube', 0)} times, not {gtubes}"
        )
    return measured


def pass_line(m: Measured) -> str:
    cpu = m.result.cpu
    status = "ok" if not m.problems else "PROBLEM: " + "; ".join(m.problems)
    return (
        f"round {m.round + 1} {m.target:>7}: {m.result.completed} messages in "
        f"{m.result.seconds:.2f} s = {m.result.rate:.1f} msg/s; CPU % of one core: spamd "
        f"{cpu.get('spamd', 0):.0f}, filterd {cpu.get('filterd', 0):.0f}, client "
        f"{cpu.get('client', 0):.0f}, other {cpu.get('other', 0):.0f}; spamd scanned "
        f"{m.scans.scanned} ({m.scans.spam} spam, {m.scans.gtube} GTUBE); {status}"
    )


def summary(report: Report) -> str:
    options = report.options
    lines = [
        f"messages/second, spamd -m {options['children']}, concurrency {options['concurrency']}:"
    ]
    rounds = max((len(report.rates(target)) for target in TARGETS), default=1)
    width = max(4, 6 * rounds - 2)  # "37.5, 35.5, ..."
    header = (
        f"{'target':<14} {'msg/s (median)':>14}  {'runs':<{width}} {'spamd CPU':>9} "
        f"{'filterd CPU':>11} {'client CPU':>10} {'other CPU':>9}  spam/scanned"
    )
    lines += [header, "-" * len(header)]
    labels = (("spamc", "spamc direct"), ("filterd", "filterd"), ("spamd-raw", "spamd-raw"))
    for target, label in labels:
        passes = [m for m in report.passes if m.target == target]
        if not passes:
            continue

        def cpu(name: str, passes: list[Measured] = passes) -> str:
            return f"{statistics.median(m.result.cpu.get(name, 0.0) for m in passes):.0f} %"

        median = report.median(target) or 0.0
        runs = ", ".join(f"{m.result.rate:.1f}" for m in passes)
        spam = ", ".join(f"{m.scans.spam}/{m.scans.scanned}" for m in passes)
        lines.append(
            f"{label:<14} {median:>14.1f}  {runs:<{width}} {cpu('spamd'):>9} {cpu('filterd'):>11} "
            f"{cpu('client'):>10} {cpu('other'):>9}  {spam}"
        )
    ratio = report.ratio()
    if ratio is not None:
        verdict = "met" if ratio >= RATIO_TARGET else "NOT met"
        lines.append(
            f"\nfilterd / spamc direct = {ratio:.3f} (target >= {RATIO_TARGET:.2f}: {verdict})"
        )
        per_round = []
        for round_no in range(int(str(report.options["rounds"]))):
            pair = {m.target: m.result.rate for m in report.passes if m.round == round_no}
            if pair.get("spamc") and "filterd" in pair:
                per_round.append(f"{pair['filterd'] / pair['spamc']:.3f}")
        if len(per_round) > 1:
            lines.append("per round: " + ", ".join(per_round))
    raw, filterd = report.median("spamd-raw"), report.median("filterd")
    if raw and filterd is not None:
        lines.append(f"filterd / spamd-raw = {filterd / raw:.3f} (for information)")
    if report.discarded:
        lines.append(
            f"\n{len(report.discarded)} pass(es) repeated because other processes used more "
            f"than {OTHER_CPU_WARNING:.0f} % of a core: "
            + ", ".join(
                f"round {m.round + 1} {m.target} ({m.result.rate:.1f} msg/s, other "
                f"{m.result.cpu.get('other', 0):.0f} %)"
                for m in report.discarded
            )
        )
    lines += warning_lines(
        report.passes,
        lambda m: f"round {m.round + 1} {m.target}",
        lambda m: m.result.cpu,
        lambda m: m.problems,
    )
    lines.append(
        "\nCPU: % of one core over the measured pass; spamd = its process group (children "
        "included), client = this script and its spamc processes, other = the rest of the machine."
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_pass_arguments(
        parser,
        targets=TARGETS,
        messages=200,
        warmup=20,
        children_help="spamd -m and the plugin's max_connections (default: cores; also "
        "--concurrency's)",
        concurrency_help="parallel messages of every target (default: --children)",
    )
    args = parser.parse_args(argv)
    check_pass_arguments(
        parser, args, targets=TARGETS, max_concurrency=64, max_messages=10_000, max_warmup=1_000
    )
    return args


if __name__ == "__main__":
    sys.exit(main())
