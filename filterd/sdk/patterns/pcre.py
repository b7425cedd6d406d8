"""PCRE2 patterns (Postfix ``pcre:`` tables) translated into ``regex`` syntax.

Patterns follow PCRE2 as Postfix compiles them: 8-bit, no UTF mode, the "C" locale
character tables (only ASCII letters have a case; ``\\w``, ``\\d``, ``\\s`` and POSIX
classes are ASCII). This module reads the pattern structure -- alternation, quantifiers,
groups, inline options, conditionals, back-references, anchors and other escapes; the
escapes that stand for one byte, and ``[...]`` classes, are read by its base class in
:mod:`.pcre_bytes`. :mod:`.pattern` turns Postfix's flag letters (``i`` and ``s`` on by
default) into the options :func:`translate_pcre` takes.

Constructs the translator does not support (recursion, subroutine calls, ``(*VERB)``,
``\\p{..}``, callouts, assertion conditions) raise :class:`~.scanner.PatternError` as
"unsupported". Known difference: ``regex`` accepts some patterns PCRE2 refuses
(variable-length lookbehind), and has no PCRE2 backtracking limit (tables have a
per-match *timeout* instead).
"""

from __future__ import annotations

from .byteclass import (
    ALNUM,
    ALPHA,
    DIGIT,
    DOT_ALL,
    DOT_NO_NL,
    PCRE_SHORTHAND,
    PCRE_VSPACE,
    WORD,
    byte_atom,
    case_closure,
    class_atom,
)
from .pcre_bytes import PcreByteReader

__all__ = ["translate_pcre"]

#: PCRE2 extended-mode white space (non-UTF).
_PCRE_X_SPACE = frozenset(b" \t\n\v\f\r")


def translate_pcre(
    pattern: bytes,
    *,
    caseless: bool,
    dotall: bool,
    extended: bool,
    multiline: bool,
    ungreedy: bool,
    dollar_endonly: bool,
) -> str:
    """*pattern* as ``regex`` source with the same matches; raises
    :class:`~.scanner.PatternError`.

    The options are PCRE2's compile options of the same names (``i s x m U E``).
    """
    state = _PcreState(
        caseless=caseless,
        dotall=dotall,
        extended=extended,
        multiline=multiline,
        ungreedy=ungreedy,
    )
    return _PcreTranslator(pattern, dollar_endonly=dollar_endonly).translate(state)


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


class _PcreTranslator(PcreByteReader):
    """Translate one PCRE2 pattern (8-bit, non-UTF, "C" tables) into ``regex`` syntax."""

    def __init__(self, pattern: bytes, *, dollar_endonly: bool) -> None:
        super().__init__(pattern)
        self.ncap = 0
        self.dollar_endonly = dollar_endonly

    # -- helpers

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
        while j < self.n and self.p[j] in DIGIT:
            j += 1
        if j == start:
            return None
        lo = int(self.p[start:j])
        hi: int | None = lo
        if j < self.n and self.p[j] == ord(","):
            j += 1
            start = j
            while j < self.n and self.p[j] in DIGIT:
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
        if st.caseless and c in ALPHA:
            return class_atom(case_closure({c}))
        return byte_atom(c)

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
            return self._char_class(st.caseless), True
        if c == ord("\\"):
            return self._escape(st)
        self.i += 1
        if c == ord("."):
            return (DOT_ALL if st.dotall else DOT_NO_NL), True
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
        if not name or not all(ch in WORD for ch in name) or name[0] in DIGIT or len(name) > 32:
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
            elif c in (ord("R"), ord("&"), ord("+"), ord("C")) or c in DIGIT:
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
        if c in DIGIT or c in (ord("+"), ord("-")):
            j = self.i + (1 if c in (ord("+"), ord("-")) else 0)
            start = j
            while j < self.n and self.p[j] in DIGIT:
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
        elif c in WORD and c not in DIGIT:
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

    def _escape(self, st: _PcreState) -> tuple[str, bool] | None:
        self.i += 1  # backslash
        c = self._peek()
        if c == -1:
            raise self._error("\\ at end of pattern")
        if c in DIGIT and c != ord("0"):
            start = self.i
            j = self.i
            while j < self.n and self.p[j] in DIGIT:
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
        if c in PCRE_SHORTHAND:
            return class_atom(PCRE_SHORTHAND[c]), True
        simple = {
            ord("A"): ("\\A", False),
            ord("z"): ("\\z", False),
            ord("Z"): ("(?=\\n?\\z)", False),
            ord("G"): ("\\G", False),
            ord("b"): ("\\b", False),
            ord("B"): ("\\B", False),
            ord("K"): ("\\K", False),
            ord("C"): (DOT_ALL, True),
            ord("R"): ("(?>\\r\\n|" + class_atom(PCRE_VSPACE) + ")", True),
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
            return DOT_NO_NL, True
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
        if c in ALNUM:
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
        while self.i < self.n and self.p[self.i] in DIGIT:
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
