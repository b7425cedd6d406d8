"""A private spamd for tests and benchmarks (spamd(1)).

``running_spamd()`` starts ``/usr/sbin/spamd`` in the foreground (no ``-d``, so the Popen PID is
spamd's), local tests only (``-L``), no user config (``-x``), dropping to ``nobody`` when run as
root, on a free loopback port (plus, on request, a unix socket and a TLS port with a trustme
certificate), with a private pid file, log and Bayes database, and yields once ``PING`` answers.
On exit it stops spamd by PID: SIGTERM, then SIGKILL; then it makes sure spamd's children are
gone too. spamd does not wait for its children (``kill_handler`` signals them and exits), so the
fixture is their child subreaper while spamd runs and reaps them itself; without that they would
be left as zombies of a PID 1 that may never reap them::

    with running_spamd(children=2) as spamd:
        client = SpamdClient(spamd.address, max_connections=spamd.children)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import stop_child

SPAMD = "/usr/sbin/spamd"
SPAMC = "/usr/bin/spamc"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def spamd_installed() -> bool:
    return Path(SPAMD).exists() and Path(SPAMC).exists()


@dataclass
class SpamdInstance:
    """One running spamd. ``address`` is its TCP ``(host, port)``; ``socket_path`` and
    ``tls_port`` are set when asked for; ``ca_file`` signs the TLS certificate (for 127.0.0.1)."""

    process: subprocess.Popen[bytes]
    workdir: Path
    host: str
    port: int
    children: int
    socket_path: Path | None
    tls_port: int | None
    ca_file: Path | None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def log_path(self) -> Path:
        return self.workdir / "spamd.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def client_ssl_context(self) -> ssl.SSLContext:
        """A context trusting this spamd's TLS certificate."""
        if self.ca_file is None:
            raise RuntimeError("this spamd was started without TLS")
        return ssl.create_default_context(cafile=str(self.ca_file))

    def spamc(self, *args: str) -> list[str]:
        """A spamc command line aimed at this spamd (TCP), e.g. ``spamd.spamc("-c")``."""
        return [SPAMC, "-d", self.host, "-p", str(self.port), *args]


@contextlib.contextmanager
def running_spamd(
    *,
    children: int = 2,
    allow_tell: bool = True,
    unix_socket: bool = False,
    tls: bool = False,
    extra_args: Sequence[str] = (),
    keep_workdir: bool = False,
) -> Iterator[SpamdInstance]:
    """Start spamd, yield it once it answers PING, and stop it (and its children) afterwards."""
    if not spamd_installed():
        raise RuntimeError(f"{SPAMD} is not installed (deploy/install-system-packages.sh)")
    workdir = Path(tempfile.mkdtemp(prefix="filterd-spamd-"))
    workdir.chmod(0o755)  # spamd's children run as nobody: they need to reach bayes/
    previous_subreaper = _set_subreaper(True)
    instance: SpamdInstance | None = None
    try:
        ca_file = _make_certificate(workdir) if tls else None
        for attempt in range(3):  # a free port can be taken before spamd binds it
            instance = _start(workdir, children, allow_tell, unix_socket, ca_file, extra_args)
            if _wait_ready(instance):
                break
            log = instance.log_tail()
            _stop(instance)
            if "Address already in use" not in log or attempt == 2:
                raise RuntimeError(f"spamd did not start; its log:\n{log}")
        assert instance is not None
        yield instance
    finally:
        try:
            if instance is not None:
                _stop(instance)
        finally:
            if previous_subreaper is not None:
                _set_subreaper(previous_subreaper)
            if not keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)


def _start(
    workdir: Path,
    children: int,
    allow_tell: bool,
    unix_socket: bool,
    ca_file: Path | None,
    extra_args: Sequence[str],
) -> SpamdInstance:
    bayes = workdir / "bayes"
    bayes.mkdir(exist_ok=True)
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(bayes, user="nobody")
    host, port = "127.0.0.1", _free_port()
    args = [SPAMD, "-x", "-L", "-i", f"{host}:{port}", "-m", str(children), "-s", "stderr"]
    args += ["-r", str(workdir / "spamd.pid")]
    args += ["--cf", f"bayes_path {bayes}/bayes", "--cf", "bayes_auto_learn 0"]
    if as_root:
        args += ["-u", "nobody"]  # spamd refuses to scan as root
    if allow_tell:
        args.append("--allow-tell")
    socket_path = workdir / "spamd.sock" if unix_socket else None
    if socket_path is not None:
        args += ["-i", str(socket_path)]
    tls_port = None
    if ca_file is not None:
        tls_port = _free_port()
        args += ["-i", f"ssl:{host}:{tls_port}"]
        args += [
            "--server-key",
            str(workdir / "key.pem"),
            "--server-cert",
            str(workdir / "cert.pem"),
        ]
    args += extra_args
    with (workdir / "spamd.log").open("ab") as log:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    return SpamdInstance(process, workdir, host, port, children, socket_path, tls_port, ca_file)


def _wait_ready(instance: SpamdInstance) -> bool:
    """True once spamd answers PING; False if it exits; RuntimeError after the timeout."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            return False
        if _ping(instance.address):
            return True
        time.sleep(0.05)
    _stop(instance)
    raise RuntimeError(f"spamd did not answer PING in {STARTUP_TIMEOUT}s:\n{instance.log_tail()}")


def _ping(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=2.0) as sock:
            sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
            return sock.recv(100).startswith(b"SPAMD/1.5 0 PONG")
    except OSError:
        return False


def _stop(instance: SpamdInstance) -> None:
    """SIGTERM spamd, SIGKILL it if it lingers, then make sure its children are gone."""
    process = instance.process
    group = process.pid  # start_new_session: spamd leads its own process group
    stop_child(process, STOP_TIMEOUT)
    # spamd sent its children SIGINT and exited without waiting for them.
    deadline = time.monotonic() + STOP_TIMEOUT
    while (members := _group_members(group)) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT
    while (members := _group_members(group)) and time.monotonic() < deadline:
        time.sleep(0.02)
    if members:
        raise RuntimeError(f"spamd processes {members} survived SIGKILL")


def _group_members(group: int) -> list[int]:
    """Live (non-zombie) processes in process group ``group``; reaps the ones we adopted."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        state, ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) != group:
            continue
        pid = int(entry.name)
        if state == "Z":
            if int(ppid) == os.getpid():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            continue
        members.append(pid)
    return members


def _set_subreaper(on: bool) -> bool | None:
    """Make this process the child subreaper (Linux); returns the previous setting, or None if
    it cannot be set (then spamd's children go to PID 1 as usual)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        previous = ctypes.c_int(0)
        if libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0) != 0:
            return None
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return bool(previous.value)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _make_certificate(workdir: Path) -> Path:
    import trustme  # a dev dependency; only TLS instances need it

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(workdir / "key.pem"))
    (workdir / "key.pem").chmod(0o644)  # test-only key; spamd reads it before dropping root
    cert.cert_chain_pems[0].write_to_path(str(workdir / "cert.pem"))
    ca_file = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca_file
