"""Malformed policy requests against a real ``filterd run`` policy door: no blank line, a huge
attribute, 10,000 attributes, a NUL, no ``request=``, a line without ``=``. As
SMTPD_POLICY_README asks, the server answers such a request with nothing and ends the
connection (Postfix retries, then applies smtpd_policy_service_default_action); non-UTF-8
values are no error and are answered. A well-behaved policy client is answered meanwhile."""

from __future__ import annotations

import contextlib
import socket

import pytest

from tests.hostile.conftest import Door, DoorStarter
from tests.hostile.wire import Wire

REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    b"client_address=192.0.2.1\nclient_name=client.example\nhelo_name=client.example\n"
    b"sender=alice@example.com\nrecipient=bob@example.org\ninstance=1.2.3\n"
)
ANSWER = b"action=DUNNO\n\n"


@pytest.fixture(scope="module")
def policy_door(start_door: DoorStarter) -> Door:
    return start_door("policy", limits='policy_request_timeout = "3s"')


def read_answer(client: Wire) -> bytes:
    """One answer: everything up to and including the empty line."""
    return client.until(b"\n\n")


def well_behaved(door: Door) -> None:
    """Two requests on one connection, each answered DUNNO (no plugin)."""
    client = Wire.open(door.port)
    try:
        for _ in range(2):
            client.send(REQUEST + b"\n")
            assert read_answer(client) == ANSWER
    finally:
        client.close()
    door.assert_running()


def ends_without_answer(client: Wire) -> None:
    assert client.drain() == b""


MALFORMED = {
    "huge-attribute": REQUEST + b"ccert_subject=" + b"x" * 102_400 + b"\n\n",
    "10000-attributes": REQUEST + b"".join(b"x%d=y\n" % i for i in range(10_000)) + b"\n",
    "nul-in-value": REQUEST + b"sasl_username=a\x00b\n\n",
    "no-request-attribute": REQUEST.replace(b"request=smtpd_access_policy\n", b"") + b"\n",
    "line-without-equals": REQUEST + b"garbage\n\n",
    "bad-name": REQUEST + b"Sender Name=x\n\n",
    "blank-line-alone": b"\n",
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_request_gets_no_answer_and_the_connection_ends(
    policy_door: Door, data: bytes
) -> None:
    client = Wire.open(policy_door.port)
    try:
        client.send(REQUEST + b"\n")
        assert read_answer(client) == ANSWER  # a good request first, on the same connection
        well_behaved(policy_door)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.send(data)
        ends_without_answer(client)
    finally:
        client.close()
    well_behaved(policy_door)


def test_a_request_without_its_blank_line_then_eof(policy_door: Door) -> None:
    client = Wire.open(policy_door.port)
    try:
        client.send(REQUEST)
        client.sock.shutdown(socket.SHUT_WR)
        ends_without_answer(client)
    finally:
        client.close()
    well_behaved(policy_door)


def test_a_request_without_its_blank_line_times_out(policy_door: Door) -> None:
    """The request never ends: policy_request_timeout (3 s here) closes it, unanswered."""
    client = Wire.open(policy_door.port)
    try:
        client.send(REQUEST)
        well_behaved(policy_door)
        ends_without_answer(client)  # bounded by the socket timeout, far above the 3 s
    finally:
        client.close()
    well_behaved(policy_door)


def test_non_utf8_values_are_answered(policy_door: Door) -> None:
    client = Wire.open(policy_door.port)
    try:
        client.send(
            REQUEST.replace(b"alice@example.com", b"\xff\xfe@example.com")
            + b"ccert_subject=\xc3\x28 Latin-1 \xe9\n\n"
        )
        assert read_answer(client) == ANSWER
        well_behaved(policy_door)
        client.send(REQUEST + b"\n")  # and the connection goes on
        assert read_answer(client) == ANSWER
    finally:
        client.close()
