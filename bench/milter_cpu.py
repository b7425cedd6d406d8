"""filterd's milter door without libmilter and Postfix: its own CPU per message, and where it goes.

    .venv/bin/python bench/milter_cpu.py [--count 5000] [--level info] [--chain seed|empty]
                                         [--connections 10] [--metrics] [--profile FILE]
                                         [--instructions]

Drives ``FilterdMilter``'s callbacks exactly as libmilter calls them for a message of
bench/milter_bench.py's shape (CONNECT once per connection, then per message MAIL, RCPT, DATA,
the headers, one body chunk, end of message), from ``--connections`` threads, with trio on the
main thread as `filterd run` has it, at production settings (log ``info`` to a file, the seed
chain). What libmilter and pymilter's C code cost is not here: bench/milter_bench.py measures
the whole. Prints CPU per message (process CPU: every thread, trio's included). Load on the
machine moves this figure far less than msg/s, but measure on a quiet machine all the same.

``--metrics``: record the metrics in memory as `filterd run` does (``Recording``; without it
nothing is recorded). ``--profile FILE``: cProfile of the driving threads and of trio's thread,
merged, written to FILE (read it with ``python -m pstats FILE``) and its top lines printed.

``--instructions``: the same run under ``valgrind --tool=callgrind --instr-atstart=no``, counted
only while the messages are driven (``callgrind_control -i on`` / ``off`` around them, warm-up
and start-up excluded): user-space instructions per message, every thread, a figure that does
not move with the machine's load (use ``--count 2000`` or so: callgrind runs ~50x slower).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import trio  # noqa: E402
from filterd_bench.chains import chain_toml  # noqa: E402

from filterd.chain.build import build_chain  # noqa: E402
from filterd.config.load import parse_config  # noqa: E402
from filterd.frontdoors.milter.bridge import MilterBridge, MilterSettings  # noqa: E402
from filterd.frontdoors.milter.callbacks import FilterdMilter  # noqa: E402
from filterd.frontdoors.shutdown import Shutdown  # noqa: E402
from filterd.maillog import setup_logging  # noqa: E402
from filterd.model import metrics  # noqa: E402
from filterd.runtime.recording import Recording  # noqa: E402

OFFERED_ACTIONS = 0x1FF
OFFERED_PROTOCOL = 0x1FFFFF
CONNECT = {
    "j": "mta.example.net",
    "{daemon_name}": "smtpd",
    "{client_addr}": "127.0.0.1",
    "{client_name}": "localhost",
    "{client_port}": "40123",
    "v": "Postfix 3.7.11",
}
MAIL = {"{mail_addr}": "bench@example.net", "{mail_mailer}": "smtp"}
RCPT = {"{rcpt_addr}": "bench@example.org", "{rcpt_mailer}": "virtual"}
# Postfix's own headers and smtp-source's, as the milter sees them (4 KiB message).
HEADERS = [
    ("Received", b"from localhost (localhost [127.0.0.1])\n\tby mta.example.net (Postfix)"),
    ("From", b"<bench@example.net>"),
    ("To", b"<bench@example.org>"),
    ("Date", b"Thu,  3 Dec 2026 11:00:00 +0000 (UTC)"),
    ("Message-Id", b"<20261203110000.0001@mta.example.net>"),
]
BODY = (b"La de da de da 1.\r\n" * 216)[:4096]


class Context:
    """What pymilter's ``milterContext`` offers a ``Milter.Base``."""

    def __init__(self) -> None:
        self.macros: dict[str, str] = {}
        self.priv: object = None
        # a C call, as pymilter's (smfi_getsymval): no Python frame of the harness per macro
        self.getsymval = self.macros.get

    def setpriv(self, priv: object) -> None:
        self.priv = priv

    def getpriv(self) -> object:
        return self.priv

    def setreply(self, rcode: str, xcode: str, *lines: str) -> None:
        pass

    def chgheader(self, name: str, index: int, value: str) -> None:
        pass

    def addheader(self, name: str, value: str, index: int) -> None:
        pass


def drive(bridge: MilterBridge, count: int, queue_ids: int) -> None:
    ctx = Context()
    milter = FilterdMilter(bridge)
    milter._setctx(ctx)
    milter.negotiate([OFFERED_ACTIONS, OFFERED_PROTOCOL, 0, 0])
    ctx.macros.update(CONNECT)
    milter.connect("localhost", 4, ("127.0.0.1", 40123))
    for n in range(count):
        ctx.macros.update(MAIL)
        milter.envfrom_bytes(b"<bench@example.net>")
        ctx.macros.update(RCPT)
        milter.envrcpt_bytes(b"<bench@example.org>")
        ctx.macros["i"] = f"{queue_ids + n:011X}"
        milter.data()
        for name, value in HEADERS:
            milter.header(name, value)
        milter.body(BODY)
        milter.eom()
    milter.close()


