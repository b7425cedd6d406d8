"""``filterd run`` under a stand-in for systemd: a datagram socket named in $NOTIFY_SOCKET
(a path, or an abstract name), with a watchdog (WATCHDOG_USEC).

READY=1 comes once every listener accepts and every worker is ready (a connection made right
after it is answered, no retry); WATCHDOG=1 pings follow; SIGTERM brings STOPPING=1. Every
datagram comes from the main process (the kernel says who sent it: SCM_CREDENTIALS), and the
workers do not even have the variables.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.postfix import free_port
from tests.support.processes import worker_pids

TIMEOUT = 60.0
UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
POLICY_REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@example.com\n"
    b"recipient=b@example.org\nclient_address=192.0.2.1\n\n"
)


@dataclass
class Notification:
    pid: int  # the sender, as the kernel saw it
    lines: list[str]


class Manager:
    """What systemd does with $NOTIFY_SOCKET: receive datagrams, and who sent each."""

    def __init__(self, address: str) -> None:
        self.address = address  # as $NOTIFY_SOCKET says it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(TIMEOUT)
        self.seen: list[Notification] = []

    def next(self) -> Notification:
        data, ancillary, _flags, _address = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = UCRED.unpack(payload[: UCRED.size])[0]
        notification = Notification(pid, data.decode().split("\n"))
        self.seen.append(notification)
        return notification

    def until(self, line: str) -> Notification:
        """The next notification with ``line`` (those before it are kept in ``seen``)."""
        while True:
            notification = self.next()
            if line in notification.lines:
                return notification


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Manager]:
    if request.param == "path":
        address = str(tmp_path / "notify")
    else:
        address = f"@filterd-test-{uuid.uuid4().hex}"
    manager = Manager(address)
    with contextlib.closing(manager.sock):
        yield manager


def run_filterd(config: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``filterd run -c config`` in its own session, with ``env`` added to this environment,
    its output into ``log``."""
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "filterd", "run", "-c", str(config)],
            cwd=config.parent,
            env=dict(os.environ, **env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw if entry)
    return {key: value for key, _, value in pairs}


def test_ready_watchdog_and_stopping_come_from_the_main_process(
    manager: Manager, tmp_path: Path
) -> None:
    smtp, policy = free_port(), free_port()
    config = tmp_path / "filterd.toml"
    config.write_text(
        f'[[listen]]\naddress = "127.0.0.1:{smtp}"\nprocesses = 2\n'
        f'[[listen]]\naddress = "127.0.0.1:{policy}"\nprotocol = "policy"\nprocesses = 2\n'
        '[delivery]\nmethod = "maildir"\n'
    )
    log = tmp_path / "filterd.out"
    proc = run_filterd(config, log, NOTIFY_SOCKET=manager.address, WATCHDOG_USEC="200000")
    try:
        ready = manager.until("READY=1")
        # Right now: every worker has said it is ready (in the log, written before READY=1),
        # and every listener answers, without a retry.
        text = log.read_text()
        workers = worker_pids(text, "smtp") + worker_pids(text, "policy")
        assert len(workers) == 2, text
        with socket.create_connection(("127.0.0.1", smtp), timeout=TIMEOUT) as client:
            assert client.recv(1024).startswith(b"220 ")
        with socket.create_connection(("127.0.0.1", policy), timeout=TIMEOUT) as client:
            client.sendall(POLICY_REQUEST)
            assert client.recv(1024).startswith(b"action=")
        assert ready.lines == [
            "READY=1",
            f"STATUS=serving 127.0.0.1:{smtp} (smtp), 127.0.0.1:{policy} (policy)",
        ]

        for worker in workers:
            assert "NOTIFY_SOCKET" not in environment(worker)
            assert "WATCHDOG_USEC" not in environment(worker)

        for _ in range(3):
            assert manager.next().lines == ["WATCHDOG=1"]

        proc.send_signal(signal.SIGTERM)
        assert manager.until("STOPPING=1").lines == ["STOPPING=1", "STATUS=stopping"]
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    assert {notification.pid for notification in manager.seen} == {proc.pid}
    assert sum("READY=1" in notification.lines for notification in manager.seen) == 1


def test_a_reload_is_framed_by_reloading_and_ready(manager: Manager, tmp_path: Path) -> None:
    """SIGHUP: RELOADING=1 (with MONOTONIC_USEC, as systemd wants it) when the reload begins,
    READY=1 when it ends, applied or refused; all from the main process."""
    smtp = free_port()
    config = tmp_path / "filterd.toml"
    good = f'[[listen]]\naddress = "127.0.0.1:{smtp}"\n[delivery]\nmethod = "maildir"\n'
    config.write_text(good)
    proc = run_filterd(config, tmp_path / "filterd.out", NOTIFY_SOCKET=manager.address)
    try:
        manager.until("READY=1")
        config.write_text(good + "[limits]\nshutdown_grace = 5\n")
        proc.send_signal(signal.SIGHUP)
        reloading = manager.until("RELOADING=1")
        assert reloading.pid == proc.pid
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.lines)
        ready = manager.next()
        assert ready.lines == ["READY=1", "STATUS=serving (configuration reloaded)"]
        config.write_text(good + "[limits]\nno_such_key = 1\n")
        proc.send_signal(signal.SIGHUP)
        manager.until("RELOADING=1")
        assert manager.next().lines == ["READY=1", "STATUS=serving (reload refused)"]
        proc.send_signal(signal.SIGTERM)
        manager.until("STOPPING=1")
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
