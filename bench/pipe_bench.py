"""Postfix's pipe(8) content filter: the seed's spamc -e against ``filterd pipe`` and ``filterd
pipe --via``, messages/second.

    .venv/bin/python bench/pipe_bench.py [--messages 60] [--warmup 6] [--rounds 1]
                                         [--children N] [--concurrency C]
                                         [--targets spamc,filterd,filterd-via]
                                         [--noisy-retries 2]
                                         [--time-limit 300] [--json FILE] [--keep]

Needs root (Postfix's master, and pipe(8) running the commands as nobody), spamd, spamc and
Postfix. One real spamd (tests/support/spamd.py's ``running_spamd``: ``-x -L``, loopback) with
``-m N`` children, N = the machine's cores by default. For each target a private Postfix
(bench/filterd_bench/pipe_support.py) whose inbound smtpd has ``content_filter`` = a pipe(8)
transport, one recipient per command, C commands at a time (``--concurrency``, default N):

- ``spamc``: the seed's command, ``spamc -e /usr/sbin/sendmail -oi -f ${sender} ${recipient}``
  (with ``-d``/``-p`` for this spamd): a PROCESS request, the rewritten message reinjected;
- ``filterd``: ``filterd pipe -c CONFIG -f ${sender} -- ${recipient}`` as docs/deploy.md
  writes it, the chain the spamassassin plugin (``mode = "process"``, as spamc -e asks spamd;
  ``max_connections = N``), reinjecting through sendmail (``[pipe] deliver_to``'s default);
- ``filterd-via``: ``filterd pipe --via 127.0.0.1:PORT -f ${sender} -- ${recipient}``, the
  client mode: each message goes to a filterd LMTP listener that the benchmark starts
  (``filterd run``, the same spamassassin plugin settings) and stops by its process group's id;
  that filterd relays to the instance's reinjection smtpd (port 10026 in deploy/postfix).

spamc and filterd reinject through the instance's own sendmail(1), filterd-via's listener over
SMTP; neither path filters again, and virtual(8) delivers into a Maildir. The messages are
spamd_bench's set (the 48 of tests/data/mail/cpython-test-email plus GTUBE, repeated to
``--messages``), each with an ``X-Bench-Seq:`` header. A pass sends them over one SMTP session
into the inbound smtpd and ends when the last one is in the Maildir; rate = messages / (last
delivery - first send). Per round and target a warm-up pass (``--warmup`` messages, not
counted), then the measured pass; the targets take turns, their order alternating from round to
round. Checked for each pass: every message delivered exactly once and marked by SpamAssassin
(an ``X-Spam-Status:`` header), as many flagged spam as spamd's log counts spam, spamd's log
shows each message scanned once (GTUBE found in each GTUBE message), no deferral or bounce in
Postfix's log.

A pass during which other processes used more than 15 % of a core is repeated, at most
``--noisy-retries`` times. A pass that does not end within ``--time-limit`` seconds stops the
run. Every process started is stopped by its id at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from filterd_bench import benchinfo
from filterd_bench.loadgen import OTHER_CPU_WARNING, CpuMeter, wait_until
from filterd_bench.pipe_support import (
    build_postfix,
    filterd_listener_config,
    filterd_pipe_command,
    filterd_via_command,
    inject,
    maildir_files,
    read_delivered,
    spamc_command,
    stamp,
)
from filterd_bench.procs import BenchError, Child, Processes, free_port, wait_for_smtp
from filterd_bench.repo_support import (
    GTUBE,
    SPAMD,
    PostfixInstance,
    SpamdInstance,
    running_spamd,
    spamd_installed,
)
from filterd_bench.runner import (
    add_pass_arguments,
    check_pass_arguments,
    finish,
    measure_quietly,
    run_guarded,
    warning_lines,
)
from filterd_bench.spamd_support import ScanCounts, count_results, message_set

TARGETS = ("spamc", "filterd", "filterd-via")
LISTENER_START = 60.0  # seconds the filterd LMTP listener gets to start
MASTER = Path("/usr/lib/postfix/sbin/master")
POLL = 0.02  # seconds between looks at the Maildir


@dataclass
class Measured:
    round: int
    target: str
    messages: int
    seconds: float
    cpu: dict[str, float]  # % of one core: spamd, postfix (with the commands), filterd (the
    # filterd-via listener), client, other
    scans: ScanCounts
    flagged: int
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def cpu_ms_per_message(self, name: str) -> float:
        return self.cpu.get(name, 0.0) / 100 * self.seconds / max(1, self.messages) * 1000


@dataclass
class Report:
    machine: dict[str, str]
    options: dict[str, object]
    passes: list[Measured] = field(default_factory=list)
    discarded: list[Measured] = field(default_factory=list)  # noisy passes that were repeated

    def of(self, target: str) -> list[Measured]:
        return [m for m in self.passes if m.target == target]

    def median(self, target: str) -> float | None:
        rates = [m.rate for m in self.of(target)]
        return statistics.median(rates) if rates else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if os.geteuid() != 0 or not spamd_installed() or not MASTER.is_file():
        print(
            f"pipe_bench: needs root (Postfix's master, pipe(8)), {SPAMD}, spamc and {MASTER}",
            file=sys.stderr,
        )
        return 2
    spamd_version = benchinfo.output([SPAMD, "--version"]) or "?"
    postfix_version = benchinfo.output(["postconf", "-d", "-h", "mail_version"]) or "?"
    report = Report(
        machine=benchinfo.machine_info(
            {"spamd": spamd_version.splitlines()[0], "postfix": postfix_version}
        ),
        options={
            key: getattr(args, key)
            for key in ("messages", "warmup", "rounds", "children", "concurrency", "targets")
        }
        | {"time_limit": args.time_limit, "noisy_retries": args.noisy_retries},
    )
    benchinfo.print_machine(report.machine)
    print(f"machine idle before the run: {benchinfo.idle_percent(2.0):.0f} %")
    messages = message_set(args.messages, GTUBE)
    print(
        f"{len(messages)} messages per pass "
        f"({sum(GTUBE.encode() in m for m in messages)} GTUBE), "
        f"{sum(map(len, messages)) // len(messages)} bytes on average; "
        f"{args.concurrency} pipe(8) commands at a time"
    )

    workdir = Path(tempfile.mkdtemp(prefix="filterd-pipe-bench-"))
    workdir.chmod(0o755)  # the commands run as nobody: they read their configuration here
    instances: dict[str, PostfixInstance] = {}
    listeners: dict[str, Child] = {}
    processes = Processes()

    def body() -> None:
        with running_spamd(
            children=args.children, allow_tell=False, keep_workdir=args.keep
        ) as spamd:
            print(f"spamd -m {args.children} on {spamd.host}:{spamd.port} (pid {spamd.pid})")
            for target in args.targets:
                port = free_port()
                if target == "spamc":
                    command = spamc_command(spamd.address)
                elif target == "filterd":
                    command = filterd_pipe_command(workdir, spamd.address, args.children)
                else:
                    command = filterd_via_command(workdir, port)
                instance = build_postfix(workdir / f"postfix-{target}", command, args.concurrency)
                instances[target] = instance
                if target == "filterd-via":
                    listeners[target] = start_listener(
                        processes, workdir, spamd, args.children, port, instance.reinject_port
                    )
                instance.start()
                print(f"{target}: Postfix on 127.0.0.1:{instance.smtp_port}, pipe argv={command}")
            print()
            for round_no in range(args.rounds):
                order = args.targets if round_no % 2 == 0 else args.targets[::-1]
                for target in order:
                    instance = instances[target]
                    if args.warmup:
                        warm = measure(
                            target,
                            round_no,
                            "warmup",
                            spamd,
                            instance,
                            listeners.get(target),
                            messages[: args.warmup],
                            args,
                        )
                        if warm.problems:
                            raise BenchError(f"{target}: the warm-up failed: {warm.problems}")

                    def one_pass(
                        attempt: int,
                        target: str = target,
                        round_no: int = round_no,
                        instance: PostfixInstance = instance,
                    ) -> Measured:
                        return measure(
                            target,
                            round_no,
                            str(attempt),
                            spamd,
                            instance,
                            listeners.get(target),
                            messages,
                            args,
                        )

                    report.passes.append(
                        measure_quietly(
                            target,
                            args.noisy_retries,
                            one_pass,
                            lambda m: m.cpu,
                            pass_line,
                            report.discarded,
                        )
                    )
            if args.keep:
                print(f"pipe_bench: spamd's log kept in {spamd.log_path}", file=sys.stderr)

    def cleanup() -> None:
        processes.stop_all()  # the filterd listener, by its process group's id
        for instance in instances.values():
            instance.stop()

    status = run_guarded(
        "pipe_bench", workdir, args.keep, body, cleanup, kept="Postfix logs and configurations"
    )
    if status is not None:
        return status
    return finish(report, summary(report), args.json, any(m.problems for m in report.passes))


def start_listener(
    processes: Processes,
    workdir: Path,
    spamd: SpamdInstance,
    children: int,
    port: int,
    next_hop: int,
) -> Child:
    """The filterd LMTP listener ``filterd pipe --via`` hands messages to, greeting on
    ``127.0.0.1:port``; it relays to ``next_hop``."""
    config = filterd_listener_config(workdir, spamd.address, children, port, next_hop)
    argv = [sys.executable, "-m", "filterd", "run", "-c", str(config)]
    child = processes.start("filterd listener", argv, log=workdir / "filterd-listener.log")
    wait_for_smtp(child, port, LISTENER_START)
    print(f"filterd-via: filterd LMTP listener on 127.0.0.1:{port} (pid {child.pid})")
    return child


def measure(
    target: str,
    round_no: int,
    attempt: str,
    spamd: SpamdInstance,
    instance: PostfixInstance,
    listener: Child | None,
    messages: list[bytes],
    args: argparse.Namespace,
) -> Measured:
    """One pass: send ``messages``, wait until the Maildir has them all, check them."""
    stamped = [stamp(m, f"{target}-r{round_no}-{attempt}-{i}") for i, m in enumerate(messages)]
    gtubes = sum(GTUBE.encode() in m for m in messages)

    def scans() -> ScanCounts:
        return count_results(spamd.log_path.read_bytes())

    before_files = maildir_files(instance)
    log_since = instance.log_offset()
    before = scans()
    groups = {"spamd": spamd.pid, "postfix": instance.master_pid or 0}
    if listener is not None:
        groups["filterd"] = listener.pid
    meter = CpuMeter(groups)
    meter.begin()
    began = time.monotonic()
    inject(instance, stamped)
    deadline = began + args.time_limit
    new: set[Path] = set()
    while time.monotonic() < deadline:
        new = maildir_files(instance) - before_files
        if len(new) >= len(stamped):
            break
        time.sleep(POLL)
    seconds = time.monotonic() - began
    cpu = meter.end()
    if listener is not None and not listener.alive():
        raise BenchError(f"{target}: the filterd listener exited:\n{listener.log_tail()}")
    if len(new) < len(stamped):
        raise BenchError(
            f"{target}: {len(new)} of {len(stamped)} messages delivered within "
            f"{args.time_limit:g} s\n{instance.diagnostics()}"
        )
    # spamd may log a result line just after its answer: let the pass's lines land
    wait_until(lambda: scans().scanned >= before.scanned + len(stamped), 5.0)
    counts = scans() - before
    delivered = read_delivered(sorted(new))
    measured = Measured(round_no, target, len(new), seconds, cpu, counts, delivered.flagged)
    problems = measured.problems
    if sorted(delivered.seqs) != sorted(
        f"{target}-r{round_no}-{attempt}-{i}" for i in range(len(messages))
    ):
        problems.append("the Maildir does not hold each message sent exactly once")
    if delivered.unmarked:
        problems.append(f"{delivered.unmarked} delivered without an X-Spam-Status: header")
    if delivered.flagged != counts.spam:
        problems.append(f"{delivered.flagged} flagged as spam, spamd found {counts.spam}")
    if counts.scanned != len(messages):
        problems.append(f"spamd scanned {counts.scanned}, expected {len(messages)}")
    if counts.gtube != gtubes:
        problems.append(f"spamd hit GTUBE {counts.gtube} times, expected {gtubes}")
    log = instance.log_text()[log_since:]
    for status in ("deferred", "bounced"):
        if f"status={status}" in log:
            problems.append(f"Postfix's log shows status={status}")
    return measured


def pass_line(m: Measured) -> str:
    status = "ok" if not m.problems else "PROBLEM: " + "; ".join(m.problems)
    listener = f", filterd listener {m.cpu['filterd']:.0f}" if "filterd" in m.cpu else ""
    return (
        f"round {m.round + 1} {m.target:>11}: {m.messages} messages in {m.seconds:.2f} s = "
        f"{m.rate:.1f} msg/s; CPU % of one core: spamd {m.cpu.get('spamd', 0):.0f}, Postfix + "
        f"commands {m.cpu.get('postfix', 0):.0f} ({m.cpu_ms_per_message('postfix'):.0f} ms per "
        f"message){listener}, other {m.cpu.get('other', 0):.0f}; spamd scanned {m.scans.scanned} "
        f"({m.scans.spam} spam, {m.scans.gtube} GTUBE); {status}"
    )


def summary(report: Report) -> str:
    options = report.options
    lines = [
        f"messages/second through pipe(8), spamd -m {options['children']}, "
        f"{options['concurrency']} commands at a time:"
    ]
    header = (
        f"{'target':<11} {'msg/s (median)':>14}  {'runs':<20} {'spamd CPU':>9} "
        f"{'Postfix+cmd CPU':>15} {'ms/msg':>6} {'listener CPU':>12} {'other CPU':>9}  "
        "spam/scanned"
    )
    lines += [header, "-" * len(header)]
    for target in TARGETS:
        passes = report.of(target)
        if not passes:
            continue

        def cpu(name: str, passes: list[Measured] = passes) -> str:
            return f"{statistics.median(m.cpu.get(name, 0.0) for m in passes):.0f} %"

        per_message = statistics.median(m.cpu_ms_per_message("postfix") for m in passes)
        runs = ", ".join(f"{m.rate:.1f}" for m in passes)
        spam = ", ".join(f"{m.scans.spam}/{m.scans.scanned}" for m in passes)
        listener = cpu("filterd") if target == "filterd-via" else "-"
        lines.append(
            f"{target:<11} {report.median(target) or 0.0:>14.1f}  {runs:<20} {cpu('spamd'):>9} "
            f"{cpu('postfix'):>15} {per_message:>6.0f} {listener:>12} {cpu('other'):>9}  {spam}"
        )
    spamc = report.median("spamc")
    for target, name in (("filterd", "filterd pipe"), ("filterd-via", "filterd pipe --via")):
        rate = report.median(target)
        if spamc and rate is not None:
            lines.append(f"\n{name} / spamc -e = {rate / spamc:.3f}")
    if report.discarded:
        lines.append(
            f"\n{len(report.discarded)} pass(es) repeated because other processes used more "
            f"than {OTHER_CPU_WARNING:.0f} % of a core: "
            + ", ".join(
                f"round {m.round + 1} {m.target} ({m.rate:.1f} msg/s, other "
                f"{m.cpu.get('other', 0):.0f} %)"
                for m in report.discarded
            )
        )
    lines += warning_lines(
        report.passes,
        lambda m: f"round {m.round + 1} {m.target}",
        lambda m: m.cpu,
        lambda m: m.problems,
    )
    lines.append(
        "\nCPU: % of one core over the measured pass; spamd = its process group (children "
        "included); Postfix+cmd = the target's Postfix with the commands pipe(8) ran (spamc or "
        "filterd, sendmail, postdrop), ms/msg = that per message; listener CPU = filterd-via's "
        "filterd LMTP listener; other = the rest of the machine, this script and the idle "
        "other Postfixes included."
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_pass_arguments(
        parser,
        targets=TARGETS,
        messages=60,
        warmup=6,
        children_help="spamd -m and the plugin's max_connections (default: cores; also "
        "--concurrency's)",
        concurrency_help="pipe(8) commands at a time (default: --children)",
    )
    args = parser.parse_args(argv)
    check_pass_arguments(
        parser, args, targets=TARGETS, max_concurrency=32, max_messages=2_000, max_warmup=200
    )
    return args


if __name__ == "__main__":
    sys.exit(main())
