"""What bench/spamd_bench.py and bench/policy_bench.py print about the machine and the code, and
their signal handling (SIGINT/SIGTERM/SIGHUP become KeyboardInterrupt, so that the ``finally``
that stops every child runs)."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import time
from importlib import metadata
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[2]
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def trap_signals() -> None:
    for signum in SIGNALS:
        signal.signal(signum, _interrupt)


def ignore_signals() -> None:
    """During the clean-up: a second Ctrl-C must not leave children behind."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def output(argv: list[str]) -> str | None:
    """A command's stripped standard output; None if it cannot run or fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def git_state() -> str:
    head = output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if head is None:
        return "not a git checkout"
    dirty = output(["git", "-C", str(REPO), "status", "--porcelain", "--", "filterd", "plugins"])
    return f"git {head}" + (", uncommitted changes in filterd/ or plugins/" if dirty else "")


def machine_info(extra: dict[str, str] | None = None) -> dict[str, str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    info = {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "filterd": f"{version('filterd')} ({git_state()})",
        "trio": version("trio"),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    info.update(extra or {})
    return info


def print_machine(machine: dict[str, str]) -> None:
    print("machine: " + ", ".join(f"{key} {value}" for key, value in machine.items()))
    print()


def idle_percent(seconds: float = 1.0) -> float:
    """The machine's idle share over ``seconds`` (from /proc/stat), to judge a run's noise."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 100.0 * (idle1 - idle0) / max(1, total1 - total0)
