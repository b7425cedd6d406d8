"""Map a key path such as ``("listen", 1, "address")`` to its line in a TOML text.

``tomllib`` gives values but no positions, so this module scans the text itself: table headers
``[a.b]``, arrays of tables ``[[listen]]`` (counted, so the second one is index 1), keys, dotted
keys, arrays and inline tables. It expects text that ``tomllib`` accepted; on anything else it
stops quietly and keeps what it found. A path that is not in the text (a missing key) falls back
to its nearest enclosing table or key that is, usually the table's header; then to ``None``.
"""

from __future__ import annotations

import bisect
import tomllib
from collections.abc import Sequence

__all__ = ["KeyLines", "KeyPath", "locate"]

KeyPath = tuple[str | int, ...]

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = frozenset(",]}#\n")


class _Stop(Exception):
    """The text is not what the scanner expects here; skip to the next line."""


def locate(text: str, path: Sequence[str | int]) -> int | None:
    """The 1-based line of ``path`` in ``text``, or of its nearest enclosing key; else ``None``."""
    return KeyLines(text).line(path)


class KeyLines:
    """Every key path found in a TOML text with the line where it is defined."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._newlines = [i for i, char in enumerate(text) if char == "\n"]
        self._lines: dict[KeyPath, int] = {}
        self._explicit: set[KeyPath] = set()
        self._arrays: dict[KeyPath, int] = {}  # array-of-tables path → tables seen so far
        self._scan()

    def line(self, path: Sequence[str | int]) -> int | None:
        """The line of ``path``, else of its longest prefix found in the text, else ``None``."""
        key = tuple(path)
        for end in range(len(key), 0, -1):
            found = self._lines.get(key[:end])
            if found is not None:
                return found
        return None

    def exact(self, path: Sequence[str | int]) -> int | None:
        """The line of ``path`` itself, or ``None`` if the text does not define it."""
        return self._lines.get(tuple(path))

    # --- scanning ---------------------------------------------------------------------------

    def _line_at(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def _peek(self, count: int = 1) -> str:
        return self._text[self._pos : self._pos + count]

    def _scan(self) -> None:
        table: KeyPath = ()
        while self._pos < len(self._text):
            self._skip_blank(newlines=True)
            if self._pos >= len(self._text):
                break
            try:
                if self._peek() == "[":
                    table = self._header()
                else:
                    self._keyval(table)
            except _Stop:
                self._skip_line()
            except IndexError:  # ran off the end of a truncated text
                break

    def _skip_blank(self, *, newlines: bool) -> None:
        text = self._text
        while self._pos < len(text):
            char = text[self._pos]
            if char in " \t" or (newlines and char in "\r\n"):
                self._pos += 1
            elif char == "#":
                self._skip_comment()
            else:
                break

    def _skip_comment(self) -> None:
        end = self._text.find("\n", self._pos)
        self._pos = len(self._text) if end < 0 else end

    def _skip_line(self) -> None:
        end = self._text.find("\n", self._pos)
        self._pos = len(self._text) if end < 0 else end + 1

    def _record(self, path: KeyPath, line: int, *, explicit: bool) -> None:
        if explicit:
            if path not in self._explicit:
                self._explicit.add(path)
                self._lines[path] = line
        else:
            self._lines.setdefault(path, line)

    def _header(self) -> KeyPath:
        line = self._line_at(self._pos)
        is_array = self._peek(2) == "[["
        self._pos += 2 if is_array else 1
        parts = self._key()
        self._skip_blank(newlines=False)
        closing = "]]" if is_array else "]"
        if self._peek(len(closing)) != closing:
            raise _Stop
        self._pos += len(closing)
        resolved: KeyPath = ()
        for part in parts[:-1]:
            resolved = (*resolved, part)
            self._record(resolved, line, explicit=False)
            if resolved in self._arrays:
                resolved = (*resolved, self._arrays[resolved] - 1)
        full = (*resolved, parts[-1])
        if is_array:
            count = self._arrays.get(full, 0)
            self._arrays[full] = count + 1
            self._record(full, line, explicit=False)
            table = (*full, count)
            self._record(table, line, explicit=True)
            return table
        self._record(full, line, explicit=True)
        return full

    def _key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self._skip_blank(newlines=False)
            parts.append(self._simple_key())
            self._skip_blank(newlines=False)
            if self._peek() != ".":
                return parts
            self._pos += 1

    def _simple_key(self) -> str:
        start = self._pos
        char = self._peek()
        if char in ('"', "'"):
            self._skip_string()
            raw = self._text[start : self._pos]
            if char == "'":
                return raw[1:-1]
            try:
                value = tomllib.loads(f"k = {raw}")["k"]
            except tomllib.TOMLDecodeError:
                raise _Stop from None
            return str(value)
        while self._pos < len(self._text) and self._text[self._pos] in _BARE_KEY_CHARS:
            self._pos += 1
        if self._pos == start:
            raise _Stop
        return self._text[start : self._pos]

    def _keyval(self, table: KeyPath) -> None:
        line = self._line_at(self._pos)
        parts = self._key()
        if self._peek() != "=":
            raise _Stop
        self._pos += 1
        path = table
        for part in parts[:-1]:
            path = (*path, part)
            self._record(path, line, explicit=False)
        path = (*path, parts[-1])
        self._record(path, line, explicit=True)
        self._skip_blank(newlines=False)
        self._value(path)

    def _value(self, path: KeyPath) -> None:
        char = self._peek()
        if char in ('"', "'"):
            self._skip_string()
        elif char == "[":
            self._array(path)
        elif char == "{":
            self._inline_table(path)
        else:
            start = self._pos
            while self._pos < len(self._text) and self._text[self._pos] not in _SCALAR_END:
                self._pos += 1
            if self._pos == start:
                raise _Stop

    def _array(self, path: KeyPath) -> None:
        self._pos += 1
        index = 0
        while True:
            self._skip_blank(newlines=True)
            if self._peek() == "]":
                self._pos += 1
                return
            self._record((*path, index), self._line_at(self._pos), explicit=True)
            self._value((*path, index))
            index += 1
            self._skip_blank(newlines=True)
            if self._peek() == ",":
                self._pos += 1
            elif self._peek() != "]":
                raise _Stop

    def _inline_table(self, path: KeyPath) -> None:
        self._pos += 1
        while True:
            self._skip_blank(newlines=True)
            if self._peek() == "}":
                self._pos += 1
                return
            self._keyval(path)
            self._skip_blank(newlines=True)
            if self._peek() == ",":
                self._pos += 1
            elif self._peek() != "}":
                raise _Stop

    def _skip_string(self) -> None:
        text = self._text
        quote = text[self._pos]
        if text.startswith(quote * 3, self._pos):
            end = self._find_closing(quote * 3, self._pos + 3, escapes=quote == '"')
            end += 3
            extra = 0  # a closing delimiter may be followed by up to two more quotes
            while extra < 2 and text.startswith(quote, end):
                end += 1
                extra += 1
            self._pos = end
        else:
            end = self._find_closing(quote, self._pos + 1, escapes=quote == '"')
            if "\n" in text[self._pos : end]:
                raise _Stop
            self._pos = end + 1

    def _find_closing(self, delimiter: str, pos: int, *, escapes: bool) -> int:
        text = self._text
        start = pos
        while True:
            found = text.find(delimiter, pos)
            if found < 0:
                raise _Stop
            if not escapes:
                return found
            backslashes = 0
            while found - 1 - backslashes >= start and text[found - 1 - backslashes] == "\\":
                backslashes += 1
            if backslashes % 2 == 0:
                return found
            pos = found + 1
