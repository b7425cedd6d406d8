"""Replacement text of a table rule: ``$n`` substitution, as Postfix's mac_parse() does it.

A rule's value is parsed once, when the table is loaded, into a :data:`Template`;
every lookup that fires the rule fills in the sub-matches with :func:`substitute`.
"""

from __future__ import annotations

import regex

from .byteclass import ALNUM, DIGIT
from .scanner import PatternError, show

__all__ = ["Template", "parse_replacement", "substitute"]

#: Replacement text split into literal bytes and group numbers (``$n``, ``${n}``, ``$(n)``).
Template = tuple[bytes | int, ...]


def parse_replacement(text: bytes) -> Template:
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
                    raise PatternError(f'truncated macro reference: "{show(text)}"')
                if text[i] == opener:
                    level += 1
                elif text[i] == closer:
                    level -= 1
                i += 1
            name = text[start : i - 1]
        else:
            start = i
            while i < n and (text[i] in ALNUM or text[i] == ord("_")):
                i += 1
            name = text[start:i]
        if not name:
            raise PatternError(f'empty macro name: "{show(text)}"')
        if not all(ch in DIGIT for ch in name):
            raise PatternError(f'non-numeric replacement index "{show(name)}"')
        number = int(name)
        if number < 1:
            raise PatternError(f'out of range replacement index "{show(name)}"')
        parts.append(number)
    if buf:
        parts.append(bytes(buf))
    return tuple(parts)


def substitute(template: Template, subject: bytes, found: regex.Match[bytes]) -> bytes:
    """*template* with each group number replaced by that sub-match of *subject*.

    A group that did not take part in the match, or matched empty, adds nothing.
    """
    out = bytearray()
    for part in template:
        if isinstance(part, int):
            begin, stop = found.span(part)
            if begin >= 0 and stop > begin:
                out += subject[begin:stop]
        else:
            out += part
    return bytes(out)
