"""Throughput of Postfix with filterd as its smtpd milter, beside the same Postfix without one.

    .venv/bin/python bench/milter_bench.py [--count 1000] [--sessions 10] [--size 4096]
                                           [--rounds 2] [--write bench/MILTER_RESULTS.md]
                                           [--null] [--rest 30]

Each run builds a private, loopback-only Postfix (tests/support/postfix.py), injects `--count`
messages of `--size` bytes with Postfix's own `smtp-source -d -s SESSIONS -m COUNT -l SIZE`
into its smtpd, and measures from the first connection until every message is in the Maildir
and the queue is empty: msg/s end to end. The "milter" variant adds filterd as `smtpd_milters`
(deploy/postfix/main.cf.milter.snippet) with a header_checks chain holding the seed rules
`/^Received: .*/ IGNORE` and `/^User-Agent: .*/ IGNORE`; "plain" is the same Postfix with no
milter. The variants alternate (plain, milter, plain, milter, ...), `--rounds` times each.
`--null` adds a third variant after each milter run: a milter that does nothing (pymilter,
negotiated as filterd negotiates for that chain: `protocol_flags({"on_message"})`), which shows
what any milter hosted by pymilter costs Postfix on this machine — filterd's floor.

The milter's cost = 1 - milter_rate / plain_rate (the medians over the rounds); the target is
a cost below 30 %. The report also gives each round's own cost (milter beside the plain run
just before it: slow drifts of the shared machine cancel out), filterd's CPU per message
(/proc/PID/stat: less sensitive to the machine's noise than msg/s) and the whole machine's CPU
per message. Every child (Postfix's master and its daemons, filterd) runs in its own process
group and is stopped by PID, also on failure; every wait is bounded.

`--rest` seconds of quiet come before every run. On this VM a run started at once after
another one is slower than the same run after a quiet minute: plain Postfix gets 550-700
msg/s right after a run and 780-1,180 msg/s after 30-60 s of quiet, with about 1.5 times
less system (kernel) time per message, and the milter variant moves the same way (420-470
against 500-580 msg/s). A CPU-bound loop shows no such slowdown. The likely cause is the
file system: ext4 mounted with `discard`, so every deleted file (each queue file after
delivery, the thousands of files of the previous run's instance) is trimmed on the virtual
disk by kernel work that goes on after the run that caused it. Without the rest, whichever
variant follows a quiet moment wins, which is what made earlier reports swing between 24 %
and 48 %.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
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

from tests.support.filterd_proc import FilterdProcess  # noqa: E402
from tests.support.postfix import (  # noqa: E402
    DEPLOY_DIR,
    SMTP_SOURCE,
    PostfixInstance,
    free_port,
    make_base_dir,
)

SENDER = "bench@example.net"
RECIPIENT = "sink@example.org"
WARMUP = 20  # messages through each fresh instance before the clock starts
TARGET_COST = 0.30
SEED_RULES = ("/^Received: .*/ IGNORE", "/^User-Agent: .*/ IGNORE")


@dataclass(frozen=True)
class Run:
    variant: str  # "plain" | "milter" | "null"
    round: int
    count: int
    inject_seconds: float  # smtp-source until its last session ended
    total_seconds: float  # until all delivered and the queue is empty
    filterd_cpu: float | None = None  # the milter process's CPU seconds (user + system)
    busy: float = 0.0  # share of all CPUs busy (whole machine, /proc/stat) while measuring

    @property
    def rate(self) -> float:
        return self.count / self.total_seconds

    @property
    def accept_rate(self) -> float:
        return self.count / self.inject_seconds

    @property
    def machine_ms(self) -> float:
        """CPU milliseconds of the whole machine (all CPUs) per message."""
        cpus = os.cpu_count() or 1
        return 1000 * self.busy * cpus * self.total_seconds / self.count


def milter_main_cf(port: int) -> dict[str, str]:
    """The deploy snippet's settings with its port 10029 replaced."""
    text = (DEPLOY_DIR / "main.cf.milter.snippet").read_text()
    settings = dict(re.findall(r"^([a-z_]+) = (.*)$", text, re.MULTILINE))
    return {name: value.replace("10029", str(port)) for name, value in settings.items()}


def filterd_milter_config(port: int) -> str:
    rules = ", ".join(f"'{rule}'" for rule in SEED_RULES)
    return f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "milter"
