"""Byte classes of the "C" locale, and how a set of bytes is written as a ``regex`` atom.

Both pattern translators (:mod:`.pcre`, :mod:`.posix`) resolve every class, escape and
case-insensitive letter to an explicit set of byte values here, then spell that set
with :func:`class_atom`, so the ``regex`` engine never applies its own idea of case or
of ``\\w``/``\\s``: only ASCII letters have a case, and ``\\w``, ``\\d``, ``\\s`` and the
POSIX ``[:name:]`` classes are ASCII, as in Postfix.
"""

from __future__ import annotations

__all__ = [
    "ALL",
    "ALNUM",
    "ALPHA",
    "DIGIT",
    "DOT_ALL",
    "DOT_NO_NL",
    "LOWER",
    "NEWLINE",
    "OCTAL",
    "PCRE_POSIX_CLASSES",
    "PCRE_SHORTHAND",
    "PCRE_VSPACE",
    "POSIX_CLASSES",
    "SPACE",
    "UPPER",
    "WORD",
    "WORD_CLASS",
    "XDIGIT",
    "byte_atom",
    "case_closure",
    "class_atom",
]

ALL = frozenset(range(256))


def _rng(lo: str, hi: str) -> frozenset[int]:
    return frozenset(range(ord(lo), ord(hi) + 1))


DIGIT = _rng("0", "9")
UPPER = _rng("A", "Z")
LOWER = _rng("a", "z")
ALPHA = UPPER | LOWER
ALNUM = ALPHA | DIGIT
WORD = ALNUM | {ord("_")}
#: C ``isspace()``: also what Postfix skips between the parts of a table line.
SPACE = frozenset(b" \t\n\v\f\r")
_BLANK = frozenset(b" \t")
_PRINT = frozenset(range(0x20, 0x7F))
_GRAPH = frozenset(range(0x21, 0x7F))
_PUNCT = _GRAPH - ALNUM
_CNTRL = frozenset(range(0x20)) | {0x7F}
XDIGIT = DIGIT | _rng("a", "f") | _rng("A", "F")
OCTAL = frozenset(b"01234567")
_ASCII = frozenset(range(0x80))
NEWLINE = ord("\n")

POSIX_CLASSES: dict[bytes, frozenset[int]] = {
    b"alpha": ALPHA,
    b"upper": UPPER,
    b"lower": LOWER,
    b"digit": DIGIT,
    b"xdigit": XDIGIT,
    b"space": SPACE,
    b"blank": _BLANK,
    b"print": _PRINT,
    b"graph": _GRAPH,
    b"punct": _PUNCT,
    b"cntrl": _CNTRL,
    b"alnum": ALNUM,
}
#: PCRE2 knows two more POSIX class names.
PCRE_POSIX_CLASSES = {**POSIX_CLASSES, b"word": WORD, b"ascii": _ASCII}

_PCRE_HSPACE = frozenset((0x09, 0x20, 0xA0))
PCRE_VSPACE = frozenset((0x0A, 0x0B, 0x0C, 0x0D, 0x85))
#: PCRE2's ``\d \D \w \W \s \S \h \H \v \V`` (8-bit, non-UTF, "C" tables).
PCRE_SHORTHAND: dict[int, frozenset[int]] = {
    ord("d"): DIGIT,
    ord("D"): ALL - DIGIT,
    ord("w"): WORD,
    ord("W"): ALL - WORD,
    ord("s"): SPACE,
    ord("S"): ALL - SPACE,
    ord("h"): _PCRE_HSPACE,
    ord("H"): ALL - _PCRE_HSPACE,
    ord("v"): PCRE_VSPACE,
    ord("V"): ALL - PCRE_VSPACE,
}


def case_closure(chars: frozenset[int] | set[int]) -> set[int]:
    """*chars* with the other case of every ASCII letter in it added."""
    out = set(chars)
    for c in chars:
        if c in UPPER:
            out.add(c + 32)
        elif c in LOWER:
            out.add(c - 32)
    return out


def byte_atom(c: int) -> str:
    """One byte as a regex atom."""
    return chr(c) if c in ALNUM else f"\\x{c:02x}"


def class_atom(chars: frozenset[int] | set[int]) -> str:
    """An explicit byte set as a regex atom (never case-folded by the engine)."""
    if not chars:
        return "(?!)"
    if len(chars) == 1:
        return byte_atom(next(iter(chars)))
    items = sorted(chars)
    parts: list[str] = []
    start = prev = items[0]
    for c in [*items[1:], -2]:
        if c == prev + 1:
            prev = c
            continue
        if start == prev:
            parts.append(f"\\x{start:02x}")
        elif prev == start + 1:
            parts.append(f"\\x{start:02x}\\x{prev:02x}")
        else:
            parts.append(f"\\x{start:02x}-\\x{prev:02x}")
        start = prev = c
    return "[" + "".join(parts) + "]"


WORD_CLASS = class_atom(WORD)
DOT_ALL = class_atom(ALL)
DOT_NO_NL = class_atom(ALL - {NEWLINE})
