"""Instructions per warm SPF policy request, counted by callgrind: a figure that does not move
with the machine's load, for comparing two versions of the policy path.

    .venv/bin/python bench/policy_instructions.py [--requests 1000] [--domains 100]

The same setup as bench/policy_bench.py's filterd (loopback DNS server, the spf plugin as the
chain, one TCP connection; bench/filterd_bench/policy_support.py), but filterd runs under
``valgrind --tool=callgrind --instr-atstart=no``: 300 warm-up requests fill its DNS cache, then
instrumentation is switched on (``callgrind_control -i on``) for ``--requests`` warm requests
(each a check of its own: the result cache does not answer them) and off again. The figure is
the user-space instructions of the filterd process during those requests, divided by their
number. The kernel's work (sockets, epoll) is not counted, nor time spent waiting.

Under callgrind filterd runs ~50 times slower: 1,000 requests take about half a minute. Every
process runs in its own process group and is stopped by its id, also on failure.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filterd_bench.dns_child import DnsChild
from filterd_bench.policy_support import (
    FILTERD_POLICY,
    PolicyTcpSession,
    build_zone,
    requests_over_domains,
    wait_for_listener,
)
from filterd_bench.procs import BenchError, Processes, free_port
from filterd_bench.servers import filterd_binary

WARMUP = 300
START_TIMEOUT = 120.0  # filterd starts slowly under callgrind
_TOTALS = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000, help="requests counted (1..20000)")
    parser.add_argument("--domains", type=int, default=100, help="sender domains (2..1000)")
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
    workdir = Path(tempfile.mkdtemp(prefix="filterd-policy-instructions-"))
    procs = Processes()
    dns: DnsChild | None = None
    try:
        dns = DnsChild(build_zone(args.domains), workdir, ttl=3600)
        per_request = measure(procs, workdir, dns.address, args.requests, args.domains)
    except BenchError as exc:
        print(f"policy_instructions: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if dns is not None:
            dns.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"{per_request:,.0f} instructions per warm request ({args.requests} requests)")
    return 0


def measure(procs: Processes, workdir: Path, dns: str, requests: int, domains: int) -> float:
    port = free_port()
    config = workdir / "filterd.toml"
    config.write_text(
        FILTERD_POLICY.substitute(
            port=port, log_level="warning", maildir=workdir / "maildir", dns=dns, processes=1
        )
    )
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
        str(config),
    ]
    child = procs.start("filterd-callgrind", argv, log=workdir / "filterd.log")
    wait_for_listener(child, port, START_TIMEOUT)
    session = PolicyTcpSession(port)
    try:
        for request in requests_over_domains(domains, WARMUP):
            session.handle(request)
        control(child.popen.pid, "-i", "on")
        counted = requests_over_domains(domains, WARMUP + requests)[WARMUP:]  # checks not seen
        for request in counted:
            session.handle(request)
        control(child.popen.pid, "-i", "off")
        control(child.popen.pid, "-d")
    finally:
        session.close()
    procs.stop(child)
    total = 0
    deadline = time.monotonic() + 30
    while not total and time.monotonic() < deadline:
        total = sum(
            int(match)
            for dump in workdir.glob("callgrind.out.*")
            for match in _TOTALS.findall(dump.read_text(errors="replace"))
        )
        if not total:
            time.sleep(0.5)
    if not total:
        raise BenchError(f"callgrind wrote no instruction counts into {workdir}")
    return total / requests


def control(pid: int, *options: str) -> None:
    result = subprocess.run(
        ["callgrind_control", *options, str(pid)], capture_output=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"callgrind_control {' '.join(options)} failed: {result.stderr!r}")


if __name__ == "__main__":
    sys.exit(main())
