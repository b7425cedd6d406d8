"""A private Pyzor server for tests: Debian's ``pyzord``, fully offline.

``running_pyzord()`` starts ``/usr/bin/pyzord`` in the foreground on a free loopback UDP port,
with a gdbm digest database, its log and a client home directory (holding a ``servers`` file
that names only this server) in a private temporary directory, and yields once ``pyzor ping``
answers. On exit it stops pyzord by PID (SIGTERM, then SIGKILL) and removes the directory::

    with running_pyzord() as pyzord:
        subprocess.run(pyzord.pyzor("report"), input=message, check=True)
        subprocess.run(pyzord.pyzor("check"), input=message)      # exit 0: listed

The gdbm engine needs Debian's ``python3-gdbm`` (without it pyzord dies with
"'NoneType' object has no attribute 'absolute_source'").
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import stop_child

PYZORD = "/usr/bin/pyzord"
PYZOR = "/usr/bin/pyzor"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def pyzord_installed() -> bool:
    if not (Path(PYZORD).exists() and Path(PYZOR).exists()):
        return False
    try:  # the gdbm engine; the system python3 is the one pyzord runs on
        subprocess.run(
            ["/usr/bin/python3", "-c", "import dbm.gnu"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@dataclass
class PyzordInstance:
    """One running pyzord. ``homedir`` is a pyzor client home whose ``servers`` file names
    this server only (``servers_file``)."""

    process: subprocess.Popen[bytes]
    workdir: Path
    host: str
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def homedir(self) -> Path:
        return self.workdir / "client"

    @property
    def servers_file(self) -> Path:
        return self.homedir / "servers"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server" / "pyzord.log"

    def log_text(self) -> str:
        text = ""
        for path in (self.log_path, self.workdir / "pyzord.out"):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return text

    def pyzor(self, *args: str, timeout: int = 3) -> list[str]:
        """A pyzor command line aimed at this server, e.g. ``pyzord.pyzor("check")``."""
        return [PYZOR, f"--homedir={self.homedir}", "-t", str(timeout), *args]


@contextlib.contextmanager
def running_pyzord(*, keep_workdir: bool = False) -> Iterator[PyzordInstance]:
    """Start pyzord, yield it once it answers ``pyzor ping``, and stop it afterwards."""
    if not pyzord_installed():
        raise RuntimeError("pyzord/pyzor/python3-gdbm are not installed (apt-get install pyzor)")
    workdir = Path(tempfile.mkdtemp(prefix="filterd-pyzord-"))
    instance: PyzordInstance | None = None
    try:
        for attempt in range(3):  # a free port can be taken before pyzord binds it
            instance = _start(workdir)
            if _wait_ready(instance):
                break
            log = instance.log_text()
            _stop(instance)
            if attempt == 2:
                raise RuntimeError(f"pyzord did not start; its log:\n{log[-4000:]}")
        assert instance is not None
        yield instance
    finally:
        try:
            if instance is not None:
                _stop(instance)
        finally:
            if not keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)


def _start(workdir: Path) -> PyzordInstance:
    server = workdir / "server"
    client = workdir / "client"
    for folder in (server, client):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    host, port = "127.0.0.1", _free_udp_port()
    (client / "servers").write_text(f"{host}:{port}\n")
    args = [PYZORD, f"--homedir={server}", "-a", host, "-p", str(port), "-e", "gdbm"]
    args += [f"--dsn={server / 'db'}", f"--log-file={server / 'pyzord.log'}"]
    with (workdir / "pyzord.out").open("ab") as out:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    return PyzordInstance(process, workdir, host, port)


def _wait_ready(instance: PyzordInstance) -> bool:
    """True once ``pyzor ping`` succeeds; False if pyzord exits; RuntimeError on timeout."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            return False
        ping = subprocess.run(
            instance.pyzor("ping", timeout=1), capture_output=True, timeout=30, check=False
        )
        if ping.returncode == 0 and b"(200, 'OK')" in ping.stdout:
            return True
        time.sleep(0.05)
    _stop(instance)
    raise RuntimeError(f"pyzord did not answer in {STARTUP_TIMEOUT}s:\n{instance.log_text()}")


def _stop(instance: PyzordInstance) -> None:
    stop_child(instance.process, STOP_TIMEOUT)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
