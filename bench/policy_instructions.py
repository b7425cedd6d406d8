"""Instructions per warm policy request, counted by callgrind: a figure that does not move
with the machine's load, for comparing two versions of the policy path.

    .venv/bin/python bench/policy_instructions.py [--chain spf|greylist|empty|rules|rules-rate]
                                                  [--state sqlite|redis]
                                                  [--requests 1000] [--domains 100]

``--chain spf`` (the default):
The same setup as bench/policy_bench.py's filterd (loopback DNS server, the spf plugin as the
chain, one TCP connection; bench/filterd_bench/policy_support.py), but filterd runs under
``valgrind --tool=callgrind --instr-atstart=no``: 300 warm-up requests fill its DNS cache, then
instrumentation is switched on (``callgrind_control -i on``) for ``--requests`` warm requests
(each a check of its own: the result cache does not answer them) and off again. The figure is
the user-space instructions of the filterd process during those requests, divided by their
number. The kernel's work (sockets, epoll) is not counted, nor time spent waiting.

``--chain greylist``: bench/greylist_bench.py's filterd (the greylist plugin, SQLite state in the
temporary directory, ``delay = 1s``) and its requests (a triplet of its own each). 300 warm-up
triplets go through all three phases, then ``--requests`` other triplets are counted phase by
phase, each phase a figure of its own: ``new`` (greylisted), after the delay ``passing`` (the
first pass) and ``known`` (DUNNO). ``--state redis``: the greylist plugin's state in a private
redis-server (tests/support/redis.py, no persistence) instead. ``--chain empty``: the same
requests to a policy door with no plugin (every answer DUNNO): the door's own floor.

``--chain rules``: bench/greylist_bench.py's filterd-rules (the rules plugin, three rules, every
answer DUNNO) and the greylisting requests; ``--chain rules-rate``: its filterd-rules-rate (a
``rate(client_address/1000/3600/...)`` rule before them, the counters in SQLite in the temporary
directory). Two phases: ``first`` (a client of its own each: every rate counter created) and
``again`` (the same clients once more: every counter counted up).

Under callgrind filterd runs ~50 times slower: 1,000 requests take about half a minute. Every
process runs in its own process group and is stopped by its id, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filterd_bench.dns_child import DnsChild
from filterd_bench.greylist_support import (
    GREYLISTED,
    KNOWN,
    MAX_REQUESTS,
    PASSED,
    classify,
    greylist_chain,
    make_request,
    redis_installed,
    redis_state,
    rules_chain,
    running_redis,
    sqlite_state,
)
from filterd_bench.policy_support import (
    SPF_CHAIN,
    PolicyTcpSession,
    Request,
    build_zone,
    requests_over_domains,
    write_policy_door_config,
)
from filterd_bench.procs import BenchError, Processes, wait_for_listener
from filterd_bench.servers import filterd_binary

WARMUP = 300
START_TIMEOUT = 120.0  # filterd starts slowly under callgrind
GREYLIST_DELAY = 1  # seconds
GENERATOR = "bench/policy_instructions.py"
CHAINS = ("spf", "greylist", "empty", "rules", "rules-rate")
STATES = ("sqlite", "redis")
_TOTALS = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)


Phase = tuple[str, list[Request], str]  # name, requests, expected tag ("" for SPF: checked)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--chain", choices=CHAINS, default="spf", help="the chain measured")
    parser.add_argument(
        "--state", choices=STATES, default="sqlite", help="the greylist chain's state store"
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests counted (1..20000)")
    parser.add_argument("--domains", type=int, default=100, help="sender domains (2..1000)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the callgrind dumps (for callgrind_annotate)"
    )
    args = parser.parse_args(argv)
    if not (1 <= args.requests <= 20_000 and 2 <= args.domains <= 1000):
        parser.error("--requests must be 1..20000 and --domains 2..1000")
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(
                f"policy_instructions: {tool} is missing (apt-get install valgrind)",
                file=sys.stderr,
            )
            return 2
    if args.state == "redis" and not redis_installed():
        print("policy_instructions: redis-server is missing (deploy/install-system-packages.sh)",
              file=sys.stderr)  # fmt: skip
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="filterd-policy-instructions-"))
    procs = Processes()
    dns: DnsChild | None = None
    stack = contextlib.ExitStack()
    try:
        if args.chain == "spf":
            dns = DnsChild(build_zone(args.domains), workdir, ttl=3600)
            config = spf_config(workdir, dns.address)
            warm = [("warm-up", requests_over_domains(args.domains, WARMUP), "")]
            counted_spf = requests_over_domains(args.domains, WARMUP + args.requests)[WARMUP:]
            phases: list[Phase] = [("warm", counted_spf, "")]  # checks not seen
        elif args.chain in ("rules", "rules-rate"):
            config = rules_config(workdir, rate=args.chain == "rules-rate")
            warm = rules_phases(0, WARMUP)
            phases = rules_phases(WARMUP, args.requests)
        else:
            if args.state == "redis":
                redis = stack.enter_context(running_redis())
                state = redis_state(redis, prefix="instructions:")
            else:
                state = sqlite_state(workdir / "greylist.sqlite")
            config = greylist_config(workdir, state, empty=args.chain == "empty")
            warm = greylist_phases(0, WARMUP, empty=args.chain == "empty")
            phases = greylist_phases(WARMUP, args.requests, empty=args.chain == "empty")
        figures = measure(procs, workdir, config, warm, phases)
    except BenchError as exc:
        print(f"policy_instructions: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if dns is not None:
            dns.stop()
        stack.close()  # redis-server, by its PID
    if args.keep:
        print(f"callgrind dumps (one per phase) kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    for name, per_request in figures:
        print(
            f"{args.chain} ({args.state}) {name}: {per_request:,.0f} instructions per request "
            f"({args.requests} requests)"
        )
    return 0


def spf_config(workdir: Path, dns: str) -> tuple[Path, int]:
    config = workdir / "filterd.toml"
    chain = SPF_CHAIN.substitute(dns=dns)
    return config, write_policy_door_config(config, chain, generator=GENERATOR, plugin="spf")


def greylist_config(workdir: Path, state: str, *, empty: bool) -> tuple[Path, int]:
    config = workdir / "filterd.toml"
    if empty:
        return config, write_policy_door_config(config, "", generator=GENERATOR)
    chain = greylist_chain(state, GREYLIST_DELAY)
    return config, write_policy_door_config(config, chain, generator=GENERATOR, plugin="greylist")


def rules_config(workdir: Path, *, rate: bool) -> tuple[Path, int]:
    config = workdir / "filterd.toml"
    chain = rules_chain(workdir / "rates.sqlite" if rate else None)
    return config, write_policy_door_config(config, chain, generator=GENERATOR, plugin="rules")


def rules_phases(first: int, count: int) -> list[Phase]:
    """Two passes over clients ``first`` .. ``first + count - 1``: every answer DUNNO."""
    phases: list[Phase] = []
    for number, name in enumerate(("first", "again")):
        serial = number * MAX_REQUESTS + first
        jobs = [Request(make_request(i, serial + i - first).text, KNOWN)
                for i in range(first, first + count)]  # fmt: skip
        phases.append((name, jobs, KNOWN))
    return phases


def greylist_phases(first: int, count: int, *, empty: bool) -> list[Phase]:
    """The three passes over triplets ``first`` .. ``first + count - 1`` (each request with an
    ``instance`` of its own)."""
    phases: list[Phase] = []
    for number, (name, tag) in enumerate(
        (("new", GREYLISTED), ("passing", PASSED), ("known", KNOWN))
    ):
        serial = number * MAX_REQUESTS + first
        jobs = [Request(make_request(i, serial + i - first).text, tag)
                for i in range(first, first + count)]  # fmt: skip
        phases.append((name, jobs, KNOWN if empty else tag))
    return phases


def measure(
    procs: Processes,
    workdir: Path,
    config: tuple[Path, int],
    warm: list[Phase],
    phases: list[Phase],
) -> list[tuple[str, float]]:
    path, port = config
    out = workdir / "callgrind.out"
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}.%p",
        sys.executable,
        str(filterd_binary()),
        "run",
        "-c",
        str(path),
    ]
    child = procs.start("filterd-callgrind", argv, log=workdir / "filterd.log")
    wait_for_listener(child, port, START_TIMEOUT)
    session = PolicyTcpSession(port)
    figures: list[tuple[str, float]] = []
    try:
        last_pass = 0.0
        for name, jobs, tag in warm:
            wait_delay(name, last_pass)
            run(session, jobs, tag)
            last_pass = time.monotonic()
        for number, (name, jobs, tag) in enumerate(phases):
            wait_delay(name, last_pass)
            control(child.popen.pid, "-z")
            control(child.popen.pid, "-i", "on")
            run(session, jobs, tag)
            control(child.popen.pid, "-i", "off")
            control(child.popen.pid, "-d")
            last_pass = time.monotonic()
            figures.append((name, dumped(workdir, number + 1) / len(jobs)))
    finally:
        session.close()
    procs.stop(child)
    return figures


def wait_delay(phase: str, last_pass: float) -> None:
    """Before a ``passing`` pass, the greylisting delay (and a second) since the last pass."""
    if phase == "passing":
        time.sleep(max(0.0, last_pass + GREYLIST_DELAY + 1 - time.monotonic()))


def run(session: PolicyTcpSession, jobs: list[Request], tag: str) -> None:
    for job in jobs:
        if not tag:
            session.handle(job)
            continue
        answer = session.ask(job).encode()
        if classify(answer) != tag:
            raise BenchError(f"expected {tag}, got {answer[:120]!r}")


def dumped(workdir: Path, number: int) -> int:
    """The instruction total of dump ``number`` (callgrind_control -d: ``callgrind.out.PID.N``)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for dump in workdir.glob(f"callgrind.out.*.{number}"):
            totals = _TOTALS.findall(dump.read_text(errors="replace"))
            if totals:
                return sum(int(total) for total in totals)
        time.sleep(0.5)
    raise BenchError(f"callgrind wrote no dump {number} with instruction counts into {workdir}")


def control(pid: int, *options: str) -> None:
    result = subprocess.run(
        ["callgrind_control", *options, str(pid)], capture_output=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"callgrind_control {' '.join(options)} failed: {result.stderr!r}")


if __name__ == "__main__":
    sys.exit(main())
