"""A private Dovecot that only authenticates, for the SMTP AUTH tests.

``running_dovecot(users)`` writes a configuration of its own into a fresh directory (no
protocols, so no IMAP/POP3 listener; a passwd-file user database; the auth-client socket, the
one Postfix's ``smtpd_sasl_path`` names, at ``<dir>/auth-client``; its state and runtime
directories and its log there too), starts ``dovecot -F -c`` in a process group of its own, and
yields once the socket accepts connections. The Debian package's own service is never started
(deploy/install-system-packages.sh keeps package daemons down). On exit it stops Dovecot by PID
(SIGTERM, then SIGKILL) and makes sure no process of its group is left::

    with running_dovecot({"alice": "secret"}) as dovecot:
        ... auth_socket = "unix:{dovecot.socket}" ...

Dovecot's own brute-force defence stays on: a failure from a client address is answered later
and later (its auth penalty, up to 15 s), so tests fail a password only a few times per instance.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import stop_child

DOVECOT = "/usr/sbin/dovecot"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def dovecot_installed() -> bool:
    return Path(DOVECOT).exists()


@dataclass
class DovecotInstance:
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def socket(self) -> Path:
        """The auth-client socket (what filterd's ``auth_socket`` names)."""
        return self.workdir / "auth-client"

    def log_text(self) -> str:
        try:
            return (self.workdir / "dovecot.log").read_text(errors="replace")
        except OSError:
            return ""


def _config(workdir: Path) -> str:
    users = ""
    if os.geteuid() != 0:  # Dovecot's own users (dovecot, dovenull) need root to switch to
        me = getpass.getuser()
        users = f"default_internal_user = {me}\ndefault_login_user = {me}\n"
    return f"""\
base_dir = {workdir}/run
state_dir = {workdir}/state
log_path = {workdir}/dovecot.log
protocols =
ssl = no
{users}auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {workdir}/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener {workdir}/auth-client {{
    mode = 0600
  }}
}}
"""


@contextlib.contextmanager
def running_dovecot(users: Mapping[str, str]) -> Iterator[DovecotInstance]:
    """Start a private Dovecot knowing ``users`` (name → password); stop it afterwards."""
    if not dovecot_installed():
        raise RuntimeError(f"{DOVECOT} is not installed (deploy/install-system-packages.sh)")
    # Short: the socket paths below it must fit in a sockaddr_un.
    workdir = Path(tempfile.mkdtemp(prefix="filterd-dovecot-"))
    workdir.chmod(0o755)  # its auth process runs as the dovecot user: it reads users
    instance: DovecotInstance | None = None
    try:
        (workdir / "users").write_text(
            "".join(f"{name}:{{PLAIN}}{password}\n" for name, password in users.items())
        )
        (workdir / "dovecot.conf").write_text(_config(workdir))
        log = (workdir / "dovecot.out").open("ab")
        with log:
            process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(workdir / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        instance = DovecotInstance(process, workdir)
        _wait_ready(instance)
        yield instance
    finally:
        try:
            if instance is not None:
                _stop(instance)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(instance: DovecotInstance) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            output = (instance.workdir / "dovecot.out").read_text(errors="replace")
            raise RuntimeError(f"dovecot exited:\n{output}\n{instance.log_text()}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(instance.socket))
            except OSError:
                time.sleep(0.05)
                continue
        return
    raise RuntimeError(f"dovecot's auth socket did not appear:\n{instance.log_text()}")


def _stop(instance: DovecotInstance) -> None:
    """SIGTERM the master (it stops its children), SIGKILL it if it lingers, then whatever is
    left of its process group."""
    process = instance.process
    stop_child(process, STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
