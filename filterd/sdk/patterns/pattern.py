"""One table pattern compiled: Postfix's flag letters, translation, ``regex`` compilation.

A rule's ``/pattern/flags`` is translated by :mod:`.pcre` (``pcre:``, PCRE2's default
``i`` and ``s`` on, each letter toggles an option) or :mod:`.posix` (``regexp:``,
``REG_ICASE`` and ``REG_EXTENDED`` on by default) and compiled with the ``regex``
package on bytes, as Postfix matches bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import regex

from .pcre import translate_pcre
from .posix import translate_posix
from .scanner import PatternError

__all__ = [
    "FLAVOURS",
    "MAX_REPEAT_DEPTH",
    "PCRE_FLAGS",
    "REGEXP_FLAGS",
    "Flavour",
    "Pattern",
    "compile_pattern",
]

Flavour = Literal["regexp", "pcre"]

FLAVOURS: tuple[Flavour, ...] = ("regexp", "pcre")


@dataclass(frozen=True, slots=True)
class Pattern:
    """One compiled ``/pattern/flags`` of a rule, ready to match a key."""

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


#: The flag letters after the closing delimiter that Postfix accepts, per flavour.
PCRE_FLAGS = frozenset("imsxAEUX")
REGEXP_FLAGS = frozenset("imx")


def compile_pattern(
    flavour: Flavour, pattern: bytes, flags: str, *, positive: bool, captures: bool
) -> Pattern:
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
        source = translate_pcre(
            pattern,
            caseless=caseless,
            dotall=dotall,
            extended=extended,
            multiline=multiline,
            ungreedy=ungreedy,
            dollar_endonly=endonly and not multiline,
        )
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
        source = translate_posix(pattern, extended=extended, icase=icase, newline=newline)
        upper = icase
        anchored = False
        posix = captures  # leftmost-longest only matters for sub-matches
    depth = _repeat_depth(source)
    if depth > MAX_REPEAT_DEPTH:
        raise PatternError(
            f"repeated groups nested {depth} deep (at most {MAX_REPEAT_DEPTH}: the regular "
            "expression engine's memory grows exponentially with it)"
        )
    try:
        compiled = regex.compile(source.encode("ascii"), regex.V0 | (regex.POSIX if posix else 0))
    except regex.error as exc:
        raise PatternError(str(exc)) from exc
    return Pattern(compiled=compiled, upper=upper, anchored=anchored, positive=positive)


#: How deep repeated groups may nest in a translated pattern: ``regex`` needs time and memory
#: exponential in it to compile (20 levels, e.g. ``/a++++++++++++++++++++/`` in ``regexp:``,
#: which glibc reads as nested repeats, exhaust gigabytes); realistic tables nest a few.
MAX_REPEAT_DEPTH = 10


def _repeat_depth(source: str) -> int:
    """How deep repeated groups nest in a translated pattern: ``(?:(?:a+)+)+`` is 2. The
    translators write every literal byte but letters and digits as ``\\xNN``, so an
    unescaped parenthesis outside a class is a group."""
    deepest = [0]  # per open group: the deepest nesting of repeated groups inside it
    i, size = 0, len(source)
    while i < size:
        c = source[i]
        if c == "\\":
            i += 1
        elif c == "[":  # a class: skip to its closing bracket
            i += 1
            while i < size and source[i] != "]":
                i += 2 if source[i] == "\\" else 1
        elif c == "(":
            deepest.append(0)
        elif c == ")" and len(deepest) > 1:
            inner = deepest.pop()
            repeated = source[i + 1 : i + 2] in ("*", "+", "?", "{")
            deepest[-1] = max(deepest[-1], inner + repeated)
        i += 1
    return max(deepest)
