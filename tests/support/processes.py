"""Which process is which: filterd's workers from its log, whether a process has exited, and which
process holds one end of a TCP connection (read from /proc); and stopping a child by its PID."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_READY = r"filterd/main\[\d+\]: {protocol} worker \d+ of \S+ \(pid (\d+)\) ready"


def worker_pids(log: str, protocol: str) -> list[int]:
    """The pids of the workers filterd reported ready, in order (replacements included)."""
    return [int(pid) for pid in re.findall(_READY.format(protocol=protocol), log)]


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def stop_child(process: subprocess.Popen[Any], timeout: float) -> None:
    """Stop a child by its PID: SIGTERM, up to ``timeout`` seconds to exit, then SIGKILL (and
    as long again to be reaped). Nothing if it has exited already."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def _inodes(local_port: int, remote_port: int) -> set[str]:
    """Socket inodes of TCP connections (IPv4 or IPv6) from ``local_port`` to ``remote_port``."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == local_port and (
                int(remote.rsplit(":", 1)[1], 16) == remote_port
            ):
                found.add(inode)
    return found


def socket_owner(local_port: int, remote_port: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` holds the end of a TCP connection whose own port is ``local_port`` and
    whose peer's is ``remote_port``; None if none does."""
    wanted = {f"socket:[{inode}]" for inode in _inodes(local_port, remote_port)}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return pid
            except OSError:
                continue
    return None
