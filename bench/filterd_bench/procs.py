"""Child processes: each in its own process group, stopped by that group's id, never by name.

Also the /proc readings the benchmark reports: memory (VmRSS, VmHWM) and CPU time of a process
group (a Haraka cluster is a master and its workers, all in one group).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Something the benchmark cannot go on without (a server that does not start, ...)."""


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Every long-running child of one benchmark run; ``stop_all()`` belongs in a ``finally``."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(
        self, name: str, argv: list[str], *, log: Path, env: dict[str, str] | None = None
    ) -> Child:
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
                env=env,
            )
        child = Child(name, popen, log)
        self._children.append(child)
        return child

    def stop(self, child: Child, grace: float = 5.0) -> None:
        if child in self._children:
            self._children.remove(child)
        stop_group(child.popen, grace)

    def stop_all(self) -> None:
        while self._children:
            self.stop(self._children[-1])


def stop_group(popen: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the child's process group, SIGKILL to whatever is left after ``grace``."""
    pgid = popen.pid  # started with start_new_session=True: the child leads its own group
    _signal_group(pgid, signal.SIGTERM)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(pgid, signal.SIGKILL)  # stragglers (cluster workers) and a hung leader
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_smtp(child: Child, port: int, timeout: float) -> None:
    """Wait until ``127.0.0.1:port`` answers with a 220 greeting (bounded by ``timeout``)."""

    def greets(sock: socket.socket) -> str:
        greeting = sock.recv(512)
        sock.sendall(b"QUIT\r\n")
        return "" if greeting.startswith(b"220") else f"greeting {greeting[:80]!r}"

    _wait_until(child, port, timeout, greets, "greet")


def wait_for_listener(child: Child, port: int, timeout: float) -> None:
    """Wait until 127.0.0.1:port accepts a connection (a policy server says nothing first)."""
    _wait_until(child, port, timeout, lambda _sock: "", "listen")


def _wait_until(
    child: Child, port: int, timeout: float, probe: Callable[[socket.socket], str], doing: str
) -> None:
    """Connect to 127.0.0.1:port until ``probe`` on the connection says nothing is wrong (an
    empty string), bounded by ``timeout``; BenchError if ``child`` exits first."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(
                f"{child.name} exited with status {child.popen.returncode} while starting; "
                f"its log ({child.log}) ends with:\n{child.log_tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
                wrong = probe(sock)
            if not wrong:
                return
            last = wrong
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(
        f"{child.name} did not {doing} on 127.0.0.1:{port} within {timeout:.0f} s ({last}); "
        f"its log ({child.log}) ends with:\n{child.log_tail()}"
    )


def stop_piped(popen: subprocess.Popen[bytes], grace: float) -> None:
    """Stop a child that serves on its stdin and stdout: close its stdin (its end of input:
    it stops by itself), up to ``grace`` seconds to exit, then `stop_group` for whatever is
    left of its group; its stdout closed."""
    if popen.stdin is not None:
        try:
            popen.stdin.close()
        except OSError:
            pass
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    stop_group(popen, grace)
    if popen.stdout is not None:
        popen.stdout.close()


def memory_kib(pid: int) -> dict[str, int]:
    """The Vm* lines of /proc/PID/status, in KiB (VmRSS: now, VmHWM: peak so far)."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key.startswith("Vm") and value.strip().endswith("kB"):
                fields[key] = int(value.split()[0])
    return fields


def group_memory_kib(pgid: int) -> dict[int, dict[str, int]]:
    """``memory_kib`` of every live process of a process group (a filterd with several
    processes), by pid."""
    found: dict[int, dict[str, int]] = {}
    for pid, fields in process_stats():
        if int(fields[2]) == pgid:
            try:
                found[pid] = memory_kib(pid)
            except OSError:
                continue  # it has just exited
    return found


def process_stats() -> Iterator[tuple[int, list[str]]]:
    """Every live process: its pid and the fields of /proc/PID/stat after "pid (comm) ", so that
    ``fields[1]`` is the parent, ``fields[2]`` the process group, ``fields[11:15]`` utime,
    stime, cutime and cstime in clock ticks."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                text = stat.read()
        except OSError:
            continue  # it has just exited
        yield int(entry.name), text[text.rindex(")") + 2 :].split()


def group_cpu_seconds(pgid: int) -> float:
    """User+system CPU time of the live processes in a process group."""
    ticks = sum(int(f[11]) + int(f[12]) for _pid, f in process_stats() if int(f[2]) == pgid)
    return ticks / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time spent by the whole machine, all cores (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[1:8])
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


def reaped_children_seconds() -> float:
    """CPU time of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
