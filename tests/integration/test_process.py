"""filterd as a real process: SIGKILL mid-transaction loses nothing; SIGTERM stops gracefully."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from filterd.model import replies
from tests.support.filterd_proc import FilterdProcess, filterd_process
from tests.support.nexthop import smtp_sink
from tests.support.postfix import free_port

pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/smtp-sink").exists(), reason="Postfix's smtp-sink is not installed"
)


def config(port: int, next_hop: int) -> str:
    return f"""
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"
[limits]
shutdown_grace = "5s"
[delivery]
method = "relay"
next_hop = "127.0.0.1:{next_hop}"
"""


class Client:
    """A blocking line client (the filterd under test is another process)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def line(self) -> str | None:
        while b"\r\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode()

    def reply(self) -> str | None:
        line = self.line()
        while line is not None and line[3:4] == "-":
            line = self.line()
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


def wait_exit(proc: FilterdProcess, timeout: float = 10) -> int | None:
    deadline = time.monotonic() + timeout
    while proc.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc.stop()


def start_transaction(client: Client) -> None:
    assert (client.reply() or "").startswith("220")
    client.send(b"EHLO c.example\r\n")
    client.reply()
    client.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    assert [client.reply() for _ in range(3)][-1].startswith("354")  # type: ignore[union-attr]


@pytest.mark.parametrize("moment", ["in the middle of DATA", "after the final dot"])
def test_sigkill_leaves_the_client_without_250_and_the_next_hop_without_a_message(
    tmp_path: Path, moment: str
) -> None:
    # -w 3: the sink waits 3 s before answering DATA, so "after the final dot" filterd is
    # still relaying when it dies.
    with smtp_sink(tmp_path, "-w", "3") as sink:
        port = free_port()
        with filterd_process(config(port, sink.port), tmp_path / "run") as proc:
            client = Client(port)
            start_transaction(client)
            client.send(b"Subject: doomed\r\n\r\n" + b"x" * 70 + b"\r\n")
            if moment == "after the final dot":
                client.send(b"more\r\n.\r\n")
                time.sleep(0.5)
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
            assert client.reply() is None  # connection closed, no reply at all
            time.sleep(3.5)
            assert sink.dumps() == []


def test_sigterm_tells_idle_clients_421_and_exits_zero(tmp_path: Path) -> None:
    with smtp_sink(tmp_path) as sink:
        port = free_port()
        with filterd_process(config(port, sink.port), tmp_path / "run") as proc:
            client = Client(port)
            assert (client.reply() or "").startswith("220")
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGTERM)
            assert client.reply() == str(replies.SHUTTING_DOWN)
            assert wait_exit(proc) == 0
            assert "graceful stop" in proc.output_text()


def test_sigterm_lets_the_message_in_flight_finish(tmp_path: Path) -> None:
    with smtp_sink(tmp_path) as sink:
        port = free_port()
        with filterd_process(config(port, sink.port), tmp_path / "run") as proc:
            client = Client(port)
            start_transaction(client)
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGTERM)
            time.sleep(0.3)
            client.send(b"Subject: in flight\r\n\r\nbody\r\n.\r\n")
            assert (client.reply() or "").startswith("250")
            assert client.reply() == str(replies.SHUTTING_DOWN)
            assert wait_exit(proc) == 0
            assert len(sink.dumps()) == 1


def test_sigterm_during_start_up_is_a_graceful_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A SIGTERM that arrives while filterd is still starting (here: during the start-up
    checks, before the signal watcher runs) is kept and honoured once serving begins: a
    graceful stop with status 0, not death by the signal."""
    from filterd.config.load import parse_config
    from filterd.runtime import startup, supervisor

    checks = startup.check_before_serving

    def check_then_get_a_sigterm(config: object, **options: Any) -> None:
        checks(config, **options)  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(supervisor, "check_before_serving", check_then_get_a_sigterm)
    monkeypatch.chdir(tmp_path)
    status = supervisor.main(parse_config(config(free_port(), free_port()), source="test.toml"))
    err = capfd.readouterr().err
    assert status == 0
    assert "signal SIGTERM: graceful stop" in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the run
