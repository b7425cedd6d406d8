"""POSIX patterns (Postfix ``regexp:`` tables) translated into ``regex`` syntax.

Patterns follow glibc's ``regcomp()`` (POSIX ERE, or BRE with the ``x`` flag toggled
off) in the "C" locale, GNU extensions included (``\\w \\W \\s \\S \\b \\B \\< \\>
\\` \\'`` and back-references), and glibc's case-insensitive mode exactly: glibc
upper-cases the subject and the pattern -- except the character after a backslash and
the class names inside ``[: :]`` -- so e.g. ``\\d`` never matches and ``[+-z]`` shrinks
to ``[+-Z]`` under the default ``i`` flag. Leftmost-longest matching, which ``$n`` needs
for the right sub-matches, is the ``regex.POSIX`` flag :mod:`.pattern` compiles with.

Known difference: a ``$n`` that refers to a repeated group that can match empty
(``(b*)+``) may be empty here where glibc reports the last non-empty iteration.
"""

from __future__ import annotations

from .byteclass import (
    ALL,
    DIGIT,
    DOT_ALL,
    DOT_NO_NL,
    LOWER,
    NEWLINE,
    POSIX_CLASSES,
    SPACE,
    WORD,
    WORD_CLASS,
    byte_atom,
    class_atom,
)
from .scanner import Scanner

__all__ = ["translate_posix"]


def translate_posix(pattern: bytes, *, extended: bool, icase: bool, newline: bool) -> str:
    """*pattern* (ERE if *extended*, else BRE) as ``regex`` source; raises
    :class:`~.scanner.PatternError`.

    The options are glibc's ``REG_EXTENDED``, ``REG_ICASE`` and ``REG_NEWLINE``. With
    *icase* the result must be matched against the upper-cased subject.
    """
    return _PosixTranslator(pattern, extended=extended, icase=icase, newline=newline).translate()


class _PosixTranslator(Scanner):
    """Translate a glibc ERE/BRE ("C" locale) into ``regex`` syntax.

    With *icase* the caller matches the upper-cased subject against the case-sensitive
    result, which is what glibc does.
    """

    def __init__(self, pattern: bytes, *, extended: bool, icase: bool, newline: bool) -> None:
        super().__init__(pattern)
        self.extended = extended
        self.icase = icase
        self.newline = newline
        self.ncap = 0
        self.completed: set[int] = set()

    def _fold(self, c: int) -> int:
        return c - 32 if self.icase and c in LOWER else c

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
        while self.i < self.n and self.p[self.i] in DIGIT:
            self.i += 1
        lo = int(self.p[start : self.i]) if self.i > start else None
        hi: int | None
        if self._peek() == ord(","):
            self.i += 1
            start = self.i
            while self.i < self.n and self.p[self.i] in DIGIT:
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
                items.append((byte_atom(ord(")")), False, True))
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
                    items.append((byte_atom(ord(quant)), False, True))
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
            return byte_atom(c), True
        if c == ord("$"):
            if self.extended or self.i >= self.n or self._at_close() or self._at_alt():
                return ("(?=\\n|\\z)" if self.newline else "\\z"), False
            return byte_atom(c), True
        if c == ord("."):
            return (DOT_NO_NL if self.newline else DOT_ALL), True
        if c == ord("["):
            return self._bracket(), True
        if c == ord("(") and self.extended:
            return self._group(), True
        if c == ord("\\"):
            return self._escape()
        return byte_atom(self._fold(c)), True

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
        if c in DIGIT and c != ord("0"):
            num = c - ord("0")
            if num not in self.completed:
                raise self._error("Invalid back reference")
            return f"(?:\\g<{num}>)", True
        word = WORD_CLASS
        table: dict[int, tuple[str, bool]] = {
            ord("w"): (word, True),
            ord("W"): (class_atom(ALL - WORD), True),
            ord("s"): (class_atom(SPACE), True),
            ord("S"): (class_atom(ALL - SPACE), True),
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
        return byte_atom(c), True

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
            chars = set(ALL - chars)
            if self.newline:
                chars.discard(NEWLINE)
        return class_atom(chars)

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
                cls = POSIX_CLASSES.get(name)
                if cls is None:
                    raise self._error("Invalid character class name")
                return cls
            if len(name) != 1:
                raise self._error("Invalid collation character")
            char = self._fold(name[0])
            return char if kind == ord(".") else frozenset((char,))
        self.i += 1
        return self._fold(c)
