"""Debian's postfwd (1.35) as a reference policy server for tests and benchmarks.

postfwd has no foreground TCP mode: ``--daemon`` detaches, so it is started with ``--pidfile``
in a temporary directory and stopped by that PID (also when the test fails). ``--nodns``
keeps it off the network; it listens on 127.0.0.1 only; its cache daemon's socket is in that
directory too (not the machine-wide default another postfwd2 would share).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tests.support.postfix import free_port
from tests.support.processes import gone

POSTFWD = "/usr/sbin/postfwd2"
DEFAULT_TIMEOUT = 30.0


def postfwd_available() -> bool:
    return os.access(POSTFWD, os.X_OK) and shutil.which("perl") is not None


class PolicyClient:
    """One persistent policy connection, as Postfix keeps them."""

    def __init__(self, port: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def ask(self, attributes: Mapping[str, str]) -> str:
        """Send one request; the action of the answer (``action=`` stripped)."""
        request = {"request": "smtpd_access_policy", **attributes}
        lines = "".join(f"{name}={value}\n" for name, value in request.items())
        self.sock.sendall(lines.encode() + b"\n")
        answer: list[str] = []
        while True:
            line = self.reader.readline()
            if not line:
                raise ConnectionError(f"policy server closed the connection after {answer}")
            if line == b"\n":
                break
            answer.append(line.decode().rstrip("\n"))
        actions = [line.removeprefix("action=") for line in answer if line.startswith("action=")]
        if len(actions) != 1:
            raise AssertionError(f"expected one action line, got {answer}")
        return actions[0]

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@contextlib.contextmanager
def postfwd_server(
    workdir: Path,
    rules: str,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[int]:
    """Run postfwd2 with ``rules`` (postfwd.cf text) on a free loopback port; yields the port.

    postfwd reads its rules as ``nobody``: they go into a directory of their own that everyone
    may read (pytest's temporary directories are private), removed afterwards; postfwd's
    output goes to ``workdir``."""
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="filterd-test-postfwd-"))
    home.chmod(0o755)
    rules_file = home / "postfwd.cf"
    rules_file.write_text(rules)
    rules_file.chmod(0o644)
    pidfile = home / "postfwd.pid"
    # postfwd2's cache daemon (rate limit counters, request cache) listens on
    # /var/tmp/postfwd2-cache.socket unless told: a second postfwd2 on the machine would take
    # it over, and this one's children would count in the other's cache. One of its own, in a
    # directory postfwd (as nobody) may create it in.
    cache_dir = home / "cache"
    cache_dir.mkdir()
    cache_dir.chmod(0o777)
    command = [
        POSTFWD,
        "--daemon",
        "--nodns",
        "--file",
        str(rules_file),
        "--interface",
        "127.0.0.1",
        "--port",
        str(port),
        "--user",
        "nobody",
        "--group",
        "nogroup",
        "--pidfile",
        str(pidfile),
        "--cache_socket",
        f"unix::{cache_dir / 'cache.socket'}",
        *extra_args,
    ]
    output = workdir / "postfwd.out"
    with output.open("ab") as sink:
        subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            check=True,
            timeout=timeout,
        )
    pid: int | None = None
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                pid = pid or int(pidfile.read_text().strip())
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    break
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"postfwd does not accept on port {port}:\n{output.read_text()[-3000:]}"
                )
            time.sleep(0.05)
        yield port
    finally:
        if pid is None:
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
        if pid is not None:
            _stop(pid, timeout)
        shutil.rmtree(home, ignore_errors=True)


def _stop(pid: int, timeout: float) -> None:
    """SIGTERM the daemon (it stops its children), SIGKILL if it does not go in time."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
