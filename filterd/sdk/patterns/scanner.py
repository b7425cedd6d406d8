"""What reading a pattern needs in every dialect: the byte cursor and :class:`PatternError`.

The PCRE2 and POSIX translators (:mod:`.pcre`, :mod:`.posix`) are :class:`Scanner`
subclasses; they, the replacement-text parser (:mod:`.replacement`) and the compiler
(:mod:`.pattern`) report a bad pattern as :class:`PatternError`, which the table parser
turns into a :class:`~filterd.sdk.patterns.table.RuleError` naming the file and line.
"""

from __future__ import annotations

__all__ = ["PatternError", "Scanner", "show"]


class PatternError(Exception):
    """A pattern or replacement text the translators reject (Postfix would skip the rule)."""


class Scanner:
    """A cursor over one pattern: ``p`` the bytes, ``n`` their length, ``i`` the position."""

    def __init__(self, pattern: bytes) -> None:
        self.p = pattern
        self.n = len(pattern)
        self.i = 0

    def _peek(self, offset: int = 0) -> int:
        """The byte *offset* past the cursor, or -1 past the end."""
        j = self.i + offset
        return self.p[j] if j < self.n else -1

    def _error(self, message: str) -> PatternError:
        return PatternError(message)


def show(data: bytes) -> str:
    """Table bytes as they appear in an error message."""
    return data.decode("utf-8", "backslashreplace")
