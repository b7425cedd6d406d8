"""PCRE2 syntax for single bytes and byte sets: character escapes and ``[...]`` classes.

The base of the PCRE2 translator (:mod:`.pcre`): reads ``\\n``, ``\\x..``, ``\\x{..}``,
``\\o{..}``, octal and ``\\c.`` escapes as one byte value (8-bit, no UTF mode), and a
character class -- ranges, escapes, ``\\d``-style shorthands, ``[:name:]`` classes,
``\\Q...\\E`` -- as an explicit set of bytes, written with
:func:`~filterd.sdk.patterns.byteclass.class_atom`.
"""

from __future__ import annotations

from .byteclass import (
    ALL,
    ALNUM,
    DIGIT,
    LOWER,
    OCTAL,
    PCRE_POSIX_CLASSES,
    PCRE_SHORTHAND,
    XDIGIT,
    case_closure,
    class_atom,
)
from .scanner import PatternError, Scanner

__all__ = ["PcreByteReader"]

_PCRE_CONTROL_ESCAPES = {
    ord("a"): 0x07,
    ord("e"): 0x1B,
    ord("f"): 0x0C,
    ord("n"): 0x0A,
    ord("r"): 0x0D,
    ord("t"): 0x09,
}


class PcreByteReader(Scanner):
    """The part of a PCRE2 pattern reader that yields bytes and byte sets."""

    def _error(self, message: str) -> PatternError:
        return PatternError(f"{message} at offset {self.i}")

    def _read_octal(self, max_digits: int) -> int:
        start = self.i
        while self.i < self.n and self.i - start < max_digits and self.p[self.i] in OCTAL:
            self.i += 1
        value = int(self.p[start : self.i] or b"0", 8)
        if value > 0xFF:
            raise self._error("octal value is greater than \\377 in 8-bit non-UTF mode")
        return value

    def _read_hex_or_octal_brace(self, base: int) -> int:
        end = self.p.find(b"}", self.i)
        if end < 0:
            raise self._error("missing terminating } in escape")
        digits = self.p[self.i + 1 : end]
        valid = XDIGIT if base == 16 else OCTAL
        if not digits or not all(ch in valid for ch in digits):
            raise self._error("non-hex or non-octal character in \\x{} or \\o{}")
        value = int(digits, base)
        if value > 0xFF:
            raise self._error("character code point value in \\x{} or \\o{} is too large")
        self.i = end + 1
        return value

    def _char_escape(self, c: int) -> int | None:
        """Escapes that stand for one byte (shared by classes); None if not one of those."""
        if c in _PCRE_CONTROL_ESCAPES:
            self.i += 1
            return _PCRE_CONTROL_ESCAPES[c]
        if c == ord("0"):
            return self._read_octal(3)
        if c == ord("o"):
            self.i += 1
            if self._peek() != ord("{"):
                raise self._error("missing opening brace after \\o")
            return self._read_hex_or_octal_brace(8)
        if c == ord("x"):
            self.i += 1
            if self._peek() == ord("{"):
                return self._read_hex_or_octal_brace(16)
            start = self.i
            while self.i < self.n and self.i - start < 2 and self.p[self.i] in XDIGIT:
                self.i += 1
            return int(self.p[start : self.i] or b"0", 16)
        if c == ord("c"):
            self.i += 1
            ctl = self._peek()
            if ctl == -1:
                raise self._error("\\c at end of pattern")
            if ctl >= 0x80 or ctl < 0x20 or ctl == 0x7F:
                raise self._error("\\c must be followed by a printable ASCII character")
            self.i += 1
            if ctl in LOWER:
                ctl -= 32
            return ctl ^ 0x40
        return None

    # -- character classes

    def _char_class(self, caseless: bool) -> str:
        """The ``[...]`` class after ``[`` (*caseless*: the ``i`` option is on)."""
        negate = False
        if self._peek() == ord("^"):
            negate = True
            self.i += 1
        chars: set[int] = set()
        first = True
        while True:
            c = self._peek()
            if c == -1:
                raise self._error("missing terminating ] for character class")
            if c == ord("]") and not first:
                self.i += 1
                break
            first = False
            item = self._class_item(caseless)
            if item is None:
                continue
            if isinstance(item, int):
                if self._peek() == ord("-") and self._peek(1) not in (ord("]"), -1):
                    self.i += 1
                    end = self._class_item(caseless)
                    if not isinstance(end, int):
                        raise self._error("invalid range in character class")
                    if end < item:
                        raise self._error("range out of order in character class")
                    span = set(range(item, end + 1))
                    chars |= case_closure(span) if caseless else span
                    continue
                chars |= case_closure({item}) if caseless else {item}
            else:
                if self._peek() == ord("-") and self._peek(1) not in (ord("]"), -1):
                    raise self._error("invalid range in character class")
                chars |= item
        if negate:
            chars = set(ALL - chars)
        return class_atom(chars)

    def _class_item(self, caseless: bool) -> int | frozenset[int] | None:
        c = self.p[self.i]
        if c == ord("[") and self._peek(1) in (ord(":"), ord("."), ord("=")):
            kind = self.p[self.i + 1]
            end = self.p.find(bytes([kind, ord("]")]), self.i + 2)
            if end >= 0 and kind in (ord("."), ord("=")):
                raise self._error("POSIX collating elements are not supported")
            if end >= 0:
                name = self.p[self.i + 2 : end]
                negate = name.startswith(b"^")
                if negate:
                    name = name[1:]
                if caseless and name in (b"upper", b"lower"):
                    name = b"alpha"
                cls = PCRE_POSIX_CLASSES.get(name)
                if cls is None:
                    raise self._error("unknown POSIX class name")
                self.i = end + 2
                return ALL - cls if negate else cls
        if c != ord("\\"):
            self.i += 1
            return c
        self.i += 1
        c = self._peek()
        if c == -1:
            raise self._error("\\ at end of pattern")
        byte = self._char_escape(c)
        if byte is not None:
            return byte
        if c in DIGIT:
            if c in (ord("8"), ord("9")):
                raise self._error("unsupported \\8 or \\9 in character class")
            return self._read_octal(3)
        self.i += 1
        if c in PCRE_SHORTHAND:
            return PCRE_SHORTHAND[c]
        if c == ord("b"):
            return 0x08
        if c == ord("Q"):
            end = self.p.find(b"\\E", self.i)
            stop = self.n if end < 0 else end
            chars = frozenset(self.p[self.i : stop])
            self.i = self.n if end < 0 else end + 2
            if caseless:
                chars = frozenset(case_closure(chars))
            return chars
        if c == ord("E"):
            return None
        if c in ALNUM:
            raise self._error(f"unrecognized or unsupported escape \\{chr(c)} in class")
        return c