async def run(args: argparse.Namespace, log_path: Path) -> tuple[float, float]:
    config = parse_config(
        f'[log]\nlevel = "{args.level}"\n'
        '[[listen]]\naddress = "127.0.0.1:10029"\nprotocol = "milter"\n' + chain_toml(args.chain)
    )
    chain = build_chain(config)
    await chain.start()
    listen = config.listen[0]
    bridge = MilterBridge(
        chain,
        MilterSettings.from_config(listen, config.limits),
        Shutdown(),
        trio.lowlevel.current_trio_token(),
    )
    per_thread = args.count // args.connections
    profiles: list[cProfile.Profile] = []

    def worker(index: int) -> None:
        if args.profile:
            profile = cProfile.Profile()
            profiles.append(profile)
            profile.enable()
        drive(bridge, per_thread, index * per_thread)
        if args.profile:
            profile.disable()

    await trio.to_thread.run_sync(drive, bridge, 50, 10**9)  # warm up
    trio_profile = cProfile.Profile() if args.profile else None
    if trio_profile is not None:
        trio_profile.enable()
    if args.callgrind_child:
        callgrind_control("-i", "on")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(args.connections):  # each on a thread, as libmilter's connections
            nursery.start_soon(partial(trio.to_thread.run_sync, worker, index))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if args.callgrind_child:
        callgrind_control("-i", "off")
    if trio_profile is not None:
        trio_profile.disable()
        stats = pstats.Stats(trio_profile)
        for profile in profiles:
            stats.add(profile)
        stats.dump_stats(args.profile)
        stats.sort_stats("tottime").print_stats(35)
    await chain.stop()
    return cpu / (per_thread * args.connections), wall


def callgrind_control(*options: str) -> None:
    """Tell the callgrind this process runs under (``--instructions``) to count or not."""
    subprocess.run(
        ["callgrind_control", *options, str(os.getpid())],
        capture_output=True,
        timeout=120,
        check=True,
    )


def count_instructions(argv: list[str], args: argparse.Namespace) -> int:
    """Run this script again under callgrind (``--instructions``); print its figure."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"milter_cpu: {tool} is missing (apt-get install valgrind)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="filterd-milter-instructions-") as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            *[a for a in argv if a != "--instructions"],
            "--callgrind-child",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            print(result.stdout, result.stderr, sep="\n", file=sys.stderr)
            return result.returncode
        totals = re.findall(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if not totals:
        print("milter_cpu: callgrind wrote no instruction count", file=sys.stderr)
        return 1
    messages = args.count // args.connections * args.connections
    print(result.stdout.strip())
    print(
        f"milter door, chain {args.chain}, log {args.level}"
        f"{', metrics' if args.metrics else ''}: "
        f"{int(totals[-1]) / messages:,.0f} instructions per message "
        f"({messages} messages, {args.connections} connections, callgrind)"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--level", default="info")
    parser.add_argument("--chain", choices=["seed", "empty"], default="seed")
    parser.add_argument("--metrics", action="store_true", help="record metrics (Recording)")
    parser.add_argument("--profile", default="")
    parser.add_argument("--show-log", action="store_true")
    parser.add_argument("--instructions", action="store_true", help="count under callgrind")
    parser.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instructions:
        return count_instructions(sys.argv[1:], args)
    if args.metrics:
        metrics.install(Recording())
    with tempfile.TemporaryDirectory(prefix="filterd-milter-cpu-") as tmp:
        log_path = Path(tmp) / "filterd.log"
        with open(log_path, "w", encoding="utf-8") as log_file:
            setup_logging(args.level, log_file)
            per_message, wall = trio.run(run, args, log_path)
        text = log_path.read_text(encoding="utf-8")
        if args.show_log:
            print(text[:3000])
        lines = text.count("\n")
    print(
        f"milter door, chain {args.chain}, log {args.level}"
        f"{', metrics' if args.metrics else ''}: "
        f"{per_message * 1000:.3f} ms CPU per message "
        f"({args.count} messages, {args.connections} connections, {wall:.2f} s, "
        f"{lines} log lines, pid {os.getpid()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
