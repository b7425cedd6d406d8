"""The Dovecot auth-client codec: the handshake and replies as Dovecot 2.3 sends them, split at
every point, the lines it must refuse to send, and a server that does not speak the protocol."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.protocols.dovecot_auth import (
    MAX_LINE,
    Challenge,
    DovecotAuthClient,
    DovecotEvent,
    Failure,
    Ready,
    Success,
    tab_escape,
    tab_unescape,
    valid_base64,
)
from filterd.protocols.smtp.common import (
    NEED_DATA,
    ConnectionClosed,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
)

# What Dovecot 2.3.19's auth-client socket sent to `VERSION 1 0` + `CPID` (recorded).
HANDSHAKE = (
    b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t5330\nCUID\t1\n"
    b"COOKIE\t356fac4800c28069bbea2b9330b35f3d\nDONE\n"
)
PLAIN = "AGFsaWNlAHNlY3JldA=="  # base64 of "\0alice\0secret"


def events(client: DovecotAuthClient, data: bytes = b"") -> list[DovecotEvent]:
    if data:
        client.receive_data(data)
    out: list[DovecotEvent] = []
    while not isinstance(event := client.next_event(), NeedData):
        out.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return out


def ready_client() -> DovecotAuthClient:
    client = DovecotAuthClient(pid=4242)
    assert events(client, HANDSHAKE) == [Ready(frozenset({"PLAIN", "LOGIN"}))]
    return client


def test_handshake_is_postfixs() -> None:
    assert DovecotAuthClient(pid=4242).handshake() == b"VERSION\t1\t0\nCPID\t4242\n"


@given(st.lists(st.integers(0, len(HANDSHAKE)), max_size=6))
def test_handshake_split_anywhere(cuts: list[int]) -> None:
    client = DovecotAuthClient(pid=1)
    seen: list[DovecotEvent] = []
    previous = 0
    for cut in [*sorted(cuts), len(HANDSHAKE)]:
        seen += events(client, HANDSHAKE[previous:cut])
        previous = cut
    assert seen == [Ready(frozenset({"PLAIN", "LOGIN"}))]


def test_private_mechanisms_are_not_offered() -> None:
    client = DovecotAuthClient(pid=1)
    got = events(client, b"VERSION\t1\t2\nMECH\tAPOP\tprivate\nMECH\tPLAIN\nSPID\t1\nDONE\n")
    assert got == [Ready(frozenset({"PLAIN"}))]


def test_auth_master_socket_is_recognised() -> None:
    client = DovecotAuthClient(pid=1)
    client.receive_data(b"VERSION\t1\t2\nSPID\t77\n")
    with pytest.raises(RemoteProtocolError, match="not an auth-client socket"):
        client.next_event()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"VERSION\t2\t0\n", "protocol version 2"),
        (b"VERSION\tone\n", "malformed"),
        (b"MECH\tPLAIN\n", "before VERSION"),
        (b"\xff\n", "not UTF-8"),
        (b"X" * (MAX_LINE + 1), "over"),
    ],
)
def test_a_server_that_does_not_speak_the_protocol(data: bytes, message: str) -> None:
    client = DovecotAuthClient(pid=1)
    client.receive_data(data)
    with pytest.raises(RemoteProtocolError, match=message):
        client.next_event()


def test_closed_during_the_handshake() -> None:
    client = DovecotAuthClient(pid=1)
    client.receive_data(b"VERSION\t1\t2\n")
    client.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="during the handshake"):
        client.next_event()


def test_closed_while_idle() -> None:
    client = ready_client()
    assert events(client, b"") == []  # events() feeds nothing for b""
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()


def test_auth_line() -> None:
    client = ready_client()
    line = client.authenticate(
        "plain",
        local_ip="127.0.0.1",
        remote_ip="192.0.2.7",
        secured=True,
        initial_response=PLAIN,
    )
    assert line == (
        b"AUTH\t1\tPLAIN\tservice=smtp\tlip=127.0.0.1\trip=192.0.2.7\tsecured\tresp="
        + PLAIN.encode()
        + b"\n"
    )
    assert events(client, b"OK\t1\tuser=alice\n") == [Success("alice")]
    # the next request on the same connection gets the next id
    assert client.authenticate("LOGIN").startswith(b"AUTH\t2\tLOGIN\tservice=smtp\n")


def test_empty_initial_response() -> None:
    client = ready_client()
    assert client.authenticate("PLAIN", initial_response="").endswith(b"\tresp=\n")


def test_login_with_challenges() -> None:
    client = ready_client()
    client.authenticate("LOGIN")
    assert events(client, b"CONT\t1\tVXNlcm5hbWU6\n") == [Challenge("VXNlcm5hbWU6")]
    assert client.respond("YWxpY2U=") == b"CONT\t1\tYWxpY2U=\n"
    assert events(client, b"CONT\t1\tUGFzc3dvcmQ6\n") == [Challenge("UGFzc3dvcmQ6")]
    client.respond("c2VjcmV0")
    assert events(client, b"OK\t1\tuser=alice\n") == [Success("alice")]


def test_empty_challenge() -> None:
    client = ready_client()
    client.authenticate("PLAIN")
    assert events(client, b"CONT\t1\t\n") == [Challenge("")]


@pytest.mark.parametrize(
    ("reply", "failure"),
    [
        (b"FAIL\t1\tuser=alice\n", Failure(None, False, "alice")),
        (
            b"FAIL\t1\tcode=invalid_base64\treason=Invalid base64 data in initial response\n",
            Failure("Invalid base64 data in initial response", False, None),
        ),
        (b"FAIL\t1\tcode=temp_fail\treason=db down\n", Failure("db down", True, None)),
        (b"FAIL\t1\ttemp\n", Failure(None, True, None)),
        (b"FAIL\t1\treason=a\x01ttab\n", Failure("a\ttab", False, None)),
        (b"OK\t1\tuser=alice\tnologin\treason=Go away\n", Failure("Go away", False, "alice")),
        (b"OK\t1\tuser=alice\tproxy\thost=elsewhere\n", Failure(None, False, "alice")),
        (b"OK\t1\n", Failure("Authentication backend error", True, None)),
    ],
)
def test_failures(reply: bytes, failure: Failure) -> None:
    client = ready_client()
    client.authenticate("PLAIN", initial_response=PLAIN)
    assert events(client, reply) == [failure]


def test_replies_to_other_requests_and_unknown_commands_are_ignored() -> None:
    client = ready_client()
    client.authenticate("PLAIN", initial_response=PLAIN)
    got = events(client, b"OK\t7\tuser=mallory\nNOTICE\tx\nOK\t1\tuser=alice\n")
    assert got == [Success("alice")]


def test_a_reply_before_our_answer_is_an_error() -> None:
    client = ready_client()
    client.authenticate("LOGIN")
    client.receive_data(b"CONT\t1\tVXNlcm5hbWU6\nOK\t1\tuser=alice\n")
    assert client.next_event() == Challenge("VXNlcm5hbWU6")
    with pytest.raises(RemoteProtocolError, match="before our CONT"):
        client.next_event()


@pytest.mark.parametrize("reply", [b"CONT\t1\n", b"CONT\t1\tVXNl\rcm5hbWU6\n"])
def test_a_challenge_that_is_not_base64(reply: bytes) -> None:
    client = ready_client()
    client.authenticate("LOGIN")
    client.receive_data(reply)
    with pytest.raises(RemoteProtocolError, match="without base64 data"):
        client.next_event()


def test_closed_before_answering() -> None:
    client = ready_client()
    client.authenticate("PLAIN", initial_response=PLAIN)
    client.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="before answering"):
        client.next_event()


def test_what_must_not_be_sent() -> None:
    client = DovecotAuthClient(pid=1)
    with pytest.raises(LocalProtocolError):
        client.authenticate("PLAIN")  # before the handshake
    client = ready_client()
    with pytest.raises(LocalProtocolError, match="not announced"):
        client.authenticate("CRAM-MD5")
    with pytest.raises(LocalProtocolError, match="not base64"):
        client.authenticate("PLAIN", initial_response="AAAA\tresp=x")
    with pytest.raises(LocalProtocolError):
        client.respond("AAAA")  # no challenge
    client.authenticate("LOGIN")
    with pytest.raises(LocalProtocolError):
        client.authenticate("LOGIN")  # one request at a time
    events(client, b"CONT\t1\tVXNlcm5hbWU6\n")
    with pytest.raises(LocalProtocolError, match="not base64"):
        client.respond("YWxp\nY2U=")


@given(st.text())
def test_tab_escaping_round_trip(value: str) -> None:
    escaped = tab_escape(value)
    assert not any(c in escaped for c in "\t\n\r\x00")
    assert tab_unescape(escaped) == value


def test_tab_unescape_of_an_unknown_escape() -> None:
    assert tab_unescape("a\x01xb\x01") == "axb\x01"


@given(st.text())
def test_valid_base64_never_lets_a_separator_through(value: str) -> None:
    if valid_base64(value):
        assert not any(c in value for c in "\t\n\r\x00 ")


@given(st.binary(max_size=300), st.booleans())
def test_garbage_is_a_remote_protocol_error_or_nothing(data: bytes, after_handshake: bool) -> None:
    client = ready_client() if after_handshake else DovecotAuthClient(pid=1)
    if after_handshake:
        client.authenticate("LOGIN")
    client.receive_data(data)
    client.receive_data(b"")
    try:
        for _ in range(len(data) + 2):
            event = client.next_event()
            if isinstance(event, ConnectionClosed):
                break
            if isinstance(event, Challenge):
                client.respond("YQ==")
    except RemoteProtocolError:
        pass
    else:
        assert event is not NEED_DATA
