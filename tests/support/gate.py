"""A TCP gate in front of a real server, for fault tests: it forwards connections to the server
(``up``), resets each new one at once (``down``: the server looks dead), or accepts and holds each
new one without forwarding a byte (``slow``: the server hangs). A test switches the mode while
the gate serves; connections already forwarded stay as they are, unless ``cut()`` resets them::

    with Gate(("127.0.0.1", spamd.port)) as gate:   # filterd is told gate.port
        gate.mode = "down"
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from typing import Literal

Mode = Literal["up", "down", "slow"]

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    sock.close()


class Gate:
    """Listens on a free port of 127.0.0.1 (``port``) in a thread of its own until ``close()``."""

    def __init__(self, target: tuple[str, int], mode: Mode = "up") -> None:
        self.target = target
        self.mode: Mode = mode
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}  # both directions
        self._ended: set[socket.socket] = set()  # sides that sent end of file (half-closed)
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gate", daemon=True)
        self._thread.start()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def up(self) -> None:
        """The server is back: forward new connections again."""
        self.mode = "up"

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        if self.mode == "down":
            _reset(conn)
            return
        if self.mode == "slow":
            self._held.append(conn)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(conn)
            return
        for sock in (conn, upstream):
            sock.setblocking(False)
        self._peers[conn] = upstream
        self._peers[upstream] = conn
        self._selector.register(conn, selectors.EVENT_READ)
        self._selector.register(upstream, selectors.EVENT_READ)

    def _drop(self, sock: socket.socket, *, reset: bool = False) -> None:
        other = self._peers.pop(sock, None)
        for each in (sock, other):
            if each is None:
                continue
            self._peers.pop(each, None)
            self._ended.discard(each)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(each)
            if reset:
                _reset(each)
            else:
                each.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                for key, _ in self._selector.select(timeout=0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept()
                        continue
                    try:
                        data = sock.recv(65536)
                        other = self._peers[sock]
                        if data:
                            other.sendall(data)  # small test traffic: no back-pressure
                            continue
                        # End of file: pass the half-close on (spamc shuts its side down
                        # after its request, and then waits for the answer).
                        self._ended.add(sock)
                        self._selector.unregister(sock)
                        other.shutdown(socket.SHUT_WR)
                        if other not in self._ended:
                            continue
                    except (OSError, KeyError):
                        pass
                    self._drop(sock)

    def cut(self) -> None:
        """Reset every connection the gate forwards or holds (the server died)."""
        with self._lock:
            for sock in list(self._peers):
                self._drop(sock, reset=True)
            for sock in self._held:
                _reset(sock)
            self._held.clear()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self.cut()
        self._stop.set()
        self._thread.join()
        self._listener.close()
        self._selector.close()
