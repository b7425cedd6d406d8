"""A private systemd-journald for log tests: Debian's own journald, in a journal namespace of
its own and a mount namespace of its own, so it touches nothing of the host's.

``private_journald()`` starts ``systemd-journald NAMESPACE`` under ``unshare --mount`` with a
temporary directory bound over ``/run`` (and over ``/var/log/journal`` when that exists), so
its sockets and journal files are in that directory, where filterd (outside the namespace)
reaches them: ``socket`` (the native protocol) and ``dev_log`` (syslog datagrams, as
``/dev/log``). ``lines()`` reads what it stored with ``journalctl -o short``, the classic
syslog form (``Dec  3 11:46:15 host filterd/smtpd[4242]: text``). journald is stopped by its
pid when the block ends, also on failure, and the directory removed.

Needs root (a mount namespace); the caller skips without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

JOURNALD = Path("/lib/systemd/systemd-journald")
START_TIMEOUT = 20.0


def unavailable() -> str | None:
    """Why a private journald cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private journald needs root (its own mount namespace)"
    missing = [
        tool
        for tool in (str(JOURNALD), "journalctl", "unshare")
        if shutil.which(tool) is None and not Path(tool).is_file()
    ]
    if missing:
        return f"missing {', '.join(missing)} (Debian packages systemd, util-linux)"
    return None


@dataclass
class Journald:
    base: Path
    namespace: str

    @property
    def directory(self) -> Path:
        return self.base / "run" / "systemd" / f"journal.{self.namespace}"

    @property
    def socket(self) -> Path:
        """The native protocol's socket (``/run/systemd/journal/socket`` of a host)."""
        return self.directory / "socket"

    @property
    def dev_log(self) -> Path:
        """The syslog socket (``/dev/log`` of a host)."""
        return self.directory / "dev-log"

    def journal_files(self) -> list[Path]:
        return sorted(
            path
            for place in ("run", "var")
            for path in (self.base / place).rglob("*.journal")
            if path.is_file()  # not the socket io.systemd.journal
        )

    def lines(self) -> list[str]:
        """Every entry, as ``journalctl -o short`` prints it."""
        files = self.journal_files()
        if not files:
            return []
        done = subprocess.run(
            ["journalctl", "--no-pager", "-q", "-o", "short", *(f"--file={f}" for f in files)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout.splitlines()

    def entries(self) -> list[dict[str, object]]:
        """Every entry's fields, as ``journalctl -o json`` gives them."""
        files = self.journal_files()
        done = subprocess.run(
            ["journalctl", "--no-pager", "-q", "-o", "json", *(f"--file={f}" for f in files)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 30.0) -> list[str]:
        """The lines once ``predicate(lines)`` holds; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError("journald did not store the lines:\n" + "\n".join(lines))
            time.sleep(0.1)


@contextlib.contextmanager
def private_journald() -> Iterator[Journald]:
    """A running private journald (see the module's docstring)."""
    # Under /tmp with a short name: a unix socket's path has at most 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="fjd-"))
    (base / "run").mkdir()
    (base / "var").mkdir()
    journald = Journald(base, f"filterdtest{secrets.token_hex(3)}")
    var_log = " && mount --bind var /var/log/journal" if Path("/var/log/journal").is_dir() else ""
    script = f"mount --bind run /run{var_log} && exec {JOURNALD} {journald.namespace}"
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        cwd=base,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (journald.socket.exists() and journald.dev_log.exists()):
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"journald exited with {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"journald made no socket in {START_TIMEOUT:g}s")
            time.sleep(0.05)
        yield journald
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(base, ignore_errors=True)
