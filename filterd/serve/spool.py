"""Message content holder: memory up to a threshold, then a temporary file (never whole in RAM).

``tempfile.SpooledTemporaryFile`` does exactly this; the wrapper adds the size, prepended
header bytes (trace headers) and reading back in bounded chunks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

READ_CHUNK = 64 * 1024


class Spool:
    def __init__(self, memory_limit: int, directory: Path | None = None) -> None:
        self._file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed in close()
            max_size=memory_limit,
            dir=str(directory) if directory else None,
            prefix="filterd-spool-",
        )
        self.size = 0
        self.prefix = b""  # header lines added in front of the content (e.g. Received:)

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    @property
    def on_disk(self) -> bool:
        return bool(getattr(self._file, "_rolled", False))

    @property
    def total_size(self) -> int:
        return len(self.prefix) + self.size

    def chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        """The message as it will be relayed: prefix, then the content, in bounded chunks."""
        if self.prefix:
            yield self.prefix
        self._file.seek(0)
        while chunk := self._file.read(size):
            yield chunk

    def read_head(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the start of the content (for header parsing)."""
        self._file.seek(0)
        return self._file.read(limit)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
