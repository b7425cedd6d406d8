"""A small MIME walker: the headers inside a message body, classified as Postfix's mime_state
does for the header checks (multipart part headers → mime_header_checks; headers of an
attached message/rfc822 → nested_header_checks, MIME ones among them → mime_header_checks)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;]{1,200}))', re.IGNORECASE)
_HEADER = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_MIME_NAME = re.compile(rb"^(content-|mime-version$)", re.IGNORECASE)

Kind = Literal["mime", "nested"]


@dataclass(frozen=True, slots=True)
class BodyHeader:
    kind: Kind
    text: str  # presented like cleanup(8): "Name: value", folded lines joined with "\n"


def boundary_of(content_type: str | None) -> bytes | None:
    if not content_type or not content_type.lower().lstrip().startswith("multipart/"):
        return None
    found = _BOUNDARY.search(content_type.encode("utf-8", "surrogateescape"))
    return (found.group(1) or found.group(2)) if found else None


def body_headers(body: bytes, top_boundary: bytes | None) -> Iterator[BodyHeader]:
    """The part and nested headers in ``body`` (CRLF lines), in order."""
    boundaries: list[bytes] = [top_boundary] if top_boundary else []
    lines = body.split(b"\r\n")
    i = 0
    nested_next = False  # the next header block belongs to an attached message
    while i < len(lines):
        line = lines[i]
        i += 1
        closing = _boundary_hit(line, boundaries)
        if closing is None and not nested_next:
            continue
        if closing:
            continue
        kind: Kind = "nested" if nested_next else "mime"
        nested_next = False
        block, i = _header_block(lines, i)
        content_type = ""
        for name, text in block:
            header_kind: Kind = "mime" if (kind == "mime" or _MIME_NAME.match(name)) else kind
            yield BodyHeader(header_kind, text)
            if name.lower() == b"content-type":
                content_type = text.partition(":")[2].strip()
        inner = boundary_of(content_type)
        if inner:
            boundaries.append(inner)
        elif content_type.lower().startswith("message/rfc822"):
            nested_next = True


def _boundary_hit(line: bytes, boundaries: list[bytes]) -> bool | None:
    """None: not a boundary; False: a part starts; True: a closing boundary."""
    if not line.startswith(b"--"):
        return None
    for depth in range(len(boundaries) - 1, -1, -1):
        b = boundaries[depth]
        if line.rstrip(b" \t") == b"--" + b + b"--":
            del boundaries[depth:]
            return True
        if line.rstrip(b" \t") == b"--" + b:
            del boundaries[depth + 1 :]
            return False
    return None


def _header_block(lines: list[bytes], i: int) -> tuple[list[tuple[bytes, str]], int]:
    block: list[tuple[bytes, str]] = []
    while i < len(lines):
        line = lines[i]
        if line[:1] in (b" ", b"\t") and block:
            name, text = block[-1]
            block[-1] = (name, text + "\n" + line.decode("utf-8", "surrogateescape"))
            i += 1
            continue
        match = _HEADER.match(line)
        if match is None:
            break  # a blank line (or anything else) ends the block
        name = match.group(1)
        raw = name + b":" + line[match.end() :]
        block.append((name, raw.decode("utf-8", "surrogateescape")))
        i += 1
    return block, i
