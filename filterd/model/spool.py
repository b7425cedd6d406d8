"""Message content holder: memory up to a threshold, then a temporary file (never whole in RAM).

``tempfile.SpooledTemporaryFile`` does exactly this; the wrapper adds the size, a rewritten
header section in front of the content (trace headers, header edits) and reading back in
bounded chunks.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filterd.model import metrics

READ_CHUNK = 64 * 1024


class Spool:
    def __init__(self, memory_limit: int, directory: Path | None = None) -> None:
        self._file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed in close()
            max_size=memory_limit, dir=str(directory) if directory else None, prefix="filterd-"
        )
        self.size = 0
        self.prefix = b""  # bytes that go out before the content (trace and rewritten headers)
        self.skip = 0  # content bytes replaced by the prefix (the original header section)
        self.body: bytes | None = None  # a replacement for the content after ``skip``
        # Every CR and LF of the content is part of a CRLF: the writer (the SMTP server
        # codec) made sure. ``prefix`` and ``body`` come from elsewhere and are not covered.
        self.crlf_only = False
        self._held = 0  # bytes counted in the metrics' spool bytes until closed

    def write(self, data: bytes) -> None:
        self._file.seek(0, 2)  # readers may have moved the position
        self._file.write(data)
        self.size += len(data)
        self._held += len(data)
        metrics.recorder.spool(len(data))

    def flush(self) -> None:
        """Hand what the file object still buffers to the file system: on a full disk the
        OSError comes here, at end of data, and not from the first read of a plugin."""
        self._file.flush()

    @property
    def on_disk(self) -> bool:
        return bool(getattr(self._file, "_rolled", False))

    @property
    def total_size(self) -> int:
        rest = len(self.body) if self.body is not None else self.size - self.skip
        return len(self.prefix) + rest

    def chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        """The message as it will be handed on: prefix, then the content, in bounded chunks."""
        for chunk, _ in self.parts(size):
            yield chunk

    def parts(self, size: int = READ_CHUNK) -> Iterator[tuple[bytes, bool]]:
        """``chunks``, each with whether it is known to hold CRLF line ends only (content
        received as such, see ``crlf_only``)."""
        if self.prefix:
            yield self.prefix, False
        if self.body is not None:
            yield self.body, False
            return
        for chunk in self.content_chunks(self.skip, size):
            yield chunk, self.crlf_only

    def content_chunks(self, start: int = 0, size: int = READ_CHUNK) -> Iterator[bytes]:
        """The content as received, from ``start``."""
        position = start
        while True:
            self._file.seek(position)
            chunk = self._file.read(size)
            if not chunk:
                return
            position += len(chunk)
            yield chunk

    def read_head(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the start of the content (for header parsing)."""
        self._file.seek(0)
        return self._file.read(limit)

    def close(self) -> None:
        """Never raises: closing flushes what is buffered, which fails again after a write
        that failed (a full disk); the caller has answered that failure already."""
        with contextlib.suppress(OSError):
            self._file.close()
        if self._held:
            metrics.recorder.spool(-self._held)
            self._held = 0

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
