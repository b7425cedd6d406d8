"""Postfix ``regexp:`` and ``pcre:`` lookup tables, as header_checks(5) uses them.

This is a pure-Python re-implementation of Postfix's dict_regexp.c and dict_pcre.c
(file syntax, rule order, ``if``/``endif``, ``!`` negation, ``$n`` substitution) on top
of the ``regex`` package. Patterns are translated, not passed through:

* ``pcre:`` patterns follow PCRE2 as Postfix compiles them: 8-bit, no UTF mode, the
  "C" locale character tables (only ASCII letters have a case; ``\\w``, ``\\d``, ``\\s``
  and POSIX classes are ASCII), default flags ``i`` and ``s`` on.
* ``regexp:`` patterns follow glibc's ``regcomp()`` (POSIX ERE, or BRE with the ``x``
  flag toggled off) in the "C" locale, GNU extensions included (``\\w \\W \\s \\S \\b
  \\B \\< \\> \\` \\'`` and back-references), leftmost-longest matching when ``$n``
  needs sub-matches, and glibc's case-insensitive mode exactly: glibc upper-cases
  the subject and the pattern -- except the character after a backslash and the
  class names inside ``[: :]`` -- so e.g. ``\\d`` never matches and ``[+-z]``
  shrinks to ``[+-Z]`` under the default ``i`` flag.

Matching works on bytes, like Postfix: a ``str`` key is encoded as UTF-8 (with
``surrogateescape``, so text decoded that way from raw mail round-trips exactly) and
the action text is decoded the same way.

Where Postfix logs a warning and skips a bad rule (or ignores stray text), this module
raises :class:`TableError` naming the file and line instead, so a table that loads
here loads in Postfix without warnings (except the pcre ``X`` flag, which Postfix
built with PCRE2 ignores with a warning and this module ignores silently). PCRE
constructs the translator does not support (recursion, subroutine calls, ``(*VERB)``,
``\\p{..}``, callouts, assertion conditions) are refused as "unsupported".

Known differences, none seen on realistic tables (test_postmap_differential.py):

* regexp: a ``$n`` that refers to a repeated group that can match empty (``(b*)+``)
  may be empty here where glibc reports the last non-empty iteration;
* pcre: ``regex`` accepts some patterns PCRE2 refuses (variable-length lookbehind), and
  has no PCRE2 backtracking limit (use *timeout*).
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import regex

from .actions import Action, ActionError, parse_action, split_action

__all__ = [
    "Flavour",
    "Match",
    "Table",
    "TableError",
    "load_table",
    "parse_table",
]

Flavour = Literal["regexp", "pcre"]

_FLAVOURS: tuple[Flavour, ...] = ("regexp", "pcre")


class TableError(Exception):
    """A malformed table: *file*, 1-based *line* where the logical line started, *message*."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}, line {line}: {message}")
        self.file = file
        self.line = line
        self.message = message


class _PatternError(Exception):
    """A pattern the translator rejects (Postfix would skip the rule)."""


# --------------------------------------------------------------------------------------
# Byte classes ("C" locale)

_ALL = frozenset(range(256))


def _rng(lo: str, hi: str) -> frozenset[int]:
    return frozenset(range(ord(lo), ord(hi) + 1))


_DIGIT = _rng("0", "9")
_UPPER = _rng("A", "Z")
_LOWER = _rng("a", "z")
_ALPHA = _UPPER | _LOWER
_ALNUM = _ALPHA | _DIGIT
_WORD = _ALNUM | {ord("_")}
_SPACE = frozenset(b" \t\n\v\f\r")
_BLANK = frozenset(b" \t")
_PRINT = frozenset(range(0x20, 0x7F))
_GRAPH = frozenset(range(0x21, 0x7F))
_PUNCT = _GRAPH - _ALNUM
_CNTRL = frozenset(range(0x20)) | {0x7F}
_XDIGIT = _DIGIT | _rng("a", "f") | _rng("A", "F")
_ASCII = frozenset(range(0x80))
_NEWLINE = ord("\n")

_POSIX_CLASSES: dict[bytes, frozenset[int]] = {
    b"alpha": _ALPHA,
    b"upper": _UPPER,
    b"lower": _LOWER,
    b"digit": _DIGIT,
    b"xdigit": _XDIGIT,
    b"space": _SPACE,
    b"blank": _BLANK,
    b"print": _PRINT,
    b"graph": _GRAPH,
    b"punct": _PUNCT,
    b"cntrl": _CNTRL,
    b"alnum": _ALNUM,
}
#: PCRE2 knows two more POSIX class names.
_PCRE_POSIX_CLASSES = {**_POSIX_CLASSES, b"word": _WORD, b"ascii": _ASCII}

_PCRE_HSPACE = frozenset((0x09, 0x20, 0xA0))
_PCRE_VSPACE = frozenset((0x0A, 0x0B, 0x0C, 0x0D, 0x85))
_PCRE_SHORTHAND: dict[int, frozenset[int]] = {
    ord("d"): _DIGIT,
    ord("D"): _ALL - _DIGIT,
    ord("w"): _WORD,
    ord("W"): _ALL - _WORD,
    ord("s"): _SPACE,
    ord("S"): _ALL - _SPACE,
    ord("h"): _PCRE_HSPACE,
    ord("H"): _ALL - _PCRE_HSPACE,
    ord("v"): _PCRE_VSPACE,
    ord("V"): _ALL - _PCRE_VSPACE,
}
_PCRE_CONTROL_ESCAPES = {
    ord("a"): 0x07,
    ord("e"): 0x1B,
    ord("f"): 0x0C,
    ord("n"): 0x0A,
    ord("r"): 0x0D,
    ord("t"): 0x09,
}
#: PCRE2 extended-mode white space (non-UTF).
_PCRE_X_SPACE = frozenset(b" \t\n\v\f\r")
_OCTAL = frozenset(b"01234567")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _case_closure(chars: frozenset[int] | set[int]) -> set[int]:
    out = set(chars)
    for c in chars:
        if c in _UPPER:
            out.add(c + 32)
        elif c in _LOWER:
            out.add(c - 32)
    return out


def _lit(c: int) -> str:
    """One byte as a regex atom."""
    return chr(c) if c in _ALNUM else f"\\x{c:02x}"


def _class(chars: frozenset[int] | set[int]) -> str:
    """An explicit byte set as a regex atom (never case-folded by the engine)."""
    if not chars:
        return "(?!)"
    if len(chars) == 1:
        return _lit(next(iter(chars)))
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


_WORD_CLASS = _class(_WORD)
_DOT_ALL = _class(_ALL)
_DOT_NO_NL = _class(_ALL - {_NEWLINE})


# --------------------------------------------------------------------------------------
# PCRE2 -> regex


