"""The do-nothing milters of bench/milter_bench.py, which show the floor under filterd's milter:

- **C** (``bench/null_milter.c`` on Debian's libmilter): built here with gcc into
  ``bench/.build/`` (ignored by git) when missing or older than its source;
- **pymilter** (``serve_null_pymilter``, run as ``milter_bench.py --serve-null PORT``): the
  library filterd's milter is hosted by.

Both negotiate what filterd negotiates for the benchmark's chain
(``filterd.protocols.milter_map.protocol_flags`` of the chain's stages) and answer every step
CONTINUE, or nothing where it was negotiated without a reply. Each runs in its own process
group, is stopped by that group's id, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

from filterd_bench.procs import stop_group

BENCH_DIR = Path(__file__).resolve().parent.parent
C_SOURCE = BENCH_DIR / "null_milter.c"
BUILD_DIR = BENCH_DIR / ".build"  # not in git
C_BINARY = BUILD_DIR / "null_milter"
MFAPI_H = Path("/usr/include/libmilter/mfapi.h")
GCC_TIMEOUT = 120.0
STOP_GRACE = 10.0


class MilterError(Exception):
    """A do-nothing milter cannot be built or started."""


def protocol_bits(stages: Collection[str]) -> int:
    """The SMFIP_* bits filterd asks for when its chain implements ``stages``."""
    from filterd.protocols.milter_map import protocol_flags

    return protocol_flags(stages)


def build_c_milter() -> Path:
    """``gcc -O2 -o bench/.build/null_milter bench/null_milter.c -lmilter``, unless it is
    up to date; the binary."""
    if C_BINARY.exists() and C_BINARY.stat().st_mtime >= C_SOURCE.stat().st_mtime:
        return C_BINARY
    gcc = shutil.which("gcc")
    if gcc is None:
        raise MilterError("gcc is not on PATH (Debian package gcc)")
    if not MFAPI_H.exists():
        raise MilterError(f"{MFAPI_H} is missing (Debian package libmilter-dev)")
    BUILD_DIR.mkdir(exist_ok=True)
    argv = [gcc, "-O2", "-Wall", "-o", str(C_BINARY), str(C_SOURCE), "-lmilter", "-lpthread"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=GCC_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise MilterError(f"gcc took over {GCC_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise MilterError(f"gcc failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return C_BINARY


def start_c_milter(port: int, protocol: int, log: Path, timeout: float) -> subprocess.Popen[bytes]:
    binary = build_c_milter()
    argv = [str(binary), f"inet:{port}@127.0.0.1", str(protocol)]
    return _start(argv, port, log, timeout, "the C do-nothing milter")


def start_pymilter(script: Path, port: int, log: Path, timeout: float) -> subprocess.Popen[bytes]:
    """``script --serve-null PORT``: the pymilter do-nothing milter (``serve_null_pymilter``)."""
    argv = [sys.executable, str(script), "--serve-null", str(port)]
    return _start(argv, port, log, timeout, "the pymilter do-nothing milter")


def _start(
    argv: list[str], port: int, log: Path, timeout: float, what: str
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (output to ``log``) and wait until it accepts on ``port``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
            return proc
        if proc.poll() is not None or time.monotonic() >= deadline:
            stop_group(proc, STOP_GRACE)
            output = log.read_text(errors="replace").strip()[-2000:]
            raise MilterError(f"{what} did not listen on port {port}: {output}")
        time.sleep(0.05)


def serve_null_pymilter(port: int, stages: Collection[str]) -> None:
    """The pymilter do-nothing milter, in this process until SIGTERM (libmilter handles it:
    this runs in the main thread)."""
    import Milter

    from filterd.protocols.milter_map import CONTINUE, NOREPLY

    wanted = protocol_bits(stages)

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
