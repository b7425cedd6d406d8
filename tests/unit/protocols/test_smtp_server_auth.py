"""SMTP AUTH in the server codec (RFC 4954, answered as Postfix with smtpd_tls_auth_only): when
it is offered and allowed, the SASL response lines after a 334, AUTH= on MAIL."""

from __future__ import annotations

import pytest

from filterd.model import replies
from filterd.model.reply import Reply
from filterd.protocols.smtp import events as ev
from filterd.protocols.smtp.common import NEED_DATA
from filterd.protocols.smtp.server import Capabilities, ServerLimits, SmtpServer, State

MECHANISMS = ("PLAIN", "LOGIN")


def make(auth: tuple[str, ...] = MECHANISMS, tls: bool = True) -> SmtpServer:
    server = SmtpServer(ServerLimits(), Capabilities("mx.test", starttls=True, auth=auth))
    if tls:
        feed(server, b"STARTTLS\r\n", replies.READY_TLS)
        server.start_tls()
    return server


def feed(server: SmtpServer, data: bytes, reply: Reply | None = None) -> ev.ServerEvent:
    """Feed ``data`` and take the one event it makes; answer it with ``reply`` if given."""
    server.receive_data(data)
    event = server.next_event()
    assert event is not NEED_DATA
    assert not isinstance(event, type(NEED_DATA))
    if reply is not None:
        server.send(reply)
    return event


def greeted(auth: tuple[str, ...] = MECHANISMS, tls: bool = True) -> SmtpServer:
    server = make(auth, tls)
    feed(server, b"EHLO client.example\r\n", replies.OK)
    return server


def test_auth_is_advertised_only_after_starttls() -> None:
    before = make(tls=False)
    feed(before, b"EHLO c\r\n")
    assert "AUTH" not in before.ehlo_reply().text
    after = make()
    feed(after, b"EHLO c\r\n")
    assert after.ehlo_reply().text.splitlines()[-1] == "AUTH PLAIN LOGIN"


def test_not_offered_is_not_implemented() -> None:
    server = greeted(auth=())
    assert feed(server, b"AUTH PLAIN AGEAYg==\r\n") == ev.BadCommand(replies.NOT_IMPLEMENTED)


@pytest.mark.parametrize(
    ("setup", "line", "reply"),
    [
        ("connected", b"AUTH PLAIN\r\n", replies.NEED_HELO),
        ("plaintext", b"AUTH PLAIN AGEAYg==\r\n", replies.AUTH_NEEDS_TLS),
        ("transaction", b"AUTH PLAIN\r\n", replies.AUTH_IN_TRANSACTION),
        ("greeted", b"AUTH\r\n", replies.AUTH_SYNTAX),
        ("greeted", b"AUTH PLAIN a b\r\n", replies.AUTH_SYNTAX),
        ("greeted", b"AUTH PLAIN  a\r\n", replies.AUTH_SYNTAX),
    ],
)
def test_refused(setup: str, line: bytes, reply: Reply) -> None:
    if setup == "connected":
        server = make()
    elif setup == "plaintext":
        server = greeted(tls=False)
    else:
        server = greeted()
    if setup == "transaction":
        feed(server, b"MAIL FROM:<a@example.com>\r\n", replies.SENDER_OK)
    before = server.errors
    assert feed(server, line) == ev.BadCommand(reply)
    assert server.errors == before + 1


def test_exchange_with_challenges_then_once_only() -> None:
    server = greeted()
    assert feed(server, b"auth login\r\n", Reply(334, "", "VXNlcm5hbWU6")) == ev.Auth("LOGIN")
    # after a 334 a line is the client's response, whatever it looks like
    assert feed(server, b"QUIT\r\n", Reply(334, "", "UGFzc3dvcmQ6")) == ev.AuthResponse("QUIT")
    assert feed(server, b"c2VjcmV0\r\n", replies.AUTH_OK) == ev.AuthResponse("c2VjcmV0")
    assert server.authenticated
    assert feed(server, b"AUTH PLAIN\r\n") == ev.BadCommand(replies.AUTH_ALREADY)


def test_a_failure_ends_the_exchange() -> None:
    server = greeted()
    assert feed(server, b"AUTH PLAIN AGEAYg==\r\n", replies.AUTH_FAILED) == ev.Auth(
        "PLAIN", "AGEAYg=="
    )
    assert not server.authenticated
    assert isinstance(feed(server, b"NOOP\r\n"), ev.Noop)


def test_an_overlong_response_ends_the_exchange() -> None:
    server = greeted()
    feed(server, b"AUTH PLAIN\r\n", Reply(334, "", ""))
    event = feed(server, b"A" * 5000 + b"\r\n", replies.SASL_TOO_LONG)
    assert event == ev.BadCommand(replies.SASL_TOO_LONG)
    assert isinstance(feed(server, b"NOOP\r\n"), ev.Noop)


def test_a_bare_newline_in_a_response_is_fatal() -> None:
    server = greeted()
    feed(server, b"AUTH LOGIN\r\n", Reply(334, "", "VXNlcm5hbWU6"))
    assert feed(server, b"YQ==\n") == ev.BadCommand(replies.BARE_LF, fatal=True)


def test_eof_during_the_exchange_closes() -> None:
    server = greeted()
    feed(server, b"AUTH LOGIN\r\n", Reply(334, "", "VXNlcm5hbWU6"))
    server.receive_data(b"")
    assert server.next_event() == ev.ConnectionClosed()
    assert server.state is State.CLOSED


def test_a_long_initial_response_is_allowed() -> None:
    server = greeted()
    response = "A" * 1000
    assert feed(server, f"AUTH PLAIN {response}\r\n".encode()) == ev.Auth("PLAIN", response)


@pytest.mark.parametrize(
    ("auth", "tls", "param", "accepted"),
    [
        (MECHANISMS, True, "AUTH=<>", True),
        (MECHANISMS, True, "AUTH=alice+40example.com", True),
        (MECHANISMS, True, "AUTH=bad+zz", False),
        (MECHANISMS, False, "AUTH=<>", False),
        ((), True, "AUTH=<>", False),
    ],
)
def test_auth_parameter_on_mail(
    auth: tuple[str, ...], tls: bool, param: str, accepted: bool
) -> None:
    server = greeted(auth, tls)
    event = feed(server, f"MAIL FROM:<a@example.com> {param}\r\n".encode())
    if accepted:
        assert event == ev.MailFrom("a@example.com", (param,))
    else:
        assert isinstance(event, ev.BadCommand)
        assert event.reply in (replies.BAD_PARAMETER, replies.SYNTAX)
