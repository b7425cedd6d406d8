"""Clients that hold connections instead of using them, against a real ``filterd run``:
slowloris (a byte at a time, in a command and in DATA) is closed with 421 4.4.2 by the
command and data deadlines; 1,000 idle connections are held while others are served, and
beyond ``max_connections`` the rest get 421 4.7.0. A well-behaved client is served throughout."""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator

import pytest

from filterd.model import replies
from tests.hostile.conftest import Door, DoorStarter
from tests.hostile.wire import Wire, good_mail, marker, wire

PACE = 0.5
"""Seconds between the slow client's bytes (well under the door's 5 s deadlines)."""
MAX_SLOW_BYTES = 240
"""The slow client gives up after this many bytes (2 minutes): only bounds a hang."""


@pytest.fixture(scope="module")
def slow_door(start_door: DoorStarter) -> Door:
    return start_door(
        "smtp", limits='command_timeout = "5s"\ndata_timeout = "5s"\nmin_data_rate = 500'
    )


def trickle(client: Wire, data: bytes, door: Door) -> int:
    """Send ``data`` a byte every PACE seconds until the server answers or closes; the bytes
    sent. A well-behaved client is served on the way (after the second byte)."""
    for sent in range(1, MAX_SLOW_BYTES + 1):
        try:
            client.send(data[(sent - 1) % len(data) :][:1])
        except (BrokenPipeError, ConnectionResetError):
            return sent
        if sent == 2:
            tag = marker()
            good_mail(door.port, tag)
            assert len(door.delivered_with(f"good {tag}")) == 1
        readable, _, _ = select.select([client.sock], [], [], PACE)
        if readable:
            return sent
    raise AssertionError(f"still open after {MAX_SLOW_BYTES} bytes, one every {PACE}s")


def test_slowloris_in_a_command_gets_421_timeout(slow_door: Door) -> None:
    with wire(slow_door.port) as client:
        client.hello()
        sent = trickle(client, b"NOOP and more words that never end ", slow_door)
        answers = client.rest()
    assert sent > 2
    assert len(answers) == 1, answers
    assert answers[0].means(replies.TIMEOUT), answers
    slow_door.assert_running()


def test_slowloris_before_the_first_command_gets_421_timeout(slow_door: Door) -> None:
    with wire(slow_door.port) as client:
        assert client.reply().code == 220
        trickle(client, b"EHLO slow.example", slow_door)
        answers = client.rest()
    assert len(answers) == 1, answers
    assert answers[0].means(replies.TIMEOUT), answers


def test_slowloris_in_data_gets_421_timeout_and_nothing_is_delivered(slow_door: Door) -> None:
    tag = marker()
    with wire(slow_door.port) as client:
        client.hello()
        client.send(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        assert [r.code for r in client.replies(3)] == [250, 250, 354]
        client.send(f"Subject: slow {tag}\r\n\r\n".encode())
        trickle(client, b"body of a slow message\r\n", slow_door)
        answers = client.rest()
    assert len(answers) == 1, answers
    assert answers[0].means(replies.TIMEOUT), answers
    assert slow_door.delivered_with(tag) == []


def test_an_idle_client_gets_421_timeout(slow_door: Door) -> None:
    with wire(slow_door.port) as client:
        client.hello()
        answers = client.rest()  # bounded by the socket timeout, far above the 5 s
    assert len(answers) == 1, answers
    assert answers[0].means(replies.TIMEOUT), answers


# ----------------------------------------------------------------------- many connections
IDLE = 1000


@contextlib.contextmanager
def idle_clients(port: int, count: int) -> Iterator[list[Wire]]:
    """``count`` open connections (nothing read yet), closed at the end."""
    clients: list[Wire] = []
    try:
        clients.extend(Wire.open(port) for _ in range(count))
        yield clients
    finally:
        for client in clients:
            client.close()


def served_eventually(door: Door) -> None:
    """A well-behaved client is served once the server has seen the idle ones go (it notices
    each closed connection on its own time): retried, bounded by a count, not a clock."""
    for _ in range(300):
        tag = marker()
        try:
            good_mail(door.port, tag)
        except Exception:  # smtplib's errors for a 421 greeting or a closed connection
            time.sleep(0.1)
            continue
        assert len(door.delivered_with(f"good {tag}")) == 1
        return
    raise AssertionError("the well-behaved client was never served")


def test_1000_idle_connections_are_held_and_others_served(start_door: DoorStarter) -> None:
    door = start_door("smtp", listen=f"max_connections = {IDLE + 5}")
    with idle_clients(door.port, IDLE) as clients:
        greetings = [client.reply() for client in clients]
        assert {g.code for g in greetings} == {220}
        tag = marker()
        good_mail(door.port, tag)
        assert len(door.delivered_with(f"good {tag}")) == 1
        door.assert_running()


@pytest.mark.parametrize("processes", [1, 2])
def test_beyond_max_connections_the_rest_get_421(start_door: DoorStarter, processes: int) -> None:
    """Counted over every process; exact also when the connections come in one burst."""
    limit = 50
    door = start_door("smtp", listen=f"max_connections = {limit}", processes=processes)
    with idle_clients(door.port, IDLE) as clients:
        first = [client.reply() for client in clients]
        assert [g.code for g in first[:limit]] == [220] * limit
        refused = first[limit:]
        assert all(r.means(replies.TOO_MANY_CONNECTIONS) for r in refused), {
            str(r) for r in refused
        }
        assert all(client.closed() for client in clients[limit:])
        with pytest.raises(Exception, match="421"):  # the limit holds for everyone
            good_mail(door.port, marker())
    served_eventually(door)
    door.assert_running()
