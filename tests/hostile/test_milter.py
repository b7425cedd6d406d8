"""Malformed milter packets against a real ``filterd run`` milter door (libmilter underneath):
a bad length, an unknown command, a truncated packet, a short option negotiation. libmilter
answers none of them: it ends that connection (Postfix then applies milter_default_action,
docs/testing.md), and another MTA connection (Debian's ``miltertest``, one message through
``example_tagger``) is served meanwhile and afterwards."""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from tests.hostile.conftest import Door, DoorStarter
from tests.hostile.wire import WAIT, Wire

pytest.importorskip("Milter", reason="pymilter (the milter extra) is not installed")
pytestmark = pytest.mark.skipif(
    shutil.which("miltertest") is None, reason="miltertest is not installed"
)

SCRIPTS = Path(__file__).resolve().parents[1] / "milter"

# Postfix's option negotiation: version 6, every action, every protocol step it can skip.
OPTNEG = struct.pack("!III", 6, 0x1FF, 0x1FFFFF)


def packet(command: bytes, data: bytes = b"") -> bytes:
    """One milter packet: the length of command and data (network order), then both."""
    return struct.pack("!I", len(command) + len(data)) + command + data


@pytest.fixture(scope="module")
def milter_door(start_door: DoorStarter) -> Door:
    return start_door("milter", extra='[[chain]]\nplugin = "example_tagger"')


def well_behaved(door: Door) -> None:
    """miltertest's one message: negotiated, answered, tagged by example_tagger."""
    result = subprocess.run(
        [
            "miltertest",
            "-s",
            str(SCRIPTS / "one_message.lua"),
            "-D",
            f"sock=inet:{door.port}@127.0.0.1",
            "-D",
            f"dir={SCRIPTS}",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    door.assert_running()


def negotiated(client: Wire) -> None:
    client.send(packet(b"O", OPTNEG))
    header = b""
    while len(header) < 4:
        chunk = client.sock.recv(4 - len(header))
        assert chunk, "closed during the option negotiation"
        header += chunk
    (length,) = struct.unpack("!I", header)
    body = b""
    while len(body) < length:
        chunk = client.sock.recv(length - len(body))
        assert chunk, "closed during the option negotiation"
        body += chunk
    assert body[:1] == b"O", body


MALFORMED = {
    "zero-length": struct.pack("!I", 0) + b"O",
    "length-over-libmilter-limit": struct.pack("!I", 0x7FFFFFFF) + b"O" + b"x" * 100,
    "unknown-command": packet(b"Z", b"whatever"),
    "short-negotiation": packet(b"O", b"\x00\x00\x00\x06"),
    "truncated-then-eof": struct.pack("!I", 100) + b"O" + b"\x00" * 9,
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_packet_ends_that_connection_only(milter_door: Door, data: bytes) -> None:
    client = Wire.open(milter_door.port)
    try:
        client.send(data)
        with contextlib.suppress(OSError):  # it may be closed already
            client.sock.shutdown(socket.SHUT_WR)
        assert client.drain() == b""  # no answer: the connection is ended
    finally:
        client.close()
    well_behaved(milter_door)


@pytest.mark.parametrize(
    "data",
    [packet(b"Z", b"x"), struct.pack("!I", 0x7FFFFFFF) + b"B"],
    ids=["unknown-command", "length-over-limit"],
)
def test_a_malformed_packet_after_negotiation_ends_that_connection(
    milter_door: Door, data: bytes
) -> None:
    client = Wire.open(milter_door.port)
    try:
        negotiated(client)
        client.send(data)
        assert client.drain() == b""
    finally:
        client.close()
    well_behaved(milter_door)


def test_a_truncated_packet_held_open_does_not_stop_others(milter_door: Door) -> None:
    """Half a packet, and then nothing: that connection waits, every other one is served."""
    client = Wire.open(milter_door.port)
    try:
        negotiated(client)
        client.send(struct.pack("!I", 1000) + b"B" + b"half a body")
        well_behaved(milter_door)
        well_behaved(milter_door)
    finally:
        client.close()
    well_behaved(milter_door)
