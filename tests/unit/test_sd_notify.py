"""The sd_notify protocol as filterd speaks it: datagrams to $NOTIFY_SOCKET (a path, or an
abstract name after "@"), the variables taken out of the environment, the reload pair, the
watchdog's interval, silence outside systemd and in other processes."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from filterd.runtime import sd_notify
from filterd.runtime.sd_notify import Notifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket standing in for systemd, and its $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5.0)
        yield str(path), sock


@pytest.fixture
def installed(manager: tuple[str, socket.socket]) -> Iterator[socket.socket]:
    """A notifier to ``manager`` installed as the current one (the one ``filterd run`` uses)."""
    address, sock = manager
    old = sd_notify.install(Notifier(address))
    try:
        yield sock
    finally:
        sd_notify.install(old).close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_a_message_is_one_datagram_of_lines(manager: tuple[str, socket.socket]) -> None:
    address, sock = manager
    notifier = Notifier(address)
    assert notifier.send("READY=1", "STATUS=serving")
    assert received(sock) == ["READY=1", "STATUS=serving"]
    notifier.close()


def test_an_abstract_socket_name_starts_with_an_at_sign() -> None:
    name = f"filterd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        notifier = Notifier("@" + name)
        assert notifier.send("READY=1")
        assert received(sock) == ["READY=1"]
        notifier.close()


def test_the_reload_pair(installed: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    sd_notify.notify_reloading()
    reloading = received(installed)
    sd_notify.notify_ready("serving 127.0.0.1:10025 (smtp)")
    assert received(installed) == ["READY=1", "STATUS=serving 127.0.0.1:10025 (smtp)"]
    assert reloading[0] == "RELOADING=1"
    assert reloading[1].startswith("MONOTONIC_USEC=")
    assert int(reloading[1].removeprefix("MONOTONIC_USEC=")) >= before  # CLOCK_MONOTONIC, µs
    assert reloading[2] == "STATUS=reloading the configuration"


def test_stopping_and_a_status_on_one_line(installed: socket.socket) -> None:
    sd_notify.notify_stopping()
    assert received(installed) == ["STOPPING=1", "STATUS=stopping"]
    sd_notify.notify_status("two\nlines")
    assert received(installed) == ["STATUS=two lines"]


def test_the_environment_is_read_and_cleared() -> None:
    environ = {
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": str(os.getpid()),
        "PATH": "/usr/bin",
    }
    notifier = Notifier.from_environment(environ)
    assert notifier.address == "/run/systemd/notify"
    assert notifier.watchdog_interval == 15.0  # half the timeout
    assert environ == {"PATH": "/usr/bin"}  # workers and plugins' subprocesses never notify


@pytest.mark.parametrize(
    ("variables", "address", "interval"),
    [
        ({}, None, None),  # not under systemd
        ({"NOTIFY_SOCKET": "relative/path"}, None, None),  # neither form sd_notify(3) takes
        ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, "@x", None),
        ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "0"}, "@x", None),
        ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "soon"}, "@x", None),
        ({"WATCHDOG_USEC": "1000000"}, None, None),  # a watchdog needs somewhere to ping
    ],
)
def test_what_the_environment_does_not_enable(
    variables: dict[str, str], address: str | None, interval: float | None
) -> None:
    notifier = Notifier.from_environment(dict(variables))
    assert notifier.address == address
    assert notifier.watchdog_interval == interval


def test_nothing_is_sent_without_a_manager() -> None:
    assert not Notifier(None).send("READY=1")
    sd_notify.notify_ready()  # the default notifier: does nothing, raises nothing


def test_only_the_process_that_read_the_environment_notifies(
    manager: tuple[str, socket.socket],
) -> None:
    address, sock = manager
    notifier = Notifier(address, pid=os.getpid() + 1)  # as in a child forked from it
    assert not notifier.send("READY=1")
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


def test_a_manager_that_went_away_is_no_error(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    assert not notifier.send("READY=1")
    assert not notifier.send("WATCHDOG=1")  # logged once, then quietly
    notifier.close()


async def test_the_watchdog_is_fed_from_the_event_loop(
    manager: tuple[str, socket.socket],
) -> None:
    address, sock = manager
    old = sd_notify.install(Notifier(address, watchdog_usec=2_000))  # a ping every 1 ms
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sd_notify.feed_watchdog)
            for _ in range(3):
                assert await trio.to_thread.run_sync(received, sock) == ["WATCHDOG=1"]
            nursery.cancel_scope.cancel()
    finally:
        sd_notify.install(old).close()


async def test_no_watchdog_no_task() -> None:
    with trio.fail_after(5):
        await sd_notify.feed_watchdog()  # returns at once
