"""The control socket: a local unix socket (``[control] socket``, mode 0660) through which
``filterd status`` asks the running server for its figures.

One request per connection: a line with a command, answered, then the connection closes.

- ``status``: one line of JSON (``filterd.runtime.metrics.snapshot``): the server (pid,
  version, uptime, configuration loaded at, reloads, processes, metrics endpoint) and every
  metric, summed over all processes;
- ``metrics``: the Prometheus text format, as the endpoint serves it;
- anything else: ``{"error": ...}``.

Reading the metrics reads every process's files: done on a worker thread, off the trio loop.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry, generate_latest

from filterd.config.types import Endpoint
from filterd.maillog import MailLog
from filterd.runtime.listeners import open_listener, remove_socket
from filterd.runtime.metrics import ServerFacts, snapshot
from filterd.runtime.startup import StartupError, cannot_listen, writable_directory

__all__ = ["CONTROL_MODE", "ControlSocket"]

log = MailLog("main")

CONTROL_MODE = 0o660
"""The socket's mode: its owner and group may ask (``filterd status``)."""
DIRECTORY_MODE = 0o750
"""Mode of the socket's directory when filterd creates it."""
REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 256


class ControlSocket:
    """The listening control socket of one ``filterd run``."""

    def __init__(self, path: Path, registry: CollectorRegistry, facts: ServerFacts) -> None:
        self.path = path
        self.registry = registry
        self.facts = facts
        self._listener: trio.SocketListener | None = None
        self._created: list[Path] = []  # directories made for the socket, deepest first

    async def open(self) -> None:
        """Bind the socket (its directory created if missing, and removed again by ``close``
        if empty); a socket another process answers on, or a path that cannot be bound, is a
        ``StartupError``."""
        missing = self.path.absolute().parent
        while not missing.exists() and missing != missing.parent:
            self._created.append(missing)
            missing = missing.parent
        try:
            await self._open()
        except BaseException:
            self._remove_created()
            raise

    async def _open(self) -> None:
        writable_directory(
            self.path.parent, "the control socket's directory", "control.socket",
            mode=DIRECTORY_MODE,
        )  # fmt: skip
        if await _answers(self.path):
            raise StartupError(
                f"another filterd answers on the control socket {self.path} (stop it, or give "
                "this one another [control] socket)"
            )
        address = Endpoint("unix", path=str(self.path))
        try:
            self._listener = await open_listener(address)
            os.chmod(self.path, CONTROL_MODE)
        except OSError as exc:
            raise StartupError(
                cannot_listen(address, exc).replace("[[listen]]", "[control] socket")
            ) from None

    async def serve(self) -> None:
        """Answer requests until cancelled."""
        listener = self._listener
        assert listener is not None, "open() first"
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._answer, stream)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.socket.close()
            self._listener = None
            remove_socket(str(self.path))
        self._remove_created()

    def _remove_created(self) -> None:
        for directory in self._created:
            try:
                directory.rmdir()
            except OSError:  # not empty (something else is there now), or gone
                break
        self._created.clear()

    async def _answer(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    request = await _read_line(stream)
                    answer = await trio.to_thread.run_sync(self.respond, request)
                    await stream.send_all(answer)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.debug(f"control socket: {exc}")

    def respond(self, request: str) -> bytes:
        """The answer to one request line (on a worker thread: it reads files)."""
        if request == "status":
            return json.dumps(snapshot(self.registry, self.facts)).encode() + b"\n"
        if request == "metrics":
            return bytes(generate_latest(self.registry))
        return json.dumps({"error": f"unknown command {request[:40]!r} (status, metrics)"}).encode()


async def _read_line(stream: trio.SocketStream) -> str:
    data = b""
    while b"\n" not in data and len(data) < MAX_REQUEST:
        chunk = await stream.receive_some(MAX_REQUEST)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("ascii", "replace").strip()


async def _answers(path: Path) -> bool:
    """Whether a process accepts connections on the unix socket ``path``."""
    if not await trio.Path(path).is_socket():
        return False
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe, trio.move_on_after(1.0):
        try:
            await probe.connect(str(path))
        except OSError:
            return False
        return True
    return False
