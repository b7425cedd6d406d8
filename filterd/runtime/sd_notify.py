"""systemd's notification protocol (sd_notify(3)), without libsystemd: a ``Type=notify``
service tells the manager where it is by sending datagrams of ``VAR=value`` lines to the unix
socket named in ``$NOTIFY_SOCKET`` (a name starting with ``@`` is in the abstract namespace).

What ``filterd run`` says, from its main process only:

- ``READY=1`` once every listener accepts and every worker process is ready
  (``STATUS=serving ...``); systemd's start waits for it;
- ``RELOADING=1`` (with ``MONOTONIC_USEC``, which systemd 253's ``Type=notify-reload`` wants)
  and ``READY=1`` again around a reload: ``notify_reloading()`` and ``notify_ready()``;
- ``STOPPING=1`` when it begins to stop;
- ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` (``WatchdogSec=``), from a task of the trio
  event loop that serves the listeners: a loop that hangs stops the pings and systemd kills
  and restarts filterd.

``install_from_environment`` reads these variables and removes them from the environment, as
``sd_notify(unset_environment=1)`` does: worker processes and the plugins' subprocesses never
notify (systemd would ignore them anyway: ``NotifyAccess=main``). Outside systemd (no
``$NOTIFY_SOCKET``) every function here does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import MutableMapping

import trio

from filterd.maillog import MailLog

__all__ = [
    "Notifier",
    "feed_watchdog",
    "install",
    "install_from_environment",
    "notifier",
    "notify_ready",
    "notify_reloading",
    "notify_status",
    "notify_stopping",
]

log = MailLog("main")

SEND_TIMEOUT = 2.0
"""A send waits at most this long for room in the manager's queue."""
_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Where notifications go (``address`` None: nowhere), from which process."""

    def __init__(
        self, address: str | None, watchdog_usec: int | None = None, *, pid: int | None = None
    ) -> None:
        self.address = address
        self.pid = os.getpid() if pid is None else pid
        self.watchdog_usec = watchdog_usec
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str]) -> Notifier:
        """From ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC`` (for this process, if
        ``$WATCHDOG_PID`` names one), which are then removed from ``environ``."""
        values = {name: environ.pop(name, "") for name in _VARIABLES}
        address = values["NOTIFY_SOCKET"]
        if not address.startswith(("/", "@")) or len(address) < 2:
            address = ""  # sd_notify(3) accepts only these two forms
        watchdog: int | None = None
        pid = values["WATCHDOG_PID"]
        if values["WATCHDOG_USEC"].isdigit() and (not pid or pid == str(os.getpid())):
            watchdog = int(values["WATCHDOG_USEC"]) or None
        return cls(address or None, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two pings: half the manager's timeout (None: no watchdog)."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2_000_000

    def send(self, *fields: str) -> bool:
        """One datagram of ``VAR=value`` lines; False if not sent (no manager, not the main
        process, or an error: logged once)."""
        if self.address is None or os.getpid() != self.pid:
            return False
        payload = "\n".join(fields).encode()
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.settimeout(SEND_TIMEOUT)
            self._socket.sendto(payload, target)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning(f"cannot notify systemd at {self.address}: {exc}")
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


_current = Notifier(None)


def notifier() -> Notifier:
    """The notifier in use (one that does nothing unless installed)."""
    return _current


def install(new: Notifier) -> Notifier:
    """Use ``new`` from now on; returns the one it replaces."""
    global _current
    old, _current = _current, new
    return old


def install_from_environment(environ: MutableMapping[str, str] = os.environ) -> Notifier:
    """``filterd run``: the manager's socket and watchdog from the environment."""
    new = Notifier.from_environment(environ)
    install(new)
    return new


def _status(text: str | None) -> list[str]:
    return [] if text is None else ["STATUS=" + " ".join(text.split())]


def notify_ready(status: str | None = None) -> None:
    """Start-up, or a reload, is complete: filterd serves."""
    _current.send("READY=1", *_status(status))


def notify_reloading(status: str | None = "reloading the configuration") -> None:
    """A reload begins (``notify_ready()`` when it is done, whether it succeeded or not)."""
    monotonic = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    _current.send("RELOADING=1", f"MONOTONIC_USEC={monotonic}", *_status(status))


def notify_stopping(status: str | None = "stopping") -> None:
    _current.send("STOPPING=1", *_status(status))


def notify_status(status: str) -> None:
    _current.send(*_status(status))


async def feed_watchdog() -> None:
    """Ping the watchdog every half of its timeout, for as long as the event loop runs this
    task (forever; returns at once without a watchdog)."""
    current = _current
    interval = current.watchdog_interval
    if interval is None:
        return
    while True:
        current.send("WATCHDOG=1")
        await trio.sleep(interval)
