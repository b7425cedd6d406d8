"""SMTP smuggling over real sockets, at the SMTP and the LMTP door, in both ``bare_newline``
modes: CRLF.CRLF is the only end of data, so whatever other "end" a client slips into the
content, the "second message" behind it is never delivered as a message of its own (counted at
the next hop, Postfix's smtp-sink). With ``reject`` a message holding a bare CR or LF gets
550 5.5.2 as a whole; with ``normalize`` it is one message, the smuggled text in its body."""

from __future__ import annotations

import pytest

from filterd.model import replies
from tests.hostile.conftest import Door, DoorStarter
from tests.hostile.wire import good_mail, marker, wire

# What a client puts between the real content and the smuggled commands.
VARIANTS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CR": b"\r.\r",
    "CRLF.LF": b"\r\n.\n",
    "CR.LF": b"\r.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
    "CRLF.CR-NUL-LF": b"\r\n.\r\x00\n",
    "CRLF-NUL.CRLF": b"\r\n\x00.\r\n",
    "CRLF.NUL-CRLF": b"\r\n.\x00\r\n",
    "CRLF-NUL-.-NUL-CRLF": b"\r\n\x00.\x00\r\n",
}


def has_bare_newline(variant: bytes) -> bool:
    rest = variant.replace(b"\r\n", b"")
    return b"\r" in rest or b"\n" in rest


@pytest.fixture(
    scope="module",
    params=[("smtp", "reject"), ("smtp", "normalize"), ("lmtp", "reject"), ("lmtp", "normalize")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def door(request: pytest.FixtureRequest, start_door: DoorStarter) -> tuple[Door, str]:
    protocol, mode = request.param
    return start_door(protocol, limits=f'bare_newline = "{mode}"'), mode


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_smuggled_message_is_never_delivered(door: tuple[Door, str], variant: bytes) -> None:
    running, mode = door
    tag = marker()
    real = f"From: alice@example.com\r\nSubject: real {tag}\r\n\r\nfirst body".encode()
    smuggled = (
        f"MAIL FROM:<evil-{tag}@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
        f"From: evil@example.com\r\nSubject: smuggled {tag}\r\n\r\nforged"
    ).encode()
    with wire(running.port) as client:
        client.hello(lmtp=running.lmtp)
        client.send(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        assert [r.code for r in client.replies(3)] == [250, 250, 354]
        client.send(real + variant + smuggled)
        good_mail(running.port, tag, lmtp=running.lmtp)  # served meanwhile
        client.send(b"\r\n.\r\nQUIT\r\n")
        answers = client.rest()

    expected = replies.BARE_LF if mode == "reject" and has_bare_newline(variant) else None
    assert len(answers) == 2, answers  # one answer to the one message, then 221: nothing more
    final, bye = answers
    if expected is not None:
        assert final.means(expected), final
    else:
        assert final.code == 250, final
    assert bye.code == 221, bye

    mine = running.delivered_with(tag)
    assert not [d for d in running.delivered() if f"evil-{tag}" in d.sender]
    good = [d for d in mine if f"good {tag}".encode() in d.raw]
    assert len(good) == 1
    first = [d for d in mine if d not in good]
    if expected is not None:
        assert first == []
    else:  # one message, the smuggled text part of its body, from the real sender
        assert len(first) == 1
        assert "alice@example.com" in first[0].sender
        assert f"smuggled {tag}".encode() in first[0].raw
    running.assert_running()
