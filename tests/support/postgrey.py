"""A private postgrey 1.37 for differential tests (Debian's /usr/sbin/postgrey).

``running_postgrey(...)`` starts it in the foreground (no ``--daemonize``, so the Popen PID is
postgrey's; its log goes to a file) on a free loopback port, with its Berkeley DB environment in
a temporary directory owned by the ``postgrey`` user it drops to when started as root, and the
whitelist files given. It yields once the port accepts connections; on exit — also when the test
failed — it stops postgrey by PID (SIGTERM, then SIGKILL). postgrey's clock is the real one::

    with running_postgrey(delay=2, whitelist_clients=[path]) as server:
        answer = server.ask({"request": "smtpd_access_policy", ...})
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import stop_child

POSTGREY = "/usr/sbin/postgrey"
USER = "postgrey"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def postgrey_installed() -> bool:
    if not Path(POSTGREY).exists():
        return False
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False
    return True


def policy_request(attributes: Mapping[str, str]) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in attributes.items()).encode() + b"\n"


def read_answer(sock: socket.socket) -> str:
    """One ``action=...`` answer (up to the empty line)."""
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"the policy server closed the connection after {data!r}")
        data += chunk
    lines = data.decode().strip().splitlines()
    (action,) = [line for line in lines if line.startswith("action=")]
    return action.removeprefix("action=")


@dataclass
class PolicyClient:
    """One persistent policy connection, as Postfix keeps one per smtpd."""

    address: tuple[str, int]
    _sock: socket.socket | None = field(default=None, repr=False)

    def ask(self, attributes: Mapping[str, str]) -> str:
        if self._sock is None:
            self._sock = socket.create_connection(self.address, timeout=30)
        self._sock.sendall(policy_request(attributes))
        return read_answer(self._sock)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@dataclass
class PostgreyInstance:
    process: subprocess.Popen[bytes]
    workdir: Path
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = (self.workdir / "postgrey.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_postgrey(
    *,
    delay: int,
    whitelist_clients: Sequence[Path],
    whitelist_recipients: Sequence[Path],
    auto_whitelist_clients: int = 5,
    hostname: str = "mx.test",
) -> Iterator[PostgreyInstance]:
    workdir = Path(tempfile.mkdtemp(prefix="filterd-postgrey-"))
    dbdir = workdir / "db"
    dbdir.mkdir()
    account = pwd.getpwnam(USER)
    if os.geteuid() == 0:
        os.chown(dbdir, account.pw_uid, account.pw_gid)
        os.chmod(workdir, 0o755)
    port = _free_port()
    argv = [
        POSTGREY,
        f"--inet=127.0.0.1:{port}",
        f"--dbdir={dbdir}",
        f"--delay={delay}",
        f"--auto-whitelist-clients={auto_whitelist_clients}",
        f"--hostname={hostname}",
        *(f"--whitelist-clients={path}" for path in whitelist_clients),
        *(f"--whitelist-recipients={path}" for path in whitelist_recipients),
    ]
    if os.geteuid() == 0:
        argv += [f"--user={USER}", f"--group={USER}"]
    with (workdir / "postgrey.log").open("ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    instance = PostgreyInstance(process, workdir, port)
    try:
        _wait_ready(instance)
        yield instance
    finally:
        _stop(instance)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(instance: PostgreyInstance) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            raise RuntimeError(
                f"postgrey exited with {instance.process.returncode}: {instance.log_tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection(instance.address, timeout=1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"postgrey does not accept connections after {STARTUP_TIMEOUT:g}s")


def _stop(instance: PostgreyInstance) -> None:
    stop_child(instance.process, STOP_TIMEOUT)