class _PcreState:
    """Option bits that inline ``(?imsxU)`` can change; scoped per group."""

    __slots__ = ("caseless", "dotall", "extended", "multiline", "ungreedy")

    def __init__(
        self, *, caseless: bool, dotall: bool, extended: bool, multiline: bool, ungreedy: bool
    ) -> None:
        self.caseless = caseless
        self.dotall = dotall
        self.extended = extended
        self.multiline = multiline
        self.ungreedy = ungreedy

    def copy(self) -> _PcreState:
        return _PcreState(
            caseless=self.caseless,
            dotall=self.dotall,
            extended=self.extended,
            multiline=self.multiline,
            ungreedy=self.ungreedy,
        )


class _PcreTranslator:
    """Translate one PCRE2 pattern (8-bit, non-UTF, "C" tables) into ``regex`` syntax."""

    def __init__(self, pattern: bytes, *, dollar_endonly: bool) -> None:
        self.p = pattern
        self.n = len(pattern)
        self.i = 0
        self.ncap = 0
        self.dollar_endonly = dollar_endonly

    # -- helpers

    def _peek(self, offset: int = 0) -> int:
        j = self.i + offset
        return self.p[j] if j < self.n else -1

    def _error(self, message: str) -> _PatternError:
        return _PatternError(f"{message} at offset {self.i}")

    def _skip_ignorable(self, st: _PcreState) -> None:
        """Skip (?#...) comments and, in extended mode, white space and # comments."""
        while self.i < self.n:
            c = self.p[self.i]
            if st.extended and c in _PCRE_X_SPACE:
                self.i += 1
            elif st.extended and c == ord("#"):
                end = self.p.find(b"\n", self.i)
                self.i = self.n if end < 0 else end + 1
            elif self.p.startswith(b"\\E", self.i):
                self.i += 2  # a stray \E is ignored
            elif self.p.startswith(b"\\Q\\E", self.i):
                self.i += 4  # so is an empty \Q\E: "a\Q\E+" is "a+"
            elif self.p.startswith(b"(?#", self.i):
                end = self.p.find(b")", self.i)
                if end < 0:
                    raise self._error("missing ) after (?# comment")
                self.i = end + 1
            else:
                return

    def translate(self, st: _PcreState) -> str:
        out = self._alternation(st, branch_reset=False)
        if self.i < self.n:
            raise self._error("unmatched closing parenthesis")
        return out

    # -- structure

    def _alternation(self, st: _PcreState, *, branch_reset: bool) -> str:
        start_caps = self.ncap
        max_caps = self.ncap
        branches = [self._sequence(st)]
        while self._peek() == ord("|"):
            self.i += 1
            if branch_reset:
                max_caps = max(max_caps, self.ncap)
                self.ncap = start_caps
            branches.append(self._sequence(st))
        if branch_reset:
            self.ncap = max(max_caps, self.ncap)
        return "|".join(branches)

    def _sequence(self, st: _PcreState) -> str:
        items: list[str] = []
        while True:
            self._skip_ignorable(st)
            c = self._peek()
            if c in (-1, ord("|"), ord(")")):
                return "".join(items)
            atom = self._atom(st)
            if atom is None:
                continue
            prefix, text, repeatable = atom
            items.append(prefix)
            self._skip_ignorable(st)
            quant = self._quantifier(st)
            if quant is not None:
                if not repeatable:
                    raise self._error("quantifier does not follow a repeatable item")
                text = f"(?:{text}){quant}"
            items.append(text)

    def _quantifier(self, st: _PcreState) -> str | None:
        c = self._peek()
        if c in (ord("*"), ord("+"), ord("?")):
            self.i += 1
            base = chr(c)
        elif c == ord("{"):
            parsed = self._brace_quantifier()
            if parsed is None:
                return None
            base = parsed
        else:
            return None
        suffix = self._peek()
        if suffix == ord("+"):
            self.i += 1
            return base + "+"
        lazy = suffix == ord("?")
        if lazy:
            self.i += 1
        if lazy != st.ungreedy:
            return base + "?"
        return base

    def _brace_quantifier(self) -> str | None:
        """``{n}``, ``{n,}``, ``{n,m}``; anything else leaves ``{`` a literal (PCRE2 10.42)."""
        j = self.i + 1
        start = j
        while j < self.n and self.p[j] in _DIGIT:
            j += 1
        if j == start:
            return None
        lo = int(self.p[start:j])
        hi: int | None = lo
        if j < self.n and self.p[j] == ord(","):
            j += 1
            start = j
            while j < self.n and self.p[j] in _DIGIT:
                j += 1
            hi = int(self.p[start:j]) if j > start else None
        if j >= self.n or self.p[j] != ord("}"):
            return None
        if lo > 65535 or (hi is not None and hi > 65535):
            raise self._error("number too big in {} quantifier")
        if hi is not None and hi < lo:
            raise self._error("numbers out of order in {} quantifier")
        self.i = j + 1
        if hi == lo:
            return f"{{{lo}}}"
        return f"{{{lo},{'' if hi is None else hi}}}"

    def _literal(self, c: int, st: _PcreState) -> str:
        if st.caseless and c in _ALPHA:
            return _class(_case_closure({c}))
        return _lit(c)

    def _atom(self, st: _PcreState) -> tuple[str, str, bool] | None:
        """One item: (text not subject to a quantifier, quantifiable atom, repeatable)."""
        c = self.p[self.i]
        if c == ord("\\") and self._peek(1) == ord("Q"):
            return self._quoted(st)
        single = self._single_atom(st)
        if single is None:
            return None
        return "", single[0], single[1]

    def _quoted(self, st: _PcreState) -> tuple[str, str, bool] | None:
        """``\\Q...\\E``: literal text; a quantifier applies to its last character."""
        self.i += 2
        end = self.p.find(b"\\E", self.i)
        stop = self.n if end < 0 else end
        chars = [self._literal(ch, st) for ch in self.p[self.i : stop]]
        self.i = self.n if end < 0 else end + 2
        if not chars:
            return None
        return "".join(chars[:-1]), chars[-1], True

    def _single_atom(self, st: _PcreState) -> tuple[str, bool] | None:
        c = self.p[self.i]
        if c == ord("("):
            return self._group(st)
        if c == ord("["):
            self.i += 1
            return self._char_class(st), True
        if c == ord("\\"):
            return self._escape(st)
        self.i += 1
        if c == ord("."):
            return (_DOT_ALL if st.dotall else _DOT_NO_NL), True
        if c == ord("^"):
            return ("(?:\\A|(?<=\\n)(?!\\z))" if st.multiline else "\\A"), False
        if c == ord("$"):
            if st.multiline:
                return "(?=\\n|\\z)", False
            return ("\\z" if self.dollar_endonly else "(?=\\n?\\z)"), False
        if c in (ord("*"), ord("+"), ord("?")):
            self.i -= 1
            raise self._error("quantifier does not follow a repeatable item")
        if c == ord("{"):
            self.i -= 1
            if self._brace_quantifier() is not None:
                raise self._error("quantifier does not follow a repeatable item")
            self.i += 1
        return self._literal(c, st), True

    # -- groups

    def _name(self, terminator: int) -> str:
        end = self.p.find(bytes([terminator]), self.i)
        if end < 0:
            raise self._error("syntax error in subpattern name (missing terminator)")
        name = self.p[self.i : end]
        if not name or not all(ch in _WORD for ch in name) or name[0] in _DIGIT or len(name) > 32:
            raise self._error("bad subpattern name")
        self.i = end + 1
        return name.decode("ascii")

    def _group(self, st: _PcreState) -> tuple[str, bool] | None:
        self.i += 1  # (
        if self._peek() == ord("*"):
            raise self._error("unsupported (*VERB) or alpha assertion")
        inner = st.copy()
        if self._peek() != ord("?"):
            self.ncap += 1
            return "(" + self._group_body(inner) + ")", True
        self.i += 1
        c = self._peek()
        if c == ord(":"):
            self.i += 1
            return "(?:" + self._group_body(inner) + ")", True
        if c == ord("|"):
            self.i += 1
            body = self._alternation(inner, branch_reset=True)
            self._close_group()
            return "(?|" + body + ")", True
        if c == ord(">"):
            self.i += 1
            return "(?>" + self._group_body(inner) + ")", True
        if c in (ord("="), ord("!")):
            self.i += 1
            return f"(?{chr(c)}" + self._group_body(inner) + ")", True
        if c == ord("<") and self._peek(1) in (ord("="), ord("!")):
            kind = chr(self._peek(1))
            self.i += 2
            return f"(?<{kind}" + self._group_body(inner) + ")", True
        if c == ord("<") or c == ord("'") or (c == ord("P") and self._peek(1) == ord("<")):
            if c == ord("P"):
                self.i += 1
            terminator = ord(">") if self._peek() == ord("<") else ord("'")
            self.i += 1
            name = self._name(terminator)
            self.ncap += 1
            return f"(?P<{name}>" + self._group_body(inner) + ")", True
        if c == ord("P") and self._peek(1) == ord("="):
            self.i += 2
            name = self._name(ord(")"))
            return self._backref_named(name, st), True
        if c == ord("("):
            self.i += 1
            return self._conditional(inner), True
        if c == ord("#"):
            end = self.p.find(b")", self.i)
            if end < 0:
                raise self._error("missing ) after (?# comment")
            self.i = end + 1
            return None
        # Option setting: (?imsxU-imsxU) or (?imsxU-imsxU:...), (?^...)
        on = True
        target = inner
        changed = False
        while True:
            c = self._peek()
            if c == ord(")"):
                self.i += 1
                # Applies to the rest of the enclosing group: mutate the caller's state.
                for slot in _PcreState.__slots__:
                    setattr(st, slot, getattr(target, slot))
                return None
            if c == ord(":"):
                self.i += 1
                return "(?:" + self._group_body(target) + ")", True
            if c == ord("-") and on:
                on = False
            elif c == ord("^") and not changed and on:
                target.caseless = target.multiline = target.dotall = target.extended = False
            elif c == ord("i"):
                target.caseless = on
            elif c == ord("m"):
                target.multiline = on
            elif c == ord("s"):
                target.dotall = on
            elif c == ord("x"):
                target.extended = on
            elif c == ord("U"):
                target.ungreedy = on
            elif c in (ord("R"), ord("&"), ord("+"), ord("C")) or c in _DIGIT:
                raise self._error("unsupported recursion, subroutine call or callout")
            elif c == -1:
                raise self._error("missing closing parenthesis")
            else:
                raise self._error(f"unsupported group option {chr(c)!r}")
            changed = True
            self.i += 1

    def _group_body(self, st: _PcreState) -> str:
        body = self._alternation(st, branch_reset=False)
        self._close_group()
        return body

    def _close_group(self) -> None:
        if self._peek() != ord(")"):
            raise self._error("missing closing parenthesis")
        self.i += 1

    def _conditional(self, st: _PcreState) -> str:
        c = self._peek()
        if c in _DIGIT or c in (ord("+"), ord("-")):
            j = self.i + (1 if c in (ord("+"), ord("-")) else 0)
            start = j
            while j < self.n and self.p[j] in _DIGIT:
                j += 1
            if j == start or j >= self.n or self.p[j] != ord(")"):
                raise self._error("malformed number or name after (?(")
            num = int(self.p[start:j])
            if c == ord("+"):
                num = self.ncap + num
            elif c == ord("-"):
                num = self.ncap - num + 1
            if num <= 0:
                raise self._error("invalid condition (?(0)")
            self.i = j + 1
            cond = str(num)
        elif c in (ord("<"), ord("'")):
            self.i += 1
            cond = self._name(ord(">") if c == ord("<") else ord("'"))
            self._close_group()
        elif c in _WORD and c not in _DIGIT:
            name = self._name(ord(")"))
            if name == "DEFINE" or name.startswith("R"):
                raise self._error("unsupported recursion condition")
            cond = name
        else:
            raise self._error("unsupported assertion condition")
        body = self._alternation(st, branch_reset=False)
        self._close_group()
        return f"(?({cond})" + body + ")"

    # -- escapes

    def _backref(self, num: int, st: _PcreState) -> str:
        ref = f"(?:\\g<{num}>)"
        return f"(?i:{ref})" if st.caseless else f"(?-i:{ref})"

    def _backref_named(self, name: str, st: _PcreState) -> str:
        ref = f"(?P={name})"
        return f"(?i:{ref})" if st.caseless else f"(?-i:{ref})"

    def _read_octal(self, max_digits: int) -> int:
        start = self.i
        while self.i < self.n and self.i - start < max_digits and self.p[self.i] in _OCTAL:
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
        valid = _HEX if base == 16 else _OCTAL
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
            while self.i < self.n and self.i - start < 2 and self.p[self.i] in _HEX:
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
            if ctl in _LOWER:
                ctl -= 32
            return ctl ^ 0x40
        return None

    def _escape(self, st: _PcreState) -> tuple[str, bool] | None:
        self.i += 1  # backslash
        c = self._peek()
        if c == -1:
            raise self._error("\\ at end of pattern")
        if c in _DIGIT and c != ord("0"):
            start = self.i
            j = self.i
            while j < self.n and self.p[j] in _DIGIT:
                j += 1
            num = int(self.p[start:j])
            if num < 10 or c in (ord("8"), ord("9")) or num <= self.ncap:
                self.i = j
                return self._backref(num, st), True
            value = self._read_octal(3)
            return self._literal(value, st), True
        byte = self._char_escape(c)
        if byte is not None:
            return self._literal(byte, st), True
        self.i += 1
        if c in _PCRE_SHORTHAND:
            return _class(_PCRE_SHORTHAND[c]), True
        simple = {
            ord("A"): ("\\A", False),
            ord("z"): ("\\z", False),
            ord("Z"): ("(?=\\n?\\z)", False),
            ord("G"): ("\\G", False),
            ord("b"): ("\\b", False),
            ord("B"): ("\\B", False),
            ord("K"): ("\\K", False),
            ord("C"): (_DOT_ALL, True),
            ord("R"): ("(?>\\r\\n|" + _class(_PCRE_VSPACE) + ")", True),
        }
        if c in simple:
            return simple[c]
        if c == ord("N"):
            if self._peek() == ord("{"):
                saved = self.i
                is_quantifier = self._brace_quantifier() is not None
                self.i = saved
                if not is_quantifier:  # \N{U+hhhh} needs UTF mode; \N{name} does not exist
                    raise self._error("unsupported \\N{...}")
            return _DOT_NO_NL, True
        if c == ord("E"):
            return None
        if c == ord("g"):
            return self._g_escape(st), True
        if c == ord("k"):
            opener = self._peek()
            closer = {ord("<"): ord(">"), ord("'"): ord("'"), ord("{"): ord("}")}.get(opener)
            if closer is None:
                raise self._error("\\k is not followed by a name in <>, '' or {}")
            self.i += 1
            return self._backref_named(self._name(closer), st), True
        if c in _ALNUM:
            raise self._error(f"unrecognized or unsupported escape \\{chr(c)}")
        return self._literal(c, st), True

    def _g_escape(self, st: _PcreState) -> str:
        c = self._peek()
        if c in (ord("<"), ord("'")):
            raise self._error("unsupported subroutine call \\g<...>")
        braced = c == ord("{")
        if braced:
            self.i += 1
            c = self._peek()
        negative = c == ord("-")
        if negative or c == ord("+"):
            self.i += 1
        start = self.i
        while self.i < self.n and self.p[self.i] in _DIGIT:
            self.i += 1
        if self.i > start:
            num = int(self.p[start : self.i])
            if negative:
                num = self.ncap - num + 1
            if braced:
                self._expect(ord("}"))
            if num <= 0:
                raise self._error("invalid relative back reference")
            return self._backref(num, st)
        if braced and not negative:
            return self._backref_named(self._name(ord("}")), st)
        raise self._error("a numbered reference must not be zero")

    def _expect(self, c: int) -> None:
        if self._peek() != c:
            raise self._error(f"missing {chr(c)!r}")
        self.i += 1

    # -- character classes

    def _char_class(self, st: _PcreState) -> str:
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
            item = self._class_item(st)
            if item is None:
                continue
            if isinstance(item, int):
                if self._peek() == ord("-") and self._peek(1) not in (ord("]"), -1):
                    self.i += 1
                    end = self._class_item(st)
                    if not isinstance(end, int):
                        raise self._error("invalid range in character class")
                    if end < item:
                        raise self._error("range out of order in character class")
                    span = set(range(item, end + 1))
                    chars |= _case_closure(span) if st.caseless else span
                    continue
                chars |= _case_closure({item}) if st.caseless else {item}
            else:
                if self._peek() == ord("-") and self._peek(1) not in (ord("]"), -1):
                    raise self._error("invalid range in character class")
                chars |= item
        if negate:
            chars = set(_ALL - chars)
        return _class(chars)

    def _class_item(self, st: _PcreState) -> int | frozenset[int] | None:
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
                if st.caseless and name in (b"upper", b"lower"):
                    name = b"alpha"
                cls = _PCRE_POSIX_CLASSES.get(name)
                if cls is None:
                    raise self._error("unknown POSIX class name")
                self.i = end + 2
                return _ALL - cls if negate else cls
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
        if c in _DIGIT:
            if c in (ord("8"), ord("9")):
                raise self._error("unsupported \\8 or \\9 in character class")
            return self._read_octal(3)
        self.i += 1
        if c in _PCRE_SHORTHAND:
            return _PCRE_SHORTHAND[c]
        if c == ord("b"):
            return 0x08
        if c == ord("Q"):
            end = self.p.find(b"\\E", self.i)
            stop = self.n if end < 0 else end
            chars = frozenset(self.p[self.i : stop])
            self.i = self.n if end < 0 else end + 2
            if st.caseless:
                chars = frozenset(_case_closure(chars))
            return chars
        if c == ord("E"):
            return None
        if c in _ALNUM:
            raise self._error(f"unrecognized or unsupported escape \\{chr(c)} in class")
        return c