[delivery]
method = "maildir"
[[chain]]
plugin = "header_checks"
config = {{ rules = [{rules}] }}
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (/proc/PID/stat fields 14 and 15)."""
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


def serve_null_milter(port: int) -> None:
    """The "null" variant's milter (run as `milter_bench.py --serve-null PORT`): answers
    CONTINUE, or nothing where the step was negotiated without a reply, and does nothing else.
    libmilter handles SIGTERM itself (it runs in the main thread here)."""
    import Milter

    from filterd.protocols.milter_map import CONTINUE, NOREPLY, protocol_flags

    wanted = protocol_flags({"on_message"})

    class NullMilter(Milter.Base):  # type: ignore[misc]
        def negotiate(self, opts: list[int]) -> int:
            self._actions = opts[0]
            self._protocol = opts[1] = opts[1] & wanted
            opts[2] = opts[3] = 0
            return CONTINUE

        def _quiet(self, bit: int) -> int:
            return NOREPLY if self._protocol & bit else CONTINUE

        def connect(self, hostname: str, family: object, hostaddr: object) -> int:
            return CONTINUE

        def hello(self, name: str) -> int:
            return self._quiet(Milter.P_NR_HELO)

        def envfrom(self, sender: str, *params: str) -> int:
            return self._quiet(Milter.P_NR_MAIL)

        def envrcpt(self, rcpt: str, *params: str) -> int:
            return self._quiet(Milter.P_NR_RCPT)

        def data(self) -> int:
            return CONTINUE

        def header(self, name: str, value: str) -> int:
            return self._quiet(Milter.P_NR_HDR)

        def eoh(self) -> int:
            return self._quiet(Milter.P_NR_EOH)

        def body(self, chunk: bytes) -> int:
            return self._quiet(Milter.P_NR_BODY)

        def eom(self) -> int:
            return CONTINUE

    Milter.factory = NullMilter
    Milter.runmilter("null", f"inet:{port}@127.0.0.1", 600)


def start_null_milter(port: int, timeout: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-null", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
            return proc
        if proc.poll() is not None or time.monotonic() >= deadline:
            stop_process(proc)
            raise RuntimeError(f"the null milter did not listen on port {port}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to its process group; bounded."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def one_run(variant: str, number: int, args: argparse.Namespace, keep: bool) -> Run:
    """Fresh Postfix (+ filterd for "milter", the null milter for "null"), warm up, then
    measure `args.count` messages."""
    with ExitStack() as stack:
        extra: dict[str, str] = {}
        filterd: FilterdProcess | None = None
        measured: int | None = None  # the milter process whose CPU is measured
        if variant == "null":
            port = free_port()
            null = start_null_milter(port, args.timeout)
            stack.callback(stop_process, null)
            measured = null.pid
            extra = milter_main_cf(port)
        if variant == "milter":
            port = free_port()
            workdir = Path(tempfile.mkdtemp(prefix="filterd-milter-bench-"))
            filterd = FilterdProcess(filterd_milter_config(port), workdir)
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            stack.callback(filterd.stop)
            filterd.start()
            measured = filterd.pid
            extra = milter_main_cf(port)
        postfix = PostfixInstance(make_base_dir(), main_cf_extra=extra)
        if not keep:
            stack.callback(shutil.rmtree, postfix.base_dir, ignore_errors=True)
        stack.callback(postfix.stop)
        postfix.start()

        smtp_source(postfix, WARMUP, min(args.sessions, WARMUP), args.size, args.timeout)
        wait_delivered(postfix, WARMUP, args.timeout)

        cpu_before = cpu_seconds(measured) if measured is not None else 0.0
        busy_before, idle_before = machine_busy_idle()
        start = time.monotonic()
        smtp_source(postfix, args.count, args.sessions, args.size, args.timeout)
        injected = time.monotonic()
        wait_delivered(postfix, WARMUP + args.count, args.timeout)
        done = time.monotonic()
        busy_after, idle_after = machine_busy_idle()
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
        refused = re.findall(r"milter-reject|reject:", postfix.log_text())
        if refused:
            raise RuntimeError(f"{len(refused)} refusals in the Postfix log")
        return Run(variant, number, args.count, injected - start, done - start, cpu, busy_share)


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


def per_message_ms(run: Run) -> str:
    return "-" if run.filterd_cpu is None else f"{1000 * run.filterd_cpu / run.count:.2f}"


def paired_costs(runs: list[Run]) -> list[float]:
    """Each round's cost: its milter run beside its plain run (run just before it)."""
    plain = {r.round: r.rate for r in runs if r.variant == "plain"}
    return [1 - r.rate / plain[r.round] for r in runs if r.variant == "milter"]


