"""Decoded text for plugins: the text parts of a message (MIME structure, transfer encodings and
charsets undone) and header values with their RFC 2047 encoded words decoded.

The standard library's ``email`` package does the parsing and the decoding. The MIME structure
is read with ``email.policy.compat32``, whose headers are plain strings: the structured parsers
of ``email.policy.default`` take seconds, or overflow the stack, on a few kilobytes of crafted
header, and they would decode encoded words inside parameters, which RFC 2047 §5 forbids. Header
values for plugins are decoded as unstructured text, piece by piece.

Everything is bounded, and malformed input gives what can be read, never an exception: at most
``limit`` bytes of a message are parsed, at most ``MAX_PARTS`` parts ``MAX_DEPTH`` levels deep
are looked at, a message nested deeper than the parser can follow gives no text parts (and
``truncated``), and a long header value is decoded piece by piece (the decoder is superlinear).
"""

from __future__ import annotations

import base64
import codecs
import email.policy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import Message
from email.parser import BytesFeedParser

TEXT_LIMIT = 1024 * 1024  # bytes of a message parsed for its text parts, unless told otherwise
MAX_PARTS = 1000  # MIME parts looked at (text or not)
MAX_DEPTH = 50  # multipart and attached-message levels followed
_MAX_DELIMITERS = 2 * MAX_PARTS  # possible boundary lines parsed (each may start a part)
_HEADER_PIECE = 4096  # header text decoded at a time (the decoder is superlinear in its input)

_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")
_UNSTRUCTURED = HeaderRegistry(default_class=UnstructuredHeader, use_default_map=False)


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
    parser = BytesFeedParser(policy=email.policy.compat32)
    remaining = limit
    truncated = False
    delimiters = 0  # lines that may be MIME boundaries: each may start a part the parser builds
    try:
        for chunk in chunks:
            if len(chunk) > remaining:
                chunk, truncated = chunk[:remaining], True
            found = chunk.count(b"\n--")
            if delimiters + found > _MAX_DELIMITERS:  # more parts than are looked at
                chunk, truncated = chunk[: _cut_after(chunk, _MAX_DELIMITERS - delimiters)], True
            delimiters += found
            parser.feed(chunk)
            remaining -= len(chunk)
            if truncated:
                break
        root = parser.close()
    except (RecursionError, Exception):  # nested deeper than the parser follows, or a bug
        return MessageText((), truncated=True)
    parts, complete = _text_parts(root)
    return MessageText(tuple(parts), truncated or not complete)


def _cut_after(chunk: bytes, allowed: int) -> int:
    """Where ``chunk`` holds its first ``allowed`` possible boundary lines and no more."""
    at = -1
    for _ in range(allowed + 1):
        at = chunk.find(b"\n--", at + 1)
        if at == -1:
            return len(chunk)
    return at


def _text_parts(root: Message) -> tuple[list[TextPart], bool]:
    """The text parts in order (depth first, like ``Message.walk``, without recursion), not
    into a delivery status report (the parser makes each of its field blocks a headers-only
    "text/plain" part); False when ``MAX_PARTS`` or ``MAX_DEPTH`` cut the walk short."""
    found: list[TextPart] = []
    complete = True
    stack: list[tuple[Message, int]] = [(root, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > MAX_PARTS:
            return found, False
        if part.is_multipart():
            if part.get_content_type() == "message/delivery-status":
                continue
            if depth >= MAX_DEPTH:
                complete = False
                continue
            children = [c for c in part.get_payload() if isinstance(c, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))
        elif (
            part.get_content_maintype() == "text" and part.get_content_disposition() != "attachment"
        ):
            found.append(_text_part(part))
    return found, complete


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
