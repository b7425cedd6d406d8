"""The milter door's message in progress (``MilterMessage``): what reaches its spool. Headers
are held back and written together with the blank line after them, or once ``HEADER_BATCH``
bytes wait; the spool must hold exactly what arrived, in order, either way.
"""

from __future__ import annotations

import pytest

from filterd.frontdoors.milter.message import HEADER_BATCH, MilterMessage
from filterd.model.envelope import Client, Session, Transaction

BODY = b"line one\r\nline two\r\n"


def message(spool_memory: int = 1 << 20) -> MilterMessage:
    session = Session(id="S1", listener="127.0.0.1:10029", peer=Client("192.0.2.1", 40123))
    t = Transaction(queue_id="NOQUEUE", session=session, sender="a@example.net")
    return MilterMessage(t, spool_memory, None)


def content(m: MilterMessage) -> bytes:
    return b"".join(m.spool().chunks())


def test_headers_reach_the_spool_with_the_blank_line_and_crlf_line_ends() -> None:
    m = message()
    m.write_header("Subject", b"hello")
    m.write_header("Received", b"from a\n\tby b")
    assert m.spool().size == 0  # held back until the end of the header section
    m.end_headers().write(BODY)
    assert content(m) == b"Subject: hello\r\nReceived: from a\r\n\tby b\r\n\r\n" + BODY
    assert m.spool().size == len(content(m))
    m.close()


@pytest.mark.parametrize("spool_memory", [1 << 20, 1024], ids=["in memory", "on disk"])
def test_a_header_section_larger_than_the_batch_is_never_held_whole_and_stays_in_order(
    spool_memory: int,
) -> None:
    m = message(spool_memory)
    value = b"x" * 1000
    count = 3 * HEADER_BATCH // len(value)
    expected = b""
    for n in range(count):
        m.write_header(f"X-Filler-{n}", value)
        expected += f"X-Filler-{n}: ".encode() + value + b"\r\n"
        assert len(expected) - m.spool().size < HEADER_BATCH + len(value) + 20
    assert m.spool().size > 0
    m.end_headers()
    m.end_headers()  # once only
    m.end_headers().write(BODY)
    assert content(m) == expected + b"\r\n" + BODY
    m.close()


def test_the_end_of_message_without_a_body_still_ends_the_header_section() -> None:
    m = message()
    m.write_header("Subject", b"empty")
    m.end_headers()
    assert content(m) == b"Subject: empty\r\n\r\n"
    m.close()
