"""The message as plugins see it: parsed headers over the spooled content, never whole in RAM;
decoded header values and text parts on demand (filterd.model.mime)."""

from __future__ import annotations

from collections.abc import Iterator

from filterd.model.headers import Header, HeaderSection, find_all, parse_header_section
from filterd.model.mime import TEXT_LIMIT, MessageText, decode_header_value, message_text
from filterd.model.spool import READ_CHUNK, Spool

HEAD_LIMIT = 1024 * 1024  # a header section larger than this is treated as body


class MessageView:
    """Read-only: headers, size and the body in chunks. Edits are returned as data."""

    def __init__(self, spool: Spool) -> None:
        """The headers are those that will be handed on: ``spool.prefix`` (our trace header)
        followed by the content as received. They are parsed when first asked for: a chain
        that never looks at them (or none at all) costs the message no parsing."""
        self._spool = spool
        self._prefix = spool.prefix
        self._section: HeaderSection | None = None
        self._text: dict[int, MessageText] = {}

    @property
    def section(self) -> HeaderSection:
        section = self._section
        if section is None:
            spool = self._spool
            head = self._prefix + spool.read_head(HEAD_LIMIT)
            section = parse_header_section(head, complete=spool.size <= HEAD_LIMIT)
            self._section = section
        return section

    @property
    def _content_body(self) -> int:
        """Where the body starts in the content as received."""
        return max(0, self.section.body_offset - len(self._prefix))

    @property
    def headers(self) -> tuple[Header, ...]:
        return self.section.headers

    def header(self, name: str) -> str | None:
        """The unfolded value of the first header called ``name`` (case-insensitive)."""
        found = find_all(self.section.headers, name)
        return found[0].value if found else None

    def headers_named(self, name: str) -> list[Header]:
        return find_all(self.section.headers, name)

    def decoded_header(self, name: str) -> str | None:
        """The first header called ``name``, unfolded, with RFC 2047 encoded words decoded
        (``=?utf-8?q?caf=C3=A9?=`` → ``café``); raw 8-bit text is read as UTF-8."""
        value = self.header(name)
        return None if value is None else decode_header_value(value)

    def decoded_headers(self, name: str) -> list[str]:
        """Every header called ``name``, in order, decoded as ``decoded_header`` decodes."""
        return [decode_header_value(h.value) for h in find_all(self.section.headers, name)]

    def text(self, limit: int = TEXT_LIMIT) -> MessageText:
        """The text parts (``text/*``, not attachments), MIME structure, transfer encoding and
        charset undone, from at most the first ``limit`` bytes of the message (``truncated``
        says when there was more). Parsed once per message and limit, for every plugin."""
        found = self._text.get(limit)
        if found is None:
            found = self._text[limit] = message_text(self._spool.content_chunks(), limit)
        return found

    @property
    def size(self) -> int:
        """Size in octets (CRLF line ends), with our trace header."""
        return len(self._spool.prefix) + self._spool.size

    def body_chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        """The body (after the header section), as received, in chunks."""
        return self._spool.content_chunks(start=self._content_body, size=size)

    def raw_chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        """The whole message (our trace header, then headers and body as received)."""
        if self._spool.prefix:
            yield self._spool.prefix
        yield from self._spool.content_chunks(start=0, size=size)

    def rewrite(self, headers: list[Header], body: bytes | None) -> None:
        """Make the spool hand on ``headers`` (and ``body``, if replaced) instead."""
        self._spool.prefix = b"".join(h.raw for h in headers) + self.section.separator
        self._spool.skip = self._content_body
        self._spool.body = body
