"""Run filterd as a real subprocess for end-to-end tests.

`filterd_process(config_text, workdir)` writes the TOML config, starts
`python -m filterd run -c CONFIG` (cwd = workdir, output to workdir/filterd.out), waits
until every `[[listen]]` address accepts connections, and on exit stops it with SIGTERM
(SIGKILL if it does not exit in time) — also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

DEFAULT_TIMEOUT = 30.0
"""Upper bound for starting and for stopping filterd, in seconds."""

WireProtocol = Literal["smtp", "lmtp"]


def filterd_config(
    *,
    listen: str,
    next_hop: str,
    protocol: WireProtocol = "smtp",
    next_hop_protocol: WireProtocol = "smtp",
    hostname: str = "filterd.test",
    xforward_hosts: Sequence[str] = ("127.0.0.0/8",),
    command_timeout: str = "30s",
) -> str:
    """A filterd TOML config: one listener, relay delivery to `next_hop` ("host:port")."""
    hosts = ", ".join(f'"{host}"' for host in xforward_hosts)
    return f"""\
[[listen]]
address = "{listen}"
protocol = "{protocol}"
hostname = "{hostname}"
xforward_hosts = [{hosts}]

[delivery]
method = "relay"
next_hop = "{next_hop}"
protocol = "{next_hop_protocol}"

[limits]
command_timeout = "{command_timeout}"
"""


def _listen_addresses(config_text: str) -> list[str]:
    config = tomllib.loads(config_text)
    return [str(entry["address"]) for entry in config.get("listen", [])]


def _accepts(address: str) -> bool:
    """True if a connection to a filterd listen address ("host:port" or "unix:/path") works."""
    try:
        if address.startswith("unix:"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(address.removeprefix("unix:"))
        else:
            host, _, port = address.rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                pass
    except OSError:
        return False
    return True


class FilterdProcess:
    """One running filterd; `stop()` is idempotent."""

    def __init__(
        self,
        config_text: str,
        workdir: Path,
        *,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Write the config into `workdir`; call `start()` to run it (with `python`, in the
        environment `env`: this process's by default)."""
        self.python = python
        self.env = None if env is None else dict(env)
        self.workdir = workdir
        self.config_text = config_text
        self.config_path = workdir / "filterd.toml"
        self.output_path = workdir / "filterd.out"
        self.addresses = _listen_addresses(config_text)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the filterd process, or None before start."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Start filterd and wait until all its listeners accept connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        with self.output_path.open("ab") as output:
            self._proc = subprocess.Popen(
                [self.python, "-m", "filterd", "run", "-c", str(self.config_path)],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        pending = list(self.addresses)
        while pending:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"filterd exited with {self._proc.returncode} during startup:\n"
                    + self.output_text()[-5000:]
                )
            pending = [address for address in pending if not _accepts(address)]
            if not pending:
                break
            if time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError(
                    f"filterd does not accept on {pending} after {timeout}s:\n"
                    + self.output_text()[-5000:]
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0, *, sweep: bool = True) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit status. With `sweep`,
        whatever is left of its process group afterwards (policy workers of a filterd that
        was killed or misbehaved) is killed too, so a failing test leaves no process behind
        (the factory always sweeps when the test ends)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        if sweep:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
        return proc.returncode

    def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` for filterd to exit on its own; its exit status."""
        assert self._proc is not None, "start() first"
        return self._proc.wait(timeout=timeout)

    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def output_text(self) -> str:
        """Everything filterd wrote to stdout/stderr so far."""
        try:
            return self.output_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@contextlib.contextmanager
def filterd_process(config_text: str, workdir: Path) -> Iterator[FilterdProcess]:
    """Run filterd with `config_text` (TOML) in `workdir` for the duration of the block."""
    proc = FilterdProcess(config_text, workdir)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


class FilterdFactory:
    """Starts filterd processes for one test and stops them all in `close()`.

    The pytest fixture `filterd_factory` (tests/e2e/conftest.py) wraps this.
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.processes: list[FilterdProcess] = []

    def __call__(self, config_text: str) -> FilterdProcess:
        """Start filterd with `config_text` in a fresh work directory."""
        proc = FilterdProcess(config_text, self.base_dir / f"run{len(self.processes)}")
        self.processes.append(proc)
        proc.start()
        return proc

    def close(self) -> None:
        """Stop every process started by this factory."""
        for proc in self.processes:
            proc.stop()
