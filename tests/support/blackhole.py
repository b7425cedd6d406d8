"""A server that accepts connections and never answers: a spamd that hangs, so that a message
stays in flight in whichever filterd process is scanning it (``SilentServer``)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Held:
    """One connection it holds: the peer's port and what the peer sent."""

    peer_port: int
    received: bytearray = field(default_factory=bytearray)


class SilentServer:
    """Listens on a free port of 127.0.0.1 and holds every connection, reading and never
    writing, until ``close()``: then it refuses new connections and closes the held ones."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.held: list[Held] = []
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._quiet: list[socket.socket] = []  # held, with nothing more to read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="silent-server", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    with contextlib.suppress(BlockingIOError):
                        conn, peer = sock.accept()
                        conn.setblocking(False)
                        held = Held(peer[1])
                        with self._lock:
                            self.held.append(held)
                        self._selector.register(conn, selectors.EVENT_READ, held)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # the end of its request (spamc shuts its side down): keep it open
                    self._selector.unregister(sock)
                    self._quiet.append(sock)
                    continue
                with self._lock:
                    key.data.received += data

    def with_data(self) -> list[Held]:
        """The connections whose peer has sent something (a request waiting for its answer)."""
        with self._lock:
            return [held for held in self.held if held.received]

    def wait_for_requests(self, count: int, timeout: float) -> list[Held]:
        deadline = time.monotonic() + timeout
        while len(found := self.with_data()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} requests arrived in {timeout:g}s")
            time.sleep(0.05)
        return found

    def close(self) -> None:
        """Refuse new connections, and close the held ones (their peers read end of file)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        for key in list(self._selector.get_map().values()):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            sock.close()
        for sock in self._quiet:
            sock.close()
        self._selector.close()
