"""A private redis-server for tests (Debian's /usr/bin/redis-server).

``running_redis()`` starts it in the foreground (so the Popen PID is redis-server's) on a free
loopback port and a UNIX socket in a temporary directory, with no persistence and no
configuration file, and yields once ``PING`` answers. On exit — also when the test failed — it
stops redis-server by PID: SIGTERM, then SIGKILL::

    with running_redis() as server:
        settings = {"backend": "redis", "url": server.url}
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import stop_child

REDIS_SERVER = "/usr/bin/redis-server"
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def redis_installed() -> bool:
    return Path(REDIS_SERVER).exists()


@dataclass
class RedisInstance:
    process: subprocess.Popen[bytes]
    workdir: Path
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        return self.workdir / "redis.sock"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.workdir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def command(self, *args: str) -> bytes:
        """One command over RESP (no client library): the raw first reply line."""
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(payload)
            return sock.recv(65536).split(b"\r\n", 1)[0]

    @contextlib.contextmanager
    def monitor(self, timeout: float = 10.0) -> Iterator[list[str]]:
        """The commands clients send the server inside the ``with`` block (``MONITOR``), one
        line each, without those Lua scripts run (``[0 lua]``): what crossed the network. The
        list is filled when the block ends; a sentinel ``ECHO`` marks the end, so nothing
        waits for a quiet moment."""
        sentinel = f"filterd-monitor-end-{time.monotonic_ns()}"
        lines: list[str] = []
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
            reader = sock.makefile("rb")
            if reader.readline() != b"+OK\r\n":
                raise RuntimeError("redis-server refused MONITOR")
            yield lines
            self.command("ECHO", sentinel)
            while True:
                line = reader.readline().decode(errors="replace").rstrip("\r\n")
                if not line:
                    raise RuntimeError(f"MONITOR ended before the sentinel: {lines}")
                if sentinel in line:
                    return
                if " lua]" not in line:
                    lines.append(line)

    def pause(self, seconds: float) -> None:
        """Make the server stop answering clients for a while (``CLIENT PAUSE``)."""
        self.command("CLIENT", "PAUSE", str(int(seconds * 1000)), "ALL")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_redis(
    port: int | None = None, extra_args: Sequence[str] = ()
) -> Iterator[RedisInstance]:
    """``port``: a port of a server this test stopped (a restart), else a free one;
    ``extra_args``: more options for redis-server (``--tls-port``...)."""
    workdir = Path(tempfile.mkdtemp(prefix="filterd-redis-"))
    port = port or _free_port()
    argv = [
        REDIS_SERVER,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--unixsocket", str(workdir / "redis.sock"),
        "--unixsocketperm", "700",
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--logfile", str(workdir / "redis.log"),
        "--protected-mode", "yes",
        *extra_args,
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    instance = RedisInstance(process, workdir, port)
    try:
        _wait_ready(instance)
        yield instance
    finally:
        _stop(instance)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(instance: RedisInstance) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {instance.process.returncode}: "
                               f"{instance.log_tail()}")  # fmt: skip
        with contextlib.suppress(OSError):
            if instance.command("PING") == b"+PONG":
                return
        time.sleep(0.05)
    raise TimeoutError(f"redis-server did not answer PING within {STARTUP_TIMEOUT:g}s")


def _stop(instance: RedisInstance) -> None:
    stop_child(instance.process, STOP_TIMEOUT)
