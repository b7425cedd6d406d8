"""Outgoing message text: lines longer than the SMTP limit broken as Postfix's smtp(8) breaks
them (``smtp_line_length_limit``): the rest of a long line goes on a new line that starts with a
space, which keeps header continuation and MIME intact as far as possible.

Used where filterd sends text it did not receive over SMTP (``filterd pipe --via`` reads a
message from standard input): an SMTP/LMTP listener refuses longer lines (RFC 5321 §4.5.3.1.6).
"""

from __future__ import annotations

from typing import Final

__all__ = ["LineFolder"]

#: Content bytes per line: 1000 with CRLF, as RFC 5321 allows and filterd's listener expects.
LINE_LIMIT: Final = 998


class LineFolder:
    """Streaming: ``feed`` chunks split anywhere, get them back with every line of more than
    ``limit`` bytes (its line end not counted) broken into pieces of ``limit`` bytes, each
    continuation starting with a space; ``finish`` at the end (returns nothing held)."""

    __slots__ = ("_column", "limit")

    def __init__(self, limit: int = LINE_LIMIT) -> None:
        if limit < 2:
            raise ValueError("a line limit below 2 cannot hold a continuation")
        self.limit = limit
        self._column = 0  # bytes of the current line already passed on

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            piece = data[start:end]
            content_end = len(piece) - 1 if piece.endswith(b"\r") else len(piece)
            while self._column + content_end > self.limit:
                take = self.limit - self._column
                out += piece[:take] + b"\r\n "
                piece = piece[take:]
                content_end -= take
                self._column = 1
            out += piece
            self._column += len(piece)
            if newline < 0:
                break
            out += b"\n"
            self._column = 0
            start = newline + 1
        return bytes(out)

    def finish(self) -> bytes:
        self._column = 0
        return b""
