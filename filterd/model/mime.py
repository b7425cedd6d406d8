"""Decoded text for plugins: the text parts of a message (MIME structure, transfer encodings and
charsets undone) and header values with their RFC 2047 encoded words decoded.

The standard library's ``email`` package does the parsing and the decoding, with
``email.policy.default`` except for one thing: every header is read as unstructured text (encoded
words decoded wherever they are, nothing re-rendered). Its structured header parsers take
seconds, or overflow the stack, on a few kilobytes of crafted ``From:``, and the MIME walk needs
only the string parameters ``email.message.Message`` reads itself.

Both are bounded: at most ``limit`` bytes of a message are parsed, and a long header value is
decoded piece by piece (whitespace-separated, as encoded words are). Malformed input gives what
can be read, never an exception.
"""

from __future__ import annotations

import base64
import codecs
import email.policy
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import Message
from email.parser import BytesFeedParser

TEXT_LIMIT = 1024 * 1024  # bytes of a message parsed for its text parts, unless told otherwise
_HEADER_PIECE = 4096  # header text decoded at a time (the decoder is superlinear in its input)

_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")
_UNSTRUCTURED = HeaderRegistry(default_class=UnstructuredHeader, use_default_map=False)
POLICY = email.policy.default.clone(header_factory=_UNSTRUCTURED)


@dataclass(frozen=True, slots=True)
class TextPart:
    """One text part of a message, decoded."""

    content_type: str  # "text/plain", "text/html", ... (lower case)
    charset: str  # as declared, lower case ("us-ascii" when none is)
    text: str  # transfer encoding and charset undone; line ends "\n"


@dataclass(frozen=True, slots=True)
class MessageText:
    """The text parts of a message, in order: every ``text/*`` part that is not an attachment
    (a message without MIME is one ``text/plain`` part)."""

    parts: tuple[TextPart, ...]
    truncated: bool  # the message is longer than the limit: the last part may be cut short,
    # and parts after the limit are missing

    def joined(self, content_type: str = "text/plain") -> str:
        """The text of every part of ``content_type``, one after the other."""
        return "\n".join(part.text for part in self.parts if part.content_type == content_type)


def decode_header_value(value: str) -> str:
    """A header value (unfolded, as ``Header.value`` gives it) with its RFC 2047 encoded words
    decoded; raw 8-bit text is read as UTF-8 (undecodable bytes become U+FFFD)."""
    text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "=?" not in text:
        return text
    return "".join(_decode_piece(piece) for piece in _pieces(text, _HEADER_PIECE))


def _pieces(text: str, size: int) -> Iterable[str]:
    """``text`` cut after whitespace into pieces of about ``size`` characters (an encoded word
    has no whitespace in it, so none is cut)."""
    start = 0
    while len(text) - start > size:
        cut = max(text.rfind(" ", start, start + size), text.rfind("\t", start, start + size))
        end = cut + 1 if cut > start else start + size
        yield text[start:end]
        start = end
    yield text[start:]


def _decode_piece(piece: str) -> str:
    try:
        decoded = str(_UNSTRUCTURED("subject", piece))
    except Exception:  # the email package is lenient, but never trust a parser with mail
        return piece
    # Whitespace at the edges of a piece is part of the value; the parser strips it.
    head = piece[: len(piece) - len(piece.lstrip())]
    tail = piece[len(piece.rstrip()) :]
    return head + decoded.strip() + tail


def message_text(chunks: Iterable[bytes], limit: int = TEXT_LIMIT) -> MessageText:
    """Parse at most ``limit`` bytes of the message in ``chunks`` and decode its text parts."""
    parser = BytesFeedParser(policy=POLICY)
    remaining = limit
    truncated = False
    for chunk in chunks:
        if len(chunk) > remaining:
            parser.feed(chunk[:remaining])
            truncated = True
            break
        parser.feed(chunk)
        remaining -= len(chunk)
    return MessageText(tuple(_text_parts(parser.close())), truncated)


def _text_parts(part: Message) -> Iterator[TextPart]:
    """Depth first, like ``Message.walk``, but not into a delivery status report (the parser
    makes each of its field blocks a headers-only "text/plain" part)."""
    if part.is_multipart():
        if part.get_content_type() != "message/delivery-status":
            for child in part.get_payload():  # a list: parts, or an attached message
                if isinstance(child, Message):
                    yield from _text_parts(child)
    elif part.get_content_maintype() == "text" and part.get_content_disposition() != "attachment":
        yield _text_part(part)


def _text_part(part: Message) -> TextPart:
    if str(part.get("content-transfer-encoding", "")).strip().lower() == "base64":
        data = _base64(str(part.get_payload()))
    else:
        payload = part.get_payload(decode=True)  # quoted-printable (or nothing) undone
        data = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "us-ascii"
    return TextPart(part.get_content_type(), charset, _decode(data, charset).replace("\r\n", "\n"))


def _base64(encoded: str) -> bytes:
    """Base64, leniently: what is not base64 is skipped, padding ends it, and an incomplete last
    group (a part cut at the limit, a broken encoder) is dropped. The email package would give
    such a payload back still encoded, and plugins would read base64 as text."""
    data = _NOT_BASE64.sub("", encoded.partition("=")[0])
    extra = len(data) % 4
    if extra == 1:
        data = data[:-1]
    elif extra:
        data += "=" * (4 - extra)
    return base64.b64decode(data)


def _decode(data: bytes, charset: str) -> str:
    """``data`` in ``charset``; an unknown charset, or ASCII that is not, is read as UTF-8 (an
    ASCII declaration on 8-bit text is the usual lie). Undecodable bytes become U+FFFD."""
    try:
        codec = codecs.lookup(charset).name
    except LookupError:
        codec = "utf-8"
    if codec == "ascii":
        codec = "utf-8"
    try:
        return data.decode(codec, "replace")
    except (LookupError, UnicodeError):  # codecs that are not text codecs ("base64", ...)
        return data.decode("utf-8", "replace")
