"""``filterd run`` started as root with ``[run] user = "nobody"``: it binds a port below 1024
and unix sockets in a directory only root may write, then every process that handles mail (the
main one, its workers) is nobody with no capability left; what it writes afterwards is
nobody's (Maildir files 0600 in 0700 directories), its sockets are nobody's with the mode
asked. And what it refuses: root without a user, unless told; an unknown user; a switch that
only root could make; a directory the user cannot write.

filterd's Python must be one that nobody can run (worker processes start it after the switch).
This machine's may live below /root: then Debian's python3 of the same version runs the
checkout with the virtualenv's packages (``nobody_python``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import smtplib
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from filterd.runtime.privileges import ALLOW_ROOT_ENV
from tests.integration.test_startup_failures import one_line, serving
from tests.support.filterd_proc import FilterdProcess
from tests.support.processes import worker_pids

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the suite runs as root (make test)")

ROOT = Path(__file__).resolve().parents[2]
NOBODY = pwd.getpwnam("nobody")
TIMEOUT = 60.0
SYSTEM_PYTHON = Path("/usr/bin/python3")
# Programs run "as nobody" are started with subprocess's user=, group= and extra_groups=: the
# child becomes nobody before it runs the program, as filterd does (not with setpriv, which
# keeps root's capabilities until the program starts: it could start a Python below /root
# that nobody could not).


@dataclass(frozen=True)
class Python:
    """An interpreter nobody can run, and the environment that finds filterd with it."""

    executable: str
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        return [self.executable, "-m", "filterd", *args]


def _without_allow_root() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != ALLOW_ROOT_ENV}


def _nobody_runs(python: Python) -> bool:
    probe = "import filterd.runtime.worker_process, Milter"
    try:
        done = subprocess.run(
            [python.executable, "-c", probe],
            env=python.env,
            cwd="/",
            capture_output=True,
            timeout=TIMEOUT,
            user=NOBODY.pw_uid,
            group=NOBODY.pw_gid,
            extra_groups=[],
        )
    except PermissionError:  # it cannot even start it
        return False
    return done.returncode == 0


@pytest.fixture(scope="module")
def nobody_python() -> Python:
    env = _without_allow_root()
    candidates = [Python(sys.executable, env)]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if SYSTEM_PYTHON.exists():
        site = sysconfig.get_paths()["purelib"]  # the virtualenv's packages (same version)
        path = os.pathsep.join([str(ROOT), site])
        candidates.append(Python(str(SYSTEM_PYTHON), dict(env, PYTHONPATH=path)))
    for python in candidates:
        if _nobody_runs(python):
            return python
    pytest.fail(
        f"no Python {version} that user nobody can run filterd with: tried "
        + ", ".join(python.executable for python in candidates)
    )


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory root owns (0755) in /tmp: nobody may enter it but not write to it."""
    path = Path(tempfile.mkdtemp(prefix="filterd-privileges-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def nobodys(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(mode=mode)
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    return path


def low_port() -> int:
    """A free port below 1024 on 127.0.0.1 (only root may bind it)."""
    for port in range(1023, 899, -1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port between 900 and 1023 on 127.0.0.1")


def status_of(pid: int) -> dict[str, list[str]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.split() for key, _, value in (line.partition(":") for line in lines)}


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    found = path.lstat()
    return found.st_uid, found.st_gid, stat.S_IMODE(found.st_mode)


def test_binds_as_root_then_serves_as_the_user(nobody_python: Python, base: Path) -> None:
    port = low_port()
    sockets = base / "sockets"  # root's: only root can create the sockets here
    sockets.mkdir(mode=0o755)
    work = nobodys(base / "work")
    config = f"""
[run]
user = "nobody"
[[listen]]
address = "127.0.0.1:{port}"
processes = 2
[[listen]]
address = "unix:{sockets}/policy.sock"
protocol = "policy"
processes = 2
[[listen]]
address = "unix:{sockets}/milter.sock"
protocol = "milter"
[delivery]
method = "maildir"
root = "{work}/mail"
[quarantine]
root = "{work}/quarantine"
[limits]
spool_dir = "{work}/spool"
shutdown_grace = "5s"
"""
    filterd = FilterdProcess(
        config, work / "run", python=nobody_python.executable, env=nobody_python.env
    )
    nobodys(filterd.workdir)
    try:
        filterd.start()
        message = EmailMessage()
        message["Subject"] = "private"
        message.set_content("for cactus only")
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            client.send_message(message, "a@example.com", ["cactus@example.org"])
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(TIMEOUT)
            client.connect(str(sockets / "policy.sock"))
            client.sendall(
                b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@example.com\n"
                b"recipient=b@example.org\nclient_address=192.0.2.1\n\n"
            )
            assert client.recv(1024).startswith(b"action=")
        log = filterd.output_text()
        assert f'running as user "nobody" (uid {NOBODY.pw_uid}, gid {NOBODY.pw_gid})' in log
        workers = worker_pids(log, "smtp") + worker_pids(log, "policy")
        assert len(workers) == 2, log
        assert filterd.pid is not None
        for pid in [filterd.pid, *workers]:
            found = status_of(pid)
            assert found["Uid"] == [str(NOBODY.pw_uid)] * 4, pid  # real, effective, saved, fs
            assert found["Gid"] == [str(NOBODY.pw_gid)] * 4, pid
            assert found["Groups"] == [str(NOBODY.pw_gid)], pid
            for capabilities in ("CapPrm", "CapEff", "CapAmb"):
                assert int(found[capabilities][0], 16) == 0, (pid, capabilities)

        nobody = (NOBODY.pw_uid, NOBODY.pw_gid)
        for name in ("policy.sock", "milter.sock"):
            assert owner_and_mode(sockets / name) == (*nobody, 0o660)
        assert owner_and_mode(filterd.workdir / "var" / "run" / "filterd.sock")[:2] == nobody
        for private in ("quarantine", "spool"):  # made by the start-up checks, as nobody
            assert owner_and_mode(work / private) == (*nobody, 0o700)
        mail = work / "mail"
        made = [mail, *(path for path in mail.rglob("*") if path.is_dir())]
        assert len(made) == 6  # mail, example.org, cactus, tmp, new, cur
        assert {owner_and_mode(path) for path in made} == {(*nobody, 0o700)}
        (delivered,) = (mail / "example.org" / "cactus" / "new").iterdir()
        assert owner_and_mode(delivered) == (*nobody, 0o600)
        assert b"for cactus only" in delivered.read_bytes()
    finally:
        status = filterd.stop()
    assert status == 0, filterd.output_text()
    # nobody cannot remove them from root's directory: the next start (as root) will.
    assert (sockets / "policy.sock").is_socket()


CONFIG = '[[listen]]\naddress = "127.0.0.1:0"\nprotocol = "policy"\n'


def run_until_exit(
    argv: list[str], config: str, workdir: Path, env: dict[str, str], *, as_nobody: bool = False
) -> str:
    """``filterd run`` that must not start: its one line on stderr (status 2)."""
    (workdir / "filterd.toml").write_text(config)
    done = subprocess.run(
        [*argv, "run", "-c", str(workdir / "filterd.toml")],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        user=NOBODY.pw_uid if as_nobody else None,
        group=NOBODY.pw_gid if as_nobody else None,
        extra_groups=[] if as_nobody else None,
    )
    assert done.returncode == 2, done.stderr
    return one_line(done.stderr)


FILTERD = [sys.executable, "-m", "filterd"]


def test_root_is_refused_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _without_allow_root()
    assert run_until_exit(FILTERD, CONFIG, tmp_path, env) == (
        'filterd: refusing to run as root (set [run] user = "filterd": filterd binds its '
        "sockets as root, then becomes that user; or allow_root = true to run as root anyway)"
    )
    assert run_until_exit(FILTERD, CONFIG + '[run]\nuser = "root"\n', tmp_path, env) == (
        'filterd: refusing to run as root ([run] user = "root" is root: name an unprivileged '
        "user such as filterd, or set allow_root = true)"
    )
    monkeypatch.delenv(ALLOW_ROOT_ENV)
    with serving(CONFIG + "[run]\nallow_root = true\n", tmp_path) as first:
        assert "(policy)" in first


def test_an_unknown_user(tmp_path: Path) -> None:
    line = run_until_exit(
        FILTERD, CONFIG + '[run]\nuser = "no-such-user"\n', tmp_path, _without_allow_root()
    )
    assert line.startswith('filterd: no user "no-such-user" on this machine ([run] user)')


def test_only_root_switches_users(nobody_python: Python, base: Path) -> None:
    work = nobodys(base / "work")
    line = run_until_exit(
        nobody_python.argv(),
        CONFIG + '[run]\nuser = "daemon"\n',
        work,
        nobody_python.env,
        as_nobody=True,
    )
    daemon = pwd.getpwnam("daemon")
    assert line == (
        f'filterd: cannot become user "daemon" (uid {daemon.pw_uid}, gid {daemon.pw_gid}) '
        f"([run] user): filterd runs as uid {NOBODY.pw_uid} (gid {NOBODY.pw_gid}) and only "
        'root can switch users (start it as root or as "daemon", or remove [run] user and group)'
    )


def test_directories_are_checked_as_the_user(nobody_python: Python, base: Path) -> None:
    work = nobodys(base / "work")
    rootonly = base / "rootonly"
    rootonly.mkdir(mode=0o755)
    config = (
        '[run]\nuser = "nobody"\n[[listen]]\naddress = "127.0.0.1:0"\n'
        f'[delivery]\nmethod = "maildir"\n[limits]\nspool_dir = "{rootonly}/spool"\n'
    )
    line = run_until_exit(nobody_python.argv(), config, work, nobody_python.env)
    assert line == (
        f"filterd: cannot write to the spool directory {rootonly}/spool (limits.spool_dir): "
        'permission denied (give a directory that user "nobody" can create and write to)'
    )
    assert not (rootonly / "spool").exists()  # root could have: it was not root who tried


def test_a_user_who_cannot_run_this_python_is_refused(tmp_path: Path) -> None:
    """This machine's own Python, if nobody cannot run it (below /root), is refused by name."""
    python = Python(sys.executable, _without_allow_root())
    if _nobody_runs(python):
        pytest.skip("nobody can run this Python: nothing to refuse")
    line = run_until_exit(FILTERD, CONFIG + '[run]\nuser = "nobody"\n', tmp_path, python.env)
    assert line.startswith('filterd: user "nobody" (uid ')
    assert "install filterd where that user can read it" in line