# --------------------------------------------------------------------------------------
# POSIX (glibc regcomp) -> regex


class _PosixTranslator:
    """Translate a glibc ERE/BRE ("C" locale) into ``regex`` syntax.

    With *icase* the caller matches the upper-cased subject against the case-sensitive
    result, which is what glibc does.
    """

    def __init__(self, pattern: bytes, *, extended: bool, icase: bool, newline: bool) -> None:
        self.p = pattern
        self.n = len(pattern)
        self.i = 0
        self.extended = extended
        self.icase = icase
        self.newline = newline
        self.ncap = 0
        self.completed: set[int] = set()

    def _peek(self, offset: int = 0) -> int:
        j = self.i + offset
        return self.p[j] if j < self.n else -1

    def _error(self, message: str) -> _PatternError:
        return _PatternError(message)

    def _fold(self, c: int) -> int:
        return c - 32 if self.icase and c in _LOWER else c

    def translate(self) -> str:
        out = self._alternation(0)
        if self.i < self.n:  # pragma: no cover - _sequence consumes everything at depth 0
            raise self._error("Unmatched ) or \\)")
        return out

    def _at_alt(self) -> bool:
        if self.extended:
            return self._peek() == ord("|")
        return self._peek() == ord("\\") and self._peek(1) == ord("|")

    def _at_close(self) -> bool:
        if self.extended:
            return self._peek() == ord(")")
        return self._peek() == ord("\\") and self._peek(1) == ord(")")

    def _alternation(self, depth: int) -> str:
        branches = [self._sequence(depth)]
        while self._at_alt():
            self.i += 1 if self.extended else 2
            branches.append(self._sequence(depth))
        return "|".join(branches)

    def _quantifier_start(self) -> str | None:
        c = self._peek()
        if self.extended:
            if c in (ord("*"), ord("+"), ord("?"), ord("{")):
                return chr(c)
            return None
        if c == ord("*"):
            return "*"
        if c == ord("\\") and self._peek(1) in (ord("+"), ord("?"), ord("{")):
            return chr(self._peek(1))
        return None

    def _interval(self) -> str:
        """Parse the interval after ``{`` (ERE) or ``\\{`` (BRE)."""
        start = self.i
        while self.i < self.n and self.p[self.i] in _DIGIT:
            self.i += 1
        lo = int(self.p[start : self.i]) if self.i > start else None
        hi: int | None
        if self._peek() == ord(","):
            self.i += 1
            start = self.i
            while self.i < self.n and self.p[self.i] in _DIGIT:
                self.i += 1
            hi = int(self.p[start : self.i]) if self.i > start else None
            if lo is None:
                lo = 0  # glibc reads "{,m}" as "{0,m}"
        else:
            if lo is None:
                raise self._error(
                    "Unmatched \\{" if self.i >= self.n else "Invalid content of \\{\\}"
                )
            hi = lo
        if self.extended:
            closed = self._peek() == ord("}")
            width = 1
        else:
            closed = self._peek() == ord("\\") and self._peek(1) == ord("}")
            width = 2
        if not closed:
            raise self._error("Unmatched \\{" if self.i >= self.n else "Invalid content of \\{\\}")
        self.i += width
        if lo > 0x7FFF or (hi is not None and hi > 0x7FFF):
            raise self._error("Regular expression too big")
        if hi is not None and hi < lo:
            raise self._error("Invalid content of \\{\\}")
        if hi == lo:
            return f"{{{lo}}}"
        return f"{{{lo},{'' if hi is None else hi}}}"

    def _sequence(self, depth: int) -> str:
        # Each item: [text, quantified, repeatable]
        items: list[tuple[str, bool, bool]] = []
        at_start = True
        while self.i < self.n:
            if self._at_alt():
                break
            if self._at_close():
                if depth > 0:
                    break
                if not self.extended:
                    raise self._error("Unmatched ) or \\)")
                # ERE: an unmatched ")" is an ordinary character in glibc.
                self.i += 1
                items.append((_lit(ord(")")), False, True))
                at_start = False
                continue
            quant = self._quantifier_start()
            if quant is not None:
                repeatable = bool(items) and items[-1][2]
                if not repeatable:
                    if self.extended or quant == "{":
                        raise self._error("Invalid preceding regular expression")
                    # BRE: a leading "*", "\+" or "\?" is an ordinary character.
                    self.i += 1 if quant == "*" else 2
                    items.append((_lit(ord(quant)), False, True))
                    at_start = False
                    continue
                text, quantified, _ = items[-1]
                if quantified and not self.extended and quant in ("*", "{"):
                    # glibc: "In BRE consecutive duplications are not allowed."
                    raise self._error("Invalid preceding regular expression")
                self.i += 1 if self.extended or quant == "*" else 2
                suffix = self._interval() if quant == "{" else quant
                text = f"(?:{text}){suffix}" if quantified else text + suffix
                items[-1] = (text, True, True)
                continue
            atom = self._atom(at_start)
            items.append((atom[0], False, atom[1]))
            at_start = False
        return "".join(text for text, _, _ in items)

    def _atom(self, at_start: bool) -> tuple[str, bool]:
        c = self.p[self.i]
        self.i += 1
        if c == ord("^"):
            if self.extended or at_start:
                return ("(?:\\A|(?<=\\n))" if self.newline else "\\A"), False
            return _lit(c), True
        if c == ord("$"):
            if self.extended or self.i >= self.n or self._at_close() or self._at_alt():
                return ("(?=\\n|\\z)" if self.newline else "\\z"), False
            return _lit(c), True
        if c == ord("."):
            return (_DOT_NO_NL if self.newline else _DOT_ALL), True
        if c == ord("["):
            return self._bracket(), True
        if c == ord("(") and self.extended:
            return self._group(), True
        if c == ord("\\"):
            return self._escape()
        return _lit(self._fold(c)), True

    def _group(self) -> str:
        self.ncap += 1
        index = self.ncap
        body = self._alternation(1)
        if not self._at_close():
            raise self._error("Unmatched ( or \\(")
        self.i += 1 if self.extended else 2
        self.completed.add(index)
        return "(" + body + ")"

    def _escape(self) -> tuple[str, bool]:
        c = self._peek()
        if c == -1:
            raise self._error("Trailing backslash")
        self.i += 1
        if not self.extended:
            if c == ord("("):
                return self._group(), True
            if c == ord("{"):  # pragma: no cover - handled as a quantifier
                raise self._error("Invalid preceding regular expression")
        if c in _DIGIT and c != ord("0"):
            num = c - ord("0")
            if num not in self.completed:
                raise self._error("Invalid back reference")
            return f"(?:\\g<{num}>)", True
        word = _WORD_CLASS
        table: dict[int, tuple[str, bool]] = {
            ord("w"): (word, True),
            ord("W"): (_class(_ALL - _WORD), True),
            ord("s"): (_class(_SPACE), True),
            ord("S"): (_class(_ALL - _SPACE), True),
            ord("b"): ("\\b", False),
            ord("B"): ("\\B", False),
            ord("<"): (f"\\b(?={word})", False),
            ord(">"): (f"\\b(?<={word})", False),
            ord("`"): ("\\A", False),
            ord("'"): ("\\z", False),
        }
        if c in table:
            return table[c]
        # Any other escaped character is itself, in its original case (glibc reads the
        # byte after a backslash from the un-folded pattern).
        return _lit(c), True

    def _bracket(self) -> str:
        negate = False
        if self._peek() == ord("^"):
            negate = True
            self.i += 1
        chars: set[int] = set()
        first = True
        while True:
            c = self._peek()
            if c == -1:
                raise self._error("Unmatched [, [^, [:, [., or [=")
            if c == ord("]") and not first:
                self.i += 1
                break
            first = False
            item = self._bracket_item()
            if isinstance(item, int) and self._peek() == ord("-") and self._peek(1) != ord("]"):
                self.i += 1
                if self._peek() == -1:
                    raise self._error("Unmatched [, [^, [:, [., or [=")
                end = self._bracket_item()
                if not isinstance(end, int) or end < item:
                    raise self._error("Invalid range end")
                chars.update(range(item, end + 1))
                item = frozenset()  # a range cannot start another range
            elif isinstance(item, int):
                chars.add(item)
                continue
            else:
                chars |= item
            # After a range or a class, "-" may only stand right before "]".
            if self._peek() == ord("-") and self._peek(1) != ord("]"):
                raise self._error("Invalid range end")
        if negate:
            chars = set(_ALL - chars)
            if self.newline:
                chars.discard(_NEWLINE)
        return _class(chars)

    def _bracket_item(self) -> int | frozenset[int]:
        c = self.p[self.i]
        if c == ord("[") and self._peek(1) in (ord(":"), ord("."), ord("=")):
            kind = self.p[self.i + 1]
            end = self.p.find(bytes([kind, ord("]")]), self.i + 2)
            if end < 0:
                raise self._error("Unmatched [, [^, [:, [., or [=")
            name = self.p[self.i + 2 : end]
            self.i = end + 2
            if kind == ord(":"):
                if self.icase and name in (b"upper", b"lower"):
                    name = b"alpha"
                cls = _POSIX_CLASSES.get(name)
                if cls is None:
                    raise self._error("Invalid character class name")
                return cls
            if len(name) != 1:
                raise self._error("Invalid collation character")
            char = self._fold(name[0])
            return char if kind == ord(".") else frozenset((char,))
        self.i += 1
        return self._fold(c)