def report(runs: list[Run], args: argparse.Namespace, command: str) -> str:
    plain = statistics.median(r.rate for r in runs if r.variant == "plain")
    milter = statistics.median(r.rate for r in runs if r.variant == "milter")
    cost = 1 - milter / plain
    met = "met" if cost < TARGET_COST else "NOT met"
    paired = paired_costs(runs)
    filterd_ms = statistics.median(
        1000 * r.filterd_cpu / r.count
        for r in runs
        if r.variant == "milter" and r.filterd_cpu is not None
    )
    machine_ms = {
        variant: statistics.median(r.machine_ms for r in runs if r.variant == variant)
        for variant in ("plain", "milter")
    }
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# Milter benchmark: Postfix with filterd as smtpd milter vs. Postfix alone",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}",
        "",
        f"Load: `smtp-source -d -s {args.sessions} -m {args.count} -l {args.size}` into a private"
        " loopback Postfix (tests/support/postfix.py), delivery by virtual(8) into one Maildir;"
        f" {WARMUP} warm-up messages per fresh instance first, after {args.rest:g} s of quiet"
        " (`--rest`). Clock: first connection until"
        " all messages are delivered and the queue is empty. filterd's chain: header_checks"
        " with " + ", ".join(f"`{rule}`" for rule in SEED_RULES) + ".",
        "",
        f"Load average when the report was written: {load}.",
        "",
        "| run | variant | accepted msg/s (smtp-source) | delivered msg/s (end to end)"
        " | milter process CPU ms/msg | all CPUs busy | machine CPU ms/msg |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {r.round} | {r.variant} | {r.accept_rate:.1f} | {r.rate:.1f}"
        f" ({r.total_seconds:.2f} s) | {per_message_ms(r)} | {r.busy:.0%} | {r.machine_ms:.2f} |"
        for r in runs
    )
    lines += [
        "",
        f"Median end-to-end rate: plain {plain:.1f} msg/s, milter {milter:.1f} msg/s.",
        "",
        f"Milter cost = 1 - milter/plain = **{cost:.1%}** (target < {TARGET_COST:.0%}): **{met}**.",
        "",
        "Each round's own cost (milter beside the plain run before it): "
        + ", ".join(f"{c:.1%}" for c in paired)
        + f" (median {statistics.median(paired):.1%}).",
        "",
        f"Median CPU per message: filterd {filterd_ms:.2f} ms; whole machine"
        f" {machine_ms['plain']:.2f} ms plain, {machine_ms['milter']:.2f} ms with the milter"
        f" (+{machine_ms['milter'] - machine_ms['plain']:.2f} ms, of which filterd"
        f" {filterd_ms:.2f}).",
        "",
    ]
    nulls = [r for r in runs if r.variant == "null"]
    if nulls:
        null = statistics.median(r.rate for r in nulls)
        null_ms = statistics.median(1000 * (r.filterd_cpu or 0.0) / r.count for r in nulls)
        lines += [
            f"Do-nothing milter (pymilter, filterd's negotiation): median {null:.1f} msg/s,"
            f" cost {1 - null / plain:.1%}; its own CPU {null_ms:.2f} ms/msg.",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="messages per run")
    parser.add_argument("--sessions", type=int, default=10, help="parallel SMTP sessions")
    parser.add_argument("--size", type=int, default=4096, help="message size in bytes")
    parser.add_argument("--rounds", type=int, default=2, help="runs per variant")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of every wait (s)")
    parser.add_argument("--write", type=Path, help="also write the Markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the Postfix directories")
    parser.add_argument(
        "--null", action="store_true", help="also run a do-nothing milter (filterd's floor)"
    )
    parser.add_argument(
        "--rest",
        type=float,
        default=30.0,
        help="seconds of quiet before each run (default 30; see the module's docstring)",
    )
    parser.add_argument("--serve-null", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_null is not None:
        serve_null_milter(args.serve_null)
        return 0
    if not (1 <= args.count <= 100_000 and 1 <= args.rounds <= 10 and 1 <= args.sessions <= 100):
        parser.error("count 1..100000, rounds 1..10, sessions 1..100")
    if not 0 <= args.rest <= 600:
        parser.error("--rest must be 0..600 seconds")
    command = " ".join([".venv/bin/python", "bench/milter_bench.py", *sys.argv[1:]])
    runs: list[Run] = []
    for number in range(1, args.rounds + 1):
        for variant in ("plain", "milter", "null") if args.null else ("plain", "milter"):
            time.sleep(args.rest)  # the previous run's deleted files are discarded meanwhile
            run = one_run(variant, number, args, args.keep)
            print(
                f"round {number} {variant:6}: {run.rate:7.1f} msg/s delivered"
                f" ({run.total_seconds:.2f} s), {run.accept_rate:7.1f} msg/s accepted,"
                f" milter CPU {per_message_ms(run)} ms/msg, CPUs busy {run.busy:.0%}",
                flush=True,
            )
            runs.append(run)
    text = report(runs, args, command)
    print(text)
    if args.write is not None:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
