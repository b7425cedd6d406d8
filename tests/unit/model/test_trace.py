"""Our Received: header cannot be shaped by what a peer sends (HELO, XFORWARD values)."""

from __future__ import annotations

from datetime import UTC, datetime

from filterd.model.envelope import Client, Recipient, Session, Transaction, Xforwarded
from filterd.model.replies import RCPT_OK
from filterd.model.trace import received_header
from filterd.model.xtext import xtext_encode

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def transaction(**xforward: str) -> Transaction:
    session = Session("S", "test", Client("192.0.2.1", 25, "peer.example", "helo.example"))
    t = Transaction("ABCDEF0123", session, "a@b.example")
    t.recipients.append(Recipient("user@[192.0.2.9]", reply=RCPT_OK))
    if xforward:
        t.xforward = Xforwarded()
        t.xforward.update(tuple((k, xtext_encode(v)) for k, v in xforward.items()))
    return t


def test_received_header_shape() -> None:
    header = received_header(transaction(), "filterd.test", "ESMTP", NOW)
    assert header == (
        b"Received: from helo.example (peer.example [192.0.2.1])\r\n"
        b"\tby filterd.test (filterd) with ESMTP id ABCDEF0123\r\n"
        b"\tfor <user@[192.0.2.9]>; Wed, 25 Nov 2026 12:00:00 +0000\r\n"
    )


def test_hostile_xforward_values_cannot_inject_header_lines() -> None:
    t = transaction(HELO="evil\r\nX-Injected: yes", NAME="a (b) [c]", ADDR="1.2.3.4\r\n")
    header = received_header(t, "filterd.test", "ESMTP", NOW)
    assert header.count(b"\r\n") == 3
    assert b"X-Injected: yes" not in header.replace(b"_", b" ").split(b"\r\n")[1:]
    assert header.startswith(b"Received: from evil__X-Injected:_yes (a__b___c_ [1.2.3.4__])")


def test_xforward_unavailable_attributes_fall_back_to_unknown() -> None:
    t = transaction(NAME="[UNAVAILABLE]", ADDR="IPV6:2001:db8::1")
    assert t.client.name == "unknown"
    assert t.client.address == "2001:db8::1"
    assert t.client.helo is None


def test_address_literal_helo_keeps_its_brackets() -> None:
    session = Session("S", "test", Client("127.0.0.1", None, "unknown", "[127.0.0.1]"))
    t = Transaction("Q1", session, "a@b.example")
    t.recipients.append(Recipient("u@example.org", reply=RCPT_OK))
    header = received_header(t, "filterd.test", "ESMTP", NOW)
    assert header.startswith(b"Received: from [127.0.0.1] (unknown [127.0.0.1])\r\n")