# --------------------------------------------------------------------------------------
# Compiled patterns


@dataclass(frozen=True, slots=True)
class _Pattern:
    compiled: regex.Pattern[bytes]
    upper: bool  # match against the upper-cased subject (glibc REG_ICASE)
    anchored: bool  # PCRE2_ANCHORED
    positive: bool  # False for !/pattern/

    def find(
        self, subject: bytes, upper: bytes, timeout: float | None
    ) -> regex.Match[bytes] | None:
        text = upper if self.upper else subject
        # Passing timeout=None still costs regex a slow path per call: omit it when unset.
        if timeout is None:
            return self.compiled.match(text) if self.anchored else self.compiled.search(text)
        if self.anchored:
            return self.compiled.match(text, timeout=timeout)
        return self.compiled.search(text, timeout=timeout)


_PCRE_FLAGS = frozenset("imsxAEUX")
_REGEXP_FLAGS = frozenset("imx")


def _compile(
    flavour: Flavour, pattern: bytes, flags: str, *, positive: bool, captures: bool
) -> _Pattern:
    """Translate and compile one pattern with its Postfix flag letters."""
    if flavour == "pcre":
        caseless = dotall = True
        multiline = extended = anchored = endonly = ungreedy = False
        for f in flags:
            if f == "i":
                caseless = not caseless
            elif f == "m":
                multiline = not multiline
            elif f == "s":
                dotall = not dotall
            elif f == "x":
                extended = not extended
            elif f == "A":
                anchored = not anchored
            elif f == "E":
                endonly = not endonly
            elif f == "U":
                ungreedy = not ungreedy
            # "X" (PCRE_EXTRA) is ignored by Postfix built with PCRE2.
        state = _PcreState(
            caseless=caseless,
            dotall=dotall,
            extended=extended,
            multiline=multiline,
            ungreedy=ungreedy,
        )
        source = _PcreTranslator(pattern, dollar_endonly=endonly and not multiline).translate(state)
        upper = False
        posix = False
    else:
        icase = extended = True
        newline = False
        for f in flags:
            if f == "i":
                icase = not icase
            elif f == "m":
                newline = not newline
            elif f == "x":
                extended = not extended
        source = _PosixTranslator(
            pattern, extended=extended, icase=icase, newline=newline
        ).translate()
        upper = icase
        anchored = False
        posix = captures  # leftmost-longest only matters for sub-matches
    try:
        compiled = regex.compile(source.encode("ascii"), regex.V0 | (regex.POSIX if posix else 0))
    except regex.error as exc:
        raise _PatternError(str(exc)) from exc
    return _Pattern(compiled=compiled, upper=upper, anchored=anchored, positive=positive)


