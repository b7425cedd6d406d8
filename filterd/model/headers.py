"""The header section of a message: parsed into fields, edited as data, rendered back.

Byte-exact: a field keeps its raw bytes (name, colon, value, folding, CRLF) until an edit
touches it, so an unedited message is relayed unchanged. Parsing follows Postfix: a header
line is ``name:`` (printable ASCII, no colon in the name), continuation lines start with a
space or tab, and the first other line ends the header section (a blank line is consumed as
the separator).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from filterd.model.edits import AddHeader, ChangeHeader, Edit, InsertHeader, RemoveHeader

_FIELD_START = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# a field line and its continuation lines, every line ended by LF
_WHOLE_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*")


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    raw: bytes  # the whole field, folding and final CRLF included

    @property
    def value(self) -> str:
        """The value as text, unfolded (CRLF + WSP → WSP), without leading space."""
        _, _, rest = self.raw.partition(b":")
        text = rest.decode("utf-8", "surrogateescape")
        return text.replace("\r\n", "").replace("\n", "").strip(" \t")

    @property
    def logical_line(self) -> str:
        """``Name: value`` with folding kept as embedded newlines, as Postfix's header_checks
        see a folded header (one logical line, continuation lines joined by "\\n")."""
        text = self.raw.decode("utf-8", "surrogateescape")
        return text.rstrip("\r\n").replace("\r\n", "\n")

    @classmethod
    def build(cls, name: str, value: str) -> Header:
        """A new field ``Name: value`` (value lines joined by CRLF; "\\n" marks folding)."""
        text = f"{name}: {value}".replace("\n", "\r\n") + "\r\n"
        return cls(name, text.encode("utf-8", "surrogateescape"))

    def is_named(self, name: str) -> bool:
        return self.name.lower() == name.lower()


@dataclass(frozen=True, slots=True)
class HeaderSection:
    headers: tuple[Header, ...]
    separator: bytes  # b"\r\n" if a blank line ended the section, else b""
    body_offset: int  # where the body starts in the content

    def render(self) -> bytes:
        return b"".join(h.raw for h in self.headers) + self.separator


def parse_header_section(head: bytes, complete: bool) -> HeaderSection:
    """Parse the header section at the start of ``head``.

    ``complete`` says ``head`` is the whole message; otherwise a field cut off at the end of
    ``head`` is treated as the start of the body (callers read a generous head).

    Whole fields (a field line and its continuation lines, each ended by LF) are taken with
    one regular-expression match each; what is left (the blank line, the start of the body,
    a field at the very end of ``head``) goes through ``_parse_lines``, line by line.
    """
    headers: list[Header] = []
    pos = 0
    field = _WHOLE_FIELD.match
    while (found := field(head, pos)) is not None:
        headers.append(Header(found.group(1).decode("ascii"), found.group(0)))
        pos = found.end()
    if headers and (head[pos : pos + 1] in (b" ", b"\t") or head.find(b"\n", pos) < 0):
        # The last field may go on in a line without its LF, or end ``head``: that is the
        # line loop's to decide.
        pos -= len(headers.pop().raw)
    return _parse_lines(head, complete, headers, pos)


def _parse_lines(head: bytes, complete: bool, headers: list[Header], pos: int) -> HeaderSection:
    """The header section from ``pos`` on, line by line (``headers``: the fields before)."""
    current_start = -1
    current_name = ""
    length = len(head)
    while pos < length:
        end = head.find(b"\n", pos)
        if end < 0:
            if not complete:
                break
            end = length - 1
        line = head[pos : end + 1]
        if line[:1] in (b" ", b"\t") and current_start >= 0:
            pos = end + 1
            continue
        if current_start >= 0:
            headers.append(Header(current_name, head[current_start:pos]))
            current_start = -1
        if line in (b"\r\n", b"\n"):
            return HeaderSection(tuple(headers), line, pos + len(line))
        match = _FIELD_START.match(line)
        if match is None:
            return HeaderSection(tuple(headers), b"", pos)
        current_start = pos
        current_name = match.group(1).decode("ascii")
        pos = end + 1
    # Ran out of input inside the header section.
    if current_start < 0:
        return HeaderSection(tuple(headers), b"", pos)
    if complete:
        headers.append(Header(current_name, head[current_start:]))
        return HeaderSection(tuple(headers), b"", length)
    # A field cut off by the end of the head: from there on it is body (pathological size).
    return HeaderSection(tuple(headers), b"", current_start)


def find_all(headers: Iterable[Header], name: str) -> list[Header]:
    wanted = name.lower()
    return [h for h in headers if h.name.lower() == wanted]


def apply_header_edits(headers: Iterable[Header], edits: Iterable[Edit]) -> list[Header]:
    """Apply header edits in order. Edits naming a header that is absent change nothing."""
    result = list(headers)
    top: list[Header] = []  # AddHeader(at_top) edits, in order, go above everything
    for edit in edits:
        match edit:
            case AddHeader(name=name, value=value, at_top=True):
                top.append(Header.build(name, value))
            case AddHeader(name=name, value=value):
                result.append(Header.build(name, value))
            case InsertHeader(index=index, name=name, value=value):
                result.insert(max(0, min(index, len(result))), Header.build(name, value))
            case ChangeHeader(name=name, value=value, occurrence=n):
                positions = _positions(result, name)
                if len(positions) >= n:
                    result[positions[n - 1]] = Header.build(result[positions[n - 1]].name, value)
            case RemoveHeader(name=name, occurrence=n):
                positions = _positions(result, name)
                doomed = set(positions) if n == 0 else set(positions[n - 1 : n])
                result = [h for i, h in enumerate(result) if i not in doomed]
            case _:
                pass
    # Later PREPENDs end up above earlier ones, as with Postfix's PREPEND and milters' insert 0.
    return [*reversed(top), *result]


def _positions(headers: list[Header], name: str) -> list[int]:
    wanted = name.lower()
    return [i for i, h in enumerate(headers) if h.name.lower() == wanted]
