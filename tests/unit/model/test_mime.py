"""Decoded text for plugins, through the harness, over the real messages in tests/data/mail:
text parts with MIME, transfer encodings and charsets undone; RFC 2047 headers decoded;
bounded for large messages."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import ClassVar

import pytest

from filterd.model.mime import MAX_DEPTH, MAX_PARTS, decode_header_value, message_text
from filterd.sdk import (
    Continue,
    Finding,
    MessageText,
    MessageView,
    OnMessage,
    Plugin,
    PluginConfig,
    TextPart,
    Transaction,
    Verdict,
)
from filterd.testing import load_message, run_plugin
from tests.support.data import MAIL_CORPUS


class ReaderConfig(PluginConfig):
    limit: int = 1024 * 1024


class Reader(Plugin[ReaderConfig], OnMessage):
    """Reads what a content plugin reads; keeps it for the test."""

    name = "reader"
    Config = ReaderConfig
    texts: ClassVar[list[MessageText]] = []
    subjects: ClassVar[list[str | None]] = []

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        text = message.text(self.config.limit)
        assert message.text(self.config.limit) is text  # parsed once per message
        Reader.texts.append(text)
        Reader.subjects.append(message.decoded_header("Subject"))
        words = sum(len(part.text.split()) for part in text.parts)
        return Continue(findings=(Finding("reader.words", str(words)),))


async def read(message: bytes | str | Path, **config: object) -> tuple[MessageText, ScanFindings]:
    Reader.texts.clear()
    Reader.subjects.clear()
    result = await run_plugin(Reader, config, message=message)
    assert [r.error for r in result.results] == [None]
    return Reader.texts[0], {f.name: f.detail for f in result.findings}


ScanFindings = dict[str, str]


async def test_seven_bit_quoted_printable_and_base64_parts_in_their_charsets() -> None:
    text, findings = await read(MAIL_CORPUS / "msg_10.txt")
    assert text.parts == (
        TextPart("text/plain", "us-ascii", "This is a 7bit encoded message.\n"),
        TextPart("text/html", "iso-8859-1", "\u00a1This is a Quoted Printable encoded message!\n"),
        TextPart("text/plain", "iso-8859-1", "This is a Base64 encoded message."),
        TextPart("text/plain", "iso-8859-1", "This is a Base64 encoded message.\n"),
        TextPart("text/plain", "iso-8859-1", "This has no Content-Transfer-Encoding: header.\n"),
    )
    assert not text.truncated
    # Words of the text, not of base64 lines and boundaries.
    assert findings["reader.words"] == "30"
    assert "This is a 7bit encoded message." in text.joined()
    assert "Quoted Printable" not in text.joined()  # that part is text/html


async def test_attachments_are_not_text_and_nested_multiparts_are_walked() -> None:
    text, _ = await read(MAIL_CORPUS / "msg_15.txt")
    assert [(p.content_type, p.charset) for p in text.parts] == [
        ("text/plain", "iso-8859-1"),
        ("text/html", "iso-8859-1"),
    ]  # the image/gif attachment is not there
    assert text.parts[0].text == "Some removed test. \n"


async def test_rfc_2231_parameters_and_an_attached_message() -> None:
    text, _ = await read(MAIL_CORPUS / "msg_33.txt")  # charset*=ansi-x3.4-1968''us-ascii
    assert [(p.charset, p.text) for p in text.parts] == [
        ("us-ascii", "part 1\n"),
        ("us-ascii", "part 2\n"),
    ]
    text, _ = await read(MAIL_CORPUS / "msg_34.txt")  # a message/rfc822 part
    assert [p.text for p in text.parts][-1] == "A submessage\n"


async def test_a_delivery_report_has_text_parts_not_status_fields() -> None:
    text, _ = await read(MAIL_CORPUS / "msg_16.txt")
    assert [p.text.split("\n")[0] for p in text.parts] == [
        "This report relates to a message you sent with the following header fields:",
        "I always love to find more Ian's that are over 3 years old!!",
    ]


@pytest.mark.parametrize("path", sorted(MAIL_CORPUS.glob("msg_*.txt")), ids=lambda p: p.name)
async def test_every_corpus_message_reads_within_any_limit(path: Path) -> None:
    raw = load_message(path)
    whole, _ = await read(raw)
    exact, _ = await read(raw, limit=len(raw))
    assert not whole.truncated
    assert exact == whole
    for limit in (len(raw) // 2, 100):
        cut, _ = await read(raw, limit=limit)
        assert cut.truncated
        assert sum(len(part.text) for part in cut.parts) <= limit  # never more than was read


def with_headers(path: str, headers: bytes) -> bytes:
    return headers + load_message(MAIL_CORPUS / path)


async def test_encoded_words_in_headers_are_decoded() -> None:
    senor = base64.b64encode("señor".encode()).decode()
    message = with_headers(
        "msg_10.txt",
        b"X-Subject-0: =?iso-8859-1?q?=A1Hola!?= =?utf-8?b?" + senor.encode() + b"?=\r\n"
        b"X-Greeting: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus\r\n =?ISO-8859-1?Q?K=F6ln?=\r\n"
        b"X-Greeting: Gr\xc3\xbc\xc3\x9fe raw, and a bad byte \xff\r\n"
        b"X-Unknown: =?x-no-such-charset?q?abc?= and =?utf-8?q?broken\r\n",
    )
    Reader.subjects.clear()
    result = await run_plugin(Reader, message=message)
    assert [r.error for r in result.results] == [None]
    assert Reader.subjects == ["Lyrics"]

    class Headers(Plugin[PluginConfig], OnMessage):
        name = "headers"
        seen: ClassVar[dict[str, list[str]]] = {}

        async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
            for name in ("X-Subject-0", "X-Greeting", "X-Unknown", "X-Absent"):
                Headers.seen[name] = message.decoded_headers(name)
            Headers.seen["first"] = [message.decoded_header("x-greeting") or ""]
            return Continue()

    await run_plugin(Headers, message=message)
    assert Headers.seen == {
        "X-Subject-0": ["¡Hola!señor"],  # adjacent encoded words join (RFC 2047 §6.2)
        "X-Greeting": ["Grüße aus Köln", "Grüße raw, and a bad byte \ufffd"],
        "X-Unknown": ["abc and =?utf-8?q?broken"],
        "X-Absent": [],
        "first": ["Grüße aus Köln"],
    }


async def test_eight_bit_bodies_and_charsets_that_lie() -> None:
    body = "Grüße aus Köln\n".encode()
    for declared, expected in [
        ("utf-8", "Grüße aus Köln\n"),
        ("us-ascii", "Grüße aus Köln\n"),  # 8-bit UTF-8 declared ASCII: read as UTF-8
        ("x-no-such-charset", "Grüße aus Köln\n"),
        ("iso-8859-1", body.decode("iso-8859-1")),
    ]:
        message = (
            f"Subject: 8bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset={declared}"
            "\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        ).encode() + body
        text, findings = await read(message)
        assert text.parts == (TextPart("text/plain", declared, expected),)
        assert findings["reader.words"] == "3"


async def test_a_large_message_is_decoded_only_up_to_the_limit() -> None:
    line = "the quick brown fox jumps over the lazy dog\n"
    encoded = base64.encodebytes((line * 60_000).encode())  # 2.6 MB of text, base64
    message = (
        b"Subject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64"
        b"\r\n\r\n" + encoded.replace(b"\n", b"\r\n") + b"--B\r\nContent-Type: text/plain\r\n\r\n"
        b"after the limit\r\n--B--\r\n"
    )
    text, _ = await read(message)  # the default limit: 1 MiB
    assert text.truncated
    (part,) = text.parts  # the part after the limit is not there
    assert 700_000 < len(part.text) < 800_000  # 1 MiB of base64 is 3/4 MiB of text
    assert part.text.startswith(line)
    everything, _ = await read(message, limit=4 * 1024 * 1024)
    assert not everything.truncated
    assert [p.text for p in everything.parts] == [line * 60_000, "after the limit"]


def test_long_header_values_are_decoded_piece_by_piece() -> None:
    value = " ".join(f"=?utf-8?q?w=C3=B6rd{i}?= plain{i}" for i in range(2000))
    decoded = decode_header_value(value)
    assert "=?" not in decoded
    assert decoded.split() == [w for i in range(2000) for w in (f"wörd{i}", f"plain{i}")]


def test_message_text_of_no_mime_at_all() -> None:
    text = message_text([b"Subject: x\r\n", b"\r\nline one\r\nline two\r\n"])
    assert text == MessageText((TextPart("text/plain", "us-ascii", "line one\nline two\n"),), False)
    assert message_text([b"Subject: x\r\n\r\n" + b"y" * 10], limit=16).truncated


# Hostile structure: bounded work, what can be read, never an exception.


def test_encoded_words_in_parameters_are_not_decoded() -> None:
    """RFC 2047 §5: an encoded word is not a parameter value (and decoding one in a huge
    Content-Type took seconds with the structured header parsers)."""
    raw = b"Content-Type: text/plain; charset==?utf-8?q?koi8-r?=\r\n\r\nhello\r\n"
    (part,) = message_text([raw]).parts
    assert part.charset == "=?utf-8?q?koi8-r?="
    assert part.text == "hello\n"


def test_nesting_deeper_than_the_parser_follows_gives_no_parts_and_truncated() -> None:
    levels = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(1000)
    )
    text = message_text([b"Subject: deep\r\n" + levels + b"Content-Type: text/plain\r\n\r\nx\r\n"])
    assert text.truncated
    assert text.parts == ()


def test_nesting_beyond_max_depth_is_not_followed() -> None:
    depth = MAX_DEPTH + 5
    levels = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    )
    text = message_text([levels + b"Content-Type: text/plain\r\n\r\ndeep text\r\n"])
    assert text.truncated
    assert "deep text" not in text.joined()


def test_more_parts_than_max_parts_are_cut_short() -> None:
    parts = b"".join(b"--z\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(3000))
    raw = b"Content-Type: multipart/mixed; boundary=z\r\n\r\n" + parts + b"--z--\r\n"
    text = message_text([raw])
    assert text.truncated
    assert 0 < len(text.parts) <= MAX_PARTS
    assert text.parts[0].text == "part 0"  # the CRLF before a boundary belongs to it