# --------------------------------------------------------------------------------------
# Replacement text ($n substitution, mac_parse())

_Template = tuple[bytes | int, ...]


def _mac_parse(text: bytes) -> _Template:
    """Split replacement text into literals and group numbers, like mac_parse() + prescan."""
    parts: list[bytes | int] = []
    buf = bytearray()
    i, n = 0, len(text)
    dollar = ord("$")
    while i < n:
        c = text[i]
        if c != dollar:
            buf.append(c)
            i += 1
            continue
        if i + 1 < n and text[i + 1] == dollar:
            buf.append(dollar)
            i += 2
            continue
        if buf:
            parts.append(bytes(buf))
            buf.clear()
        i += 1
        if i < n and text[i] in b"({":
            opener = text[i]
            closer = ord(")") if opener == ord("(") else ord("}")
            level = 1
            i += 1
            start = i
            while level > 0:
                if i >= n:
                    raise _PatternError(f'truncated macro reference: "{_show(text)}"')
                if text[i] == opener:
                    level += 1
                elif text[i] == closer:
                    level -= 1
                i += 1
            name = text[start : i - 1]
        else:
            start = i
            while i < n and (text[i] in _ALNUM or text[i] == ord("_")):
                i += 1
            name = text[start:i]
        if not name:
            raise _PatternError(f'empty macro name: "{_show(text)}"')
        if not all(ch in _DIGIT for ch in name):
            raise _PatternError(f'non-numeric replacement index "{_show(name)}"')
        number = int(name)
        if number < 1:
            raise _PatternError(f'out of range replacement index "{_show(name)}"')
        parts.append(number)
    if buf:
        parts.append(bytes(buf))
    return tuple(parts)


