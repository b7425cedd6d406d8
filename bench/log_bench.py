"""The CPU a relayed message's log lines cost filterd, per destination and level.

    .venv/bin/python bench/log_bench.py [--messages N]

For each message, the five lines the SMTP listener and the relay write at ``info`` (connect,
``client=``, ``from=``, ``to=... status=sent``, disconnect), made and written as filterd makes
and writes them (``filterd.maillog``): to a file (``destination = "stderr"``), and to a syslog
and a journal socket, each read by a separate process so that the receiver's work is not
counted (a line that finds the receiver's queue full waits for room, which is not CPU time).
The figure is CPU time (``time.process_time``), the best of 5 passes, in µs per
message; at ``warning`` the same calls write nothing. A microbenchmark: it tells the log
path's own cost, which bench/run.py's f-p1 / f-p1-warn comparison shows as a share of a whole
message when the machine is quiet. Everything it makes is in a temporary directory, removed at
the end, and its receiver is stopped by its pid.

``--instructions``: user-space instructions per message under callgrind instead, to a file, at
``info`` and ``warning``, for the five lines and for the three of a message on a persistent
connection (``client=``, ``from=``, ``to=``): a count the machine's load does not move.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filterd.config.schema import LogConfig
from filterd.maillog import MailLog, queue_id_var, setup_logging
from filterd.maillog.lines import client_line, delivery_line, envelope_line, timing
from filterd.model.reply import Reply

PASSES = 5
RECEIVER = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1])
while True:
    sock.recv(65536)
"""


def one_message(connection: bool = True) -> Callable[[], None]:
    """The log calls of one relayed message, as the SMTP listener and the relay make them;
    ``connection`` False: without connect and disconnect (a message on a persistent
    connection, as Postfix's content_filter and bench/log_cpu.py send them)."""
    smtpd, smtp = MailLog("smtpd"), MailLog("smtp")
    reply = Reply(250, "2.0.0", "Ok: queued as 4F2A81B3C")
    peer = "unknown[127.0.0.1]"

    def run() -> None:
        if connection and smtpd.enabled_for_info():
            smtpd.connect(peer)
        queue_id_var.set("CFDE4BD9BE")
        if smtpd.enabled_for_info():
            smtpd.line(client_line(peer, "4F2A81B3C", "mx.example[192.0.2.9]"))
        if smtp.enabled_for_info():
            smtp.line(envelope_line("alice@example.net", 4259, 1))
        if smtp.enabled_for_info():
            times = timing(100.0, 100.002, 100.003)
            line = delivery_line("b@example.org", "127.0.0.1[127.0.0.1]:10026", times, reply)
            smtp.line(line)
        queue_id_var.set("NOQUEUE")
        if connection and smtpd.enabled_for_info():
            smtpd.disconnect(peer)

    return run


def per_message(messages: int) -> float:
    """µs of CPU per message, the best of ``PASSES`` (a wait for room in a receiver's queue
    is not CPU time)."""
    run = one_message()
    best = float("inf")
    for _ in range(PASSES):
        started = time.process_time()
        for _ in range(messages):
            run()
        best = min(best, (time.process_time() - started) / messages)
    return best * 1e6


@contextlib.contextmanager
def receiver(path: Path) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(path)])
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.01)
        yield
    finally:
        proc.kill()
        proc.wait()


_TOTAL = re.compile(r"^summary: (\d+)", re.MULTILINE)


SHAPES = {"per-message": True, "persistent": False}
"""The lines of a message: with connect and disconnect (a connection per message), without."""


def count_instructions(messages: int) -> None:
    """Print the user-space instructions a message's log calls cost at each level, counted
    by callgrind: the difference between a run of ``3 * messages`` messages and one of
    ``messages``, so that the start-up cancels out. The same code gives the same count
    (within a few dozen instructions) on a loaded machine, unlike the CPU time. Both shapes:
    five lines per message (a connection per message) and three (a persistent connection)."""
    with tempfile.TemporaryDirectory(prefix="logbench-") as work:
        for shape, connection in SHAPES.items():
            figures = {}
            for level in ("info", "warning"):
                totals = []
                for count in (messages, 3 * messages):
                    out = Path(work) / f"callgrind-{shape}-{level}-{count}.out"
                    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
                    argv += [sys.executable, __file__, "--run", level, str(count)]
                    argv += ["--shape", shape]
                    subprocess.run(argv, check=True, capture_output=True, timeout=900)
                    found = _TOTAL.search(out.read_text())
                    if found is None:
                        raise RuntimeError(f"callgrind wrote no total into {out}")
                    totals.append(int(found[1]))
                figures[level] = (totals[1] - totals[0]) / (2 * messages)
                lines = 5 if connection else 3
                print(
                    f"{shape:11s} ({lines} lines) {level:8s} {figures[level]:9,.0f}"
                    " instructions/message",
                    flush=True,
                )
            print(f"{shape:11s} info - warning {figures['info'] - figures['warning']:13,.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000, help="per pass (default 50000)")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind"
    )
    parser.add_argument("--run", nargs=2, metavar=("LEVEL", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--shape", choices=SHAPES, default="per-message", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is not None:  # the process callgrind counts
        with open(os.devnull, "w") as out:
            setup_logging(args.run[0], out)
            run = one_message(SHAPES[args.shape])
            for _ in range(int(args.run[1])):
                run()
        return 0
    if args.instructions:
        count_instructions(min(args.messages, 5_000))
        return 0
    work = Path(tempfile.mkdtemp(prefix="logbench-"))
    try:
        with (work / "stderr.log").open("w") as out:
            for level in ("info", "warning"):
                setup_logging(level, out)
                print(f"stderr (a file)  {level:8s} {per_message(args.messages):6.2f} µs/message")
        diverted = (work / "diverted.log").open("w")  # lines a socket could not take
        for destination in ("syslog", "journal"):
            path = work / f"{destination}.sock"
            with receiver(path):
                settings = LogConfig(destination=destination, socket=path)
                setup_logging(settings, diverted)
                figure = per_message(args.messages // 5)
                print(f"{destination:16s} info     {figure:6.2f} µs/message")
        setup_logging("warning", diverted)
        diverted.close()
        lost = sum(1 for line in (work / "diverted.log").open() if "filterd/smtp" in line)
        if lost:
            print(f"(the receivers fell behind: {lost} lines went to stderr instead)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
