"""Outgoing DATA content: dot-stuffing, the end-of-data mark, and no bare CR or LF on the wire.

RFC 5321 §4.5.2 (transparency): before sending a line of mail text, the client checks its first
character; if it is a period, one more period is inserted at the start of the line. §4.1.1.4:
the content ends with "<CRLF>.<CRLF>", where the first <CRLF> ends the last line of content
(or the DATA command line, for empty content).

SMTP smuggling (CVE-2023-51764 and friends): a relay must never emit a bare CR
or bare LF, since a receiver that takes them for line ends would see a different end of data than
we meant. ``DotStuffer`` either refuses such content or turns every bare CR and bare LF into CRLF.

The receiving side (un-stuffing, end-of-data detection) lives in the server codec.
"""

from __future__ import annotations

from typing import Final, Literal

from filterd.model import replies
from filterd.protocols.smtp.common import LocalProtocolError

__all__ = ["BareNewlineError", "BareNewlinePolicy", "DotStuffer"]

BareNewlinePolicy = Literal["reject", "normalize"]

_CRLF: Final = b"\r\n"
_END_OF_DATA: Final = b".\r\n"


class BareNewlineError(LocalProtocolError):
    """Content to send holds a bare CR or LF and the policy is "reject".

    Whatever was already sent must not be terminated with "." (the shell drops the transaction);
    the hint is ``replies.BARE_LF``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, reply=replies.BARE_LF)


class DotStuffer:
    """Streaming encoder of one message's content for DATA (RFC 5321 §4.5.2, §4.1.1.4).

    ``feed`` takes content chunks split anywhere and returns wire bytes; ``finish`` returns what
    is left plus the terminator (CRLF first when the content did not end with a line end). With
    ``bare_newline="normalize"`` each bare CR and bare LF becomes CRLF (CR LF is a single line
    end); with ``"reject"`` such content raises ``BareNewlineError`` before any of its chunk is
    returned. Work is a few C-level scans per chunk; at most one byte, a trailing CR that may
    be the first half of CRLF, is held back between chunks.
    """

    __slots__ = ("_at_line_start", "_closed", "_held_cr", "_policy")

    def __init__(self, bare_newline: BareNewlinePolicy = "normalize") -> None:
        if bare_newline not in ("reject", "normalize"):
            raise ValueError(f"bare_newline must be 'reject' or 'normalize': {bare_newline!r}")
        self._policy: BareNewlinePolicy = bare_newline
        self._at_line_start = True  # the DATA command's CRLF starts the first line
        self._held_cr = False
        self._closed = False

    def feed(self, chunk: bytes, *, crlf_only: bool = False) -> bytes:
        """Wire bytes for ``chunk``: line ends as CRLF, a leading "." on each line doubled.

        ``crlf_only``: ``chunk`` is a piece of content whose every CR and LF belongs to a
        CRLF (the server codec checked the content it received), cut anywhere: the scans
        that would find out again are skipped, unless a CR held back from the chunk before
        is not followed by the LF that the chunk then starts with (or the other way round).
        """
        self._check_open()
        held = self._held_cr
        data = b"\r" + chunk if held else chunk
        self._held_cr = data.endswith(b"\r")
        if self._held_cr:
            data = data[:-1]
        if not data:
            return b""
        if not (crlf_only and held == chunk.startswith(b"\n")):
            data = self._fix_line_ends(data)
        stuffed = data.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        self._at_line_start = stuffed.endswith(b"\n")
        return stuffed

    def finish(self) -> bytes:
        """The held-back byte, a CRLF if the last line is unterminated, and ".CRLF".

        The stuffer is closed afterwards: further calls raise ``LocalProtocolError``.
        """
        self._check_open()
        self._closed = True
        tail = b""
        if self._held_cr:  # content ended in CR: a bare CR
            if self._policy == "reject":
                raise BareNewlineError("bare <CR> at the end of the content")
            tail = _CRLF
        elif not self._at_line_start:
            tail = _CRLF
        return tail + _END_OF_DATA

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError("DotStuffer used after finish() or after an error")

    def _fix_line_ends(self, data: bytes) -> bytes:
        """``data`` with no bare CR or LF, or ``BareNewlineError`` under "reject".

        ``data`` never ends in CR here (the caller holds it back), so counting decides: the
        content is clean iff every CR and every LF belongs to a CRLF.
        """
        pairs = data.count(_CRLF)
        if data.count(b"\r") == pairs and data.count(b"\n") == pairs:
            return data
        if self._policy == "reject":
            self._closed = True
            raise BareNewlineError("bare <CR> or <LF> in the content")
        # CRLF first, so it stays one line end; then every lone CR or LF is a line end.
        return data.replace(_CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", _CRLF)