def _show(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------
# Rules and the table


class _Op(enum.Enum):
    MATCH = 1
    IF = 2
    ENDIF = 3


@dataclass(frozen=True, slots=True)
class _Rule:
    op: _Op
    line: int
    pattern: _Pattern | None = None
    second: _Pattern | None = None  # regexp: /p1/!/p2/
    template: _Template = ()
    max_sub: int = 0
    literal: str | None = None  # the value, when it has no $n
    action: Action | None = None  # the value parsed, when it has no $n
    skip_to: int = 0  # IF: index of the matching ENDIF
    name_hint: bytes | None = None  # lower-case header name the rule can only match, if known


@dataclass(frozen=True, slots=True)
class Match:
    """The first rule that fired for a lookup.

    ``value`` is the table's result after ``$n`` substitution, exactly what
    ``postmap -q`` prints; ``action`` is that value parsed; ``line`` is the table line
    where the rule starts.
    """

    value: str
    action: Action
    line: int


_C_SPACE = frozenset(b" \t\n\v\f\r")


def _logical_lines(data: bytes, name: str) -> Iterator[tuple[int, bytes]]:
    """Postfix readllines(): yield (first line number, logical line)."""
    current: bytearray | None = None
    first = 0
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for lineno, raw in enumerate(lines, start=1):
        stripped = raw.lstrip(b" \t\n\v\f\r")
        if not stripped or stripped.startswith(b"#"):
            continue
        if raw[0] in _C_SPACE:
            if current is None:
                raise TableError(name, lineno, "logical line must not start with whitespace")
            current += raw
            continue
        if current is not None:
            yield first, bytes(current)
        current = bytearray(raw)
        first = lineno
    if current is not None:
        yield first, bytes(current)


class Table:
    """A compiled regexp:/pcre: table; build one with :func:`load_table` or :func:`parse_table`."""

    __slots__ = (
        "_by_name",
        "_fast",
        "_generic",
        "_needs_upper",
        "_rules",
        "flavour",
        "name",
        "timeout",
    )

    def __init__(
        self, rules: Sequence[_Rule], *, flavour: Flavour, name: str, timeout: float | None
    ) -> None:
        self._rules = tuple(rules)
        self._needs_upper = any(
            pattern.upper
            for rule in self._rules
            for pattern in (rule.pattern, rule.second)
            if pattern is not None
        )
        self.flavour = flavour
        self.name = name
        self.timeout = timeout
        self._generic, self._by_name = _index(self._rules)
        self._fast = _fast_entries(self._rules)

    def __len__(self) -> int:
        """Number of match rules (``if``/``endif`` not counted)."""
        return sum(1 for rule in self._rules if rule.op is _Op.MATCH)

    def __repr__(self) -> str:
        return f"<Table {self.flavour}:{self.name} ({len(self)} rules)>"

    def static_actions(self) -> Iterator[tuple[int, Action]]:
        """(line, action) of every rule whose action is known at load time (no ``$n``)."""
        for rule in self._rules:
            if rule.op is _Op.MATCH and rule.action is not None:
                yield rule.line, rule.action

    def lookup(self, key: str | bytes) -> Match | None:
        """Look up one key (a logical header line, or any string) like dict_regexp/dict_pcre.

        A header is presented as Postfix's cleanup(8) does: ``Name: value`` with folded
        continuation lines joined by ``\\n`` (no CR), the continuation white space kept,
        and no trailing newline. Empty keys never match (maps_find()); a key is cut at
        its first NUL byte, as Postfix sees C strings.

        Raises :class:`~filterd_header_checks.actions.ActionError` only for a table
        parsed with ``check_actions=False`` whose value is not an action.
        """
        found = self._find(_key_bytes(key))
        if found is None:
            return None
        rule, value = found
        if rule.action is not None:
            return Match(value=value, action=rule.action, line=rule.line)
        return Match(value=value, action=parse_action(value), line=rule.line)

    def lookup_body(self, line: str | bytes) -> Match | None:
        """Look up one body line (body_checks): one trailing LF or CRLF is ignored.

        Postfix hands body_checks one physical line at a time, without its line end, in
        chunks of at most line_length_limit (2048) bytes; chunking is up to the caller.
        """
        data = _encode(line) if isinstance(line, str) else line
        if data.endswith(b"\n"):
            data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
        return self.lookup(data)

    def query(self, key: str | bytes) -> str | None:
        """The table's value for *key* after substitution, as ``postmap -q`` prints it."""
        found = self._find(_key_bytes(key))
        return None if found is None else found[1]

    def _candidates(self, data: bytes) -> tuple[int, ...]:
        """Indexes of the rules that can match ``data``, in table order: rules hinted to
        another header name are left out (most header_checks rules are ``/^Name: .../``)."""
        if not self._by_name:
            return self._generic
        colon = data.find(b":")
        name = data[:colon].lower() if colon > 0 else b""
        found = self._by_name.get(name)
        if found is not None:
            return found
        return self._generic

    def _find(self, data: bytes) -> tuple[_Rule, str] | None:
        if not data:
            return None
        rules = self._rules
        timeout = self.timeout
        upper = data.upper() if self._needs_upper else data
        order = self._candidates(data)
        fast = self._fast
        at, count = 0, len(order)
        while at < count:
            i = order[at]
            at += 1
            op, search, use_upper, positive = fast[i]
            if op is _Op.ENDIF:
                continue
            try:
                if timeout is None:  # the hot path: a bound match/search, no keyword
                    found = search(upper if use_upper else data)
                else:
                    found = cast(_Pattern, rules[i].pattern).find(data, upper, timeout)
            except TimeoutError:
                # Postfix: a matching error is neither a match nor a non-match; for an IF
                # the condition is false.
                if op is _Op.IF:
                    at = _skip_block(order, at, rules[i].skip_to)
                continue
            if op is _Op.IF:
                if (found is not None) != positive:
                    # Rules inside if/endif are never hinted, so they are contiguous in
                    # ``order`` up to the ENDIF.
                    at = _skip_block(order, at, rules[i].skip_to)
                continue
            if (found is not None) != positive:
                continue
            result = self._value(rules[i], data, upper, found)
            if result is not None:
                return result
        return None

    def _value(
        self, rule: _Rule, data: bytes, upper: bytes, found: regex.Match[bytes] | None
    ) -> tuple[_Rule, str] | None:
        """The second pattern (regexp ``/p1/!/p2/``), then the value with $n substituted."""
        second = rule.second
        if second is not None:
            try:
                hit = second.find(data, upper, self.timeout) is not None
            except TimeoutError:
                return None
            if hit != second.positive:
                return None
        if rule.literal is not None:
            return rule, rule.literal
        assert found is not None
        out = bytearray()
        for part in rule.template:
            if isinstance(part, int):
                begin, stop = found.span(part)
                if begin >= 0 and stop > begin:
                    out += data[begin:stop]
            else:
                out += part
        return rule, _decode(bytes(out))


_Matcher = Callable[[bytes], "regex.Match[bytes] | None"]


def _skip_block(order: tuple[int, ...], at: int, endif: int) -> int:
    while at < len(order) and order[at] <= endif:
        at += 1
    return at


def _never(_: bytes) -> None:
    return None


def _fast_entries(rules: tuple[_Rule, ...]) -> tuple[tuple[_Op, _Matcher, bool, bool], ...]:
    """Per rule: (op, bound match/search of its compiled pattern, on the upper-cased subject?,
    positive?) — what the lookup loop needs, without attribute chains per rule."""
    entries: list[tuple[_Op, _Matcher, bool, bool]] = []
    for rule in rules:
        pattern = rule.pattern
        if pattern is None:
            entries.append((rule.op, _never, False, True))
            continue
        compiled = pattern.compiled
        search = cast(_Matcher, compiled.match if pattern.anchored else compiled.search)
        entries.append((rule.op, search, pattern.upper, pattern.positive))
    return tuple(entries)


def _index(rules: tuple[_Rule, ...]) -> tuple[tuple[int, ...], dict[bytes, tuple[int, ...]]]:
    """(rules for any header, rules per hinted header name incl. the generic ones)."""
    depth = 0
    hints: list[bytes | None] = []
    for rule in rules:
        if rule.op is _Op.IF:
            depth += 1
        hints.append(rule.name_hint if depth == 0 else None)
        if rule.op is _Op.ENDIF:
            depth -= 1
    generic = tuple(i for i, hint in enumerate(hints) if hint is None)
    names = {hint for hint in hints if hint is not None}
    by_name = {
        name: tuple(i for i, hint in enumerate(hints) if hint is None or hint == name)
        for name in names
    }
    return generic, by_name


def _key_bytes(key: str | bytes) -> bytes:
    data = _encode(key) if isinstance(key, str) else key
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def _get_pattern(
    flavour: Flavour, text: bytes, pos: int, fail: _Fail
) -> tuple[bytes, str, bool, int]:
    """dict_*_get_pat(): negation, delimited pattern and flags starting at *pos*."""
    positive = True
    n = len(text)
    while pos < n and (text[pos] == ord("!") or text[pos] in _C_SPACE):
        if text[pos] == ord("!"):
            positive = not positive
        pos += 1
    if pos >= n:
        raise fail("no regexp")
    delim = text[pos]
    pos += 1
    start = pos
    while pos < n:
        if text[pos] == ord("\\"):
            if pos + 1 >= n:
                break
            pos += 1
        elif text[pos] == delim:
            break
        pos += 1
    if pos >= n:
        raise fail(f'no closing regexp delimiter "{chr(delim)}"')
    pattern = text[start:pos]
    pos += 1
    flag_start = pos
    allowed = _PCRE_FLAGS if flavour == "pcre" else _REGEXP_FLAGS
    while pos < n and text[pos] not in _C_SPACE and (flavour == "pcre" or text[pos] != ord("!")):
        if chr(text[pos]) not in allowed:
            raise fail(f'unknown regexp option "{chr(text[pos])}"')
        pos += 1
    return pattern, text[flag_start:pos].decode("ascii"), positive, pos


class _Fail:
    """Builds TableErrors for one logical line."""

    __slots__ = ("line", "name")

    def __init__(self, name: str, line: int) -> None:
        self.name = name
        self.line = line

    def __call__(self, message: str) -> TableError:
        return TableError(self.name, self.line, message)


def _keyword(text: bytes, word: bytes) -> bool:
    n = len(word)
    return text[:n].upper() == word and (len(text) == n or text[n] not in _ALNUM)


def _parse_match_rule(flavour: Flavour, text: bytes, fail: _Fail, check_actions: bool) -> _Rule:
    try:
        first, first_flags, first_positive, pos = _get_pattern(flavour, text, 0, fail)
        second_src: tuple[bytes, str, bool] | None = None
        if flavour == "regexp" and pos < len(text) and text[pos] == ord("!"):
            pat, flags, positive, pos = _get_pattern(flavour, text, pos, fail)
            second_src = (pat, flags, positive)
        while pos < len(text) and text[pos] in _C_SPACE:
            pos += 1
        raw = text[pos:]
        if not raw:
            raise fail("no replacement text (missing action)")
        template = _mac_parse(raw)
        max_sub = max((p for p in template if isinstance(p, int)), default=0)
        if max_sub and not first_positive:
            raise fail("$number found in negative match replacement text")
        literal: str | None = None
        action: Action | None = None
        if max_sub == 0:
            literal = _decode(b"".join(p for p in template if isinstance(p, bytes)))
        if check_actions:
            command, _ = split_action(_decode(raw))
            if "$" in command:
                raise fail(f"the action name must be literal, not {command!r}")
            if literal is None:
                parse_action(command)  # validates the command word
            else:
                action = parse_action(literal)
                problem = action.problem("body")
                if problem is not None:
                    raise fail(problem)
        pattern = _compile(
            flavour, first, first_flags, positive=first_positive, captures=max_sub > 0
        )
        if max_sub > pattern.compiled.groups:
            raise fail(f'out of range replacement index "{max_sub}"')
        second = None
        if second_src is not None:
            second = _compile(
                flavour, second_src[0], second_src[1], positive=second_src[2], captures=False
            )
    except _PatternError as exc:
        raise fail(str(exc)) from None
    except ActionError as exc:
        raise fail(str(exc)) from None
    hint = _name_hint(first, first_flags) if first_positive and second is None else None
    return _Rule(
        op=_Op.MATCH,
        line=fail.line,
        pattern=pattern,
        second=second,
        template=template,
        max_sub=max_sub,
        literal=literal,
        action=action,
        name_hint=hint,
    )


_NAME_HINT = re.compile(rb"^\^([A-Za-z0-9][A-Za-z0-9-]*):")


def _name_hint(pattern: bytes, flags: str) -> bytes | None:
    """``^Name:`` at the start of a pattern: the rule can only match headers called Name.

    Only for plain literal names (no escapes, classes or spaces) and without the flags that
    change what ``^`` or the literal mean (multi-line, extended); the hint is a pre-filter,
    the rule's own regex still decides.
    """
    if "m" in flags or "x" in flags:
        return None
    found = _NAME_HINT.match(pattern)
    return found.group(1).lower() if found else None


def parse_table(
    source: str | bytes,
    flavour: Flavour,
    *,
    name: str = "<string>",
    timeout: float | None = None,
    check_actions: bool = True,
) -> Table:
    """Parse table text in Postfix ``regexp:`` or ``pcre:`` syntax.

    *name* is used in :class:`TableError` messages. *timeout* (seconds) bounds each
    single regular-expression match; a match that runs out of time counts as neither
    a match nor a non-match, as a PCRE matching error does in Postfix.

    With *check_actions* (the default) every value must be a header_checks(5)
    action; turn it off to use the table as a generic lookup table (:meth:`Table.query`).
    """
    if flavour not in _FLAVOURS:
        raise ValueError(f"flavour must be 'regexp' or 'pcre', not {flavour!r}")
    data = _encode(source) if isinstance(source, str) else source
    rules: list[_Rule] = []
    stack: list[int] = []  # indexes of open IF rules
    for lineno, logical in _logical_lines(data, name):
        fail = _Fail(name, lineno)
        text = logical.rstrip(b" \t\n\v\f\r")
        if b"\0" in text:
            raise fail("NUL byte in table")
        if text[0] not in _ALNUM:
            rules.append(_parse_match_rule(flavour, text, fail, check_actions))
        elif _keyword(text, b"IF"):
            pat, flags, positive, pos = _get_pattern(flavour, text, 2, fail)
            rest = text[pos:].lstrip(b" \t\n\v\f\r")
            if rest:
                raise fail(f'extra text after IF statement: "{_show(rest)}"')
            try:
                compiled = _compile(flavour, pat, flags, positive=positive, captures=False)
            except _PatternError as exc:
                raise fail(str(exc)) from None
            stack.append(len(rules))
            rules.append(_Rule(op=_Op.IF, line=lineno, pattern=compiled))
        elif _keyword(text, b"ENDIF"):
            if not stack:
                raise fail("ENDIF without matching IF")
            if text[5:].strip(b" \t\n\v\f\r"):
                raise fail("extra text after ENDIF")
            opener = stack.pop()
            if_rule = rules[opener]
            rules[opener] = _Rule(
                op=_Op.IF, line=if_rule.line, pattern=if_rule.pattern, skip_to=len(rules)
            )
            rules.append(_Rule(op=_Op.ENDIF, line=lineno))
        else:
            raise fail("unrecognized request (rules start with a delimiter, IF or ENDIF)")
    if stack:
        raise TableError(name, rules[stack[-1]].line, "IF has no matching ENDIF")
    return Table(rules, flavour=flavour, name=name, timeout=timeout)


def load_table(
    path: str | os.PathLike[str],
    flavour: Flavour,
    *,
    timeout: float | None = None,
    check_actions: bool = True,
) -> Table:
    """Read and parse a table file (the only I/O this module does); see :func:`parse_table`."""
    with open(path, "rb") as fh:
        data = fh.read()
    return parse_table(
        data, flavour, name=os.fspath(path), timeout=timeout, check_actions=check_actions
    )
