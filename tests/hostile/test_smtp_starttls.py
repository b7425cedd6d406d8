"""STARTTLS command injection (CVE-2011-0411) against a real ``filterd run`` offering STARTTLS:
plaintext pipelined behind STARTTLS is never run inside the TLS session. filterd refuses the
whole attempt with 554 5.5.0 and closes; a well-behaved client still gets its TLS session."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from filterd.model import replies
from tests.hostile.conftest import Door, DoorStarter, tls_files
from tests.hostile.wire import WAIT, good_mail, marker, wire


@pytest.fixture(scope="module")
def tls_door(
    start_door: DoorStarter, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Door, Path]:
    cert, key, ca = tls_files(tmp_path_factory.mktemp("tls"))
    return start_door("smtp", listen=f'tls_cert = "{cert}"\ntls_key = "{key}"'), ca


@pytest.mark.parametrize(
    "injected",
    [
        "RSET\r\n",
        "MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\n",
        "EHLO injected.example\r\n",
        "\r\n",
    ],
    ids=["rset", "mail-rcpt", "ehlo", "empty-line"],
)
def test_commands_pipelined_after_starttls_are_refused(
    tls_door: tuple[Door, Path], injected: str
) -> None:
    door, ca = tls_door
    with wire(door.port) as client:
        assert "250-STARTTLS" in client.hello().text
        client.send(b"STARTTLS\r\n" + injected.encode())
        answers = client.rest()
    assert len(answers) == 1, answers
    assert answers[0].means(replies.STARTTLS_INJECTION), answers
    tag = marker()
    good_mail(door.port, tag, starttls_ca=ca)
    assert len(door.delivered_with(f"good {tag}")) == 1
    door.assert_running()


def test_plaintext_after_the_220_is_not_a_command(tls_door: tuple[Door, Path]) -> None:
    """A client that writes plaintext after the 220 instead of a TLS ClientHello: the handshake
    fails and the connection ends; the plaintext never becomes a command (no SMTP reply)."""
    door, ca = tls_door
    with wire(door.port) as client:
        client.hello()
        client.send_line("STARTTLS")
        assert client.reply().means(replies.READY_TLS)
        client.send(b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\n")
        rest = client.drain()  # at most a TLS alert: no SMTP reply
    assert not re.search(rb"(^|\n)\d{3}[ -]", rest), rest
    tag = marker()
    good_mail(door.port, tag, starttls_ca=ca)
    assert len(door.delivered_with(f"good {tag}")) == 1


def test_after_a_real_handshake_the_session_starts_over(tls_door: tuple[Door, Path]) -> None:
    """The control case: STARTTLS alone, a handshake, then MAIL before a new EHLO is 503."""
    door, ca = tls_door
    context = ssl.create_default_context(cafile=str(ca))
    with wire(door.port) as client:
        client.hello()
        client.send_line("STARTTLS")
        assert client.reply().means(replies.READY_TLS)
        tls = context.wrap_socket(client.sock, server_hostname="127.0.0.1")
        tls.settimeout(WAIT)
        tls.sendall(b"MAIL FROM:<alice@example.com>\r\n")
        answer = tls.recv(4096)
        assert answer.startswith(b"503 5.5.1"), answer
        tls.sendall(b"QUIT\r\n")
        with_bye = tls.recv(4096)
        assert with_bye.startswith(b"221"), with_bye
        tls.close()
