"""Postfix's table source text, read as Postfix reads it: logical lines (readllines), the
``key whitespace value`` split of postmap(1) input and ``texthash:``, the brace lists of
``inline:{...}``, ``cidr:{ {rule}, {rule} }`` and ``unionmap:{...}``, and key case folding.

Pure functions on text (no I/O): the table modules read the file and hand its bytes here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "LogicalLine",
    "SourceError",
    "extract_braced",
    "fold_key",
    "logical_lines",
    "split_key_value",
    "split_quoted_name_value",
    "tokenize_braced",
]

# The white space of C's isspace() in the "C" locale: what Postfix trims and splits on.
SPACE = " \t\n\r\v\f"
_SEPARATORS = ", \t\r\n"  # CHARS_COMMA_SP


class SourceError(ValueError):
    """Malformed source text; the message says what is wrong (the caller adds the table)."""


@dataclass(frozen=True, slots=True)
class LogicalLine:
    text: str
    first: int  # the physical line it starts on (1-based)
    last: int  # the physical line it ends on


def fold_key(key: str) -> str:
    """A key folded as Postfix folds fixed-string table keys with SMTPUTF8 on (the default
    since compatibility level 1): full Unicode case folding, ``STRASSE`` and ``straße`` alike;
    plain lower case for ASCII."""
    return key.lower() if key.isascii() else key.casefold()


def logical_lines(text: str) -> Iterator[LogicalLine]:
    """The logical lines of a table source file, as Postfix's readllines() makes them.

    Blank lines and lines whose first non-blank character is ``#`` are dropped (also in the
    middle of a logical line); a physical line that starts with white space continues the
    logical line before it (its text appended as is, without the newline). A logical line
    that starts with white space (the file's first text is indented) is dropped, as Postfix
    drops it with a warning. Text after a NUL byte in a logical line is ignored, as C reads it.
    """
    parts: list[str] = []
    first = 0
    lineno = 0
    for raw in text.split("\n") if text else []:
        lineno += 1
        stripped = raw.lstrip(SPACE)
        if not stripped or stripped.startswith("#"):
            continue
        if parts and raw[0] in SPACE:  # continues the current logical line
            parts.append(raw)
            last = lineno
            continue
        if parts:
            yield _finish(parts, first, last)
        parts, first, last = [raw], lineno, lineno
    if parts:
        yield _finish(parts, first, last)


def _finish(parts: list[str], first: int, last: int) -> LogicalLine:
    text = "".join(parts)
    if "\0" in text:
        text = text[: text.index("\0")]
    return LogicalLine(text, first, last)


def leading_space_dropped(line: LogicalLine) -> bool:
    """Postfix drops a logical line that starts with white space ("logical line must not
    start with whitespace")."""
    return bool(line.text) and line.text[0] in SPACE


def split_key_value(line: str) -> tuple[str, str]:
    """``key whitespace value`` as postmap(1) and texthash: split it: the key ends at the first
    white space outside double quotes (a backslash protects the next character); the key keeps
    its quotes and backslashes, the value is trimmed. Raises SourceError for unbalanced quotes
    and for a missing key or value (Postfix ignores such a line with a warning)."""
    in_quotes = False
    i = 0
    n = len(line)
    while i < n:
        c = line[i]
        if c == "\\":
            i += 1
            if i >= n:
                break
        elif c in SPACE:
            if not in_quotes:
                break
        elif c == '"':
            in_quotes = not in_quotes
        i += 1
    if in_quotes:
        raise SourceError(f"unbalanced '\"' in '{line}'")
    key = line[:i]
    value = line[i + 1 :].strip(SPACE) if i < n else ""
    if not key or not value:
        raise SourceError("expected format: key whitespace value")
    return key, value


def split_quoted_name_value(text: str) -> tuple[str, str]:
    """``key = value`` of an ``inline:{...}`` element (Postfix's split_qnameval): the key ends
    at white space or ``=`` outside double quotes, keeping its quotes; the value is trimmed
    and may be empty."""
    i = len(text) - len(text.lstrip(SPACE))
    if i == len(text):
        raise SourceError("no key found; expected format: key = value")
    start = i
    in_quotes = False
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 1
            if i >= len(text):
                break
        elif c in SPACE or c == "=":
            if not in_quotes:
                break
        elif c == '"':
            in_quotes = not in_quotes
        i += 1
    if in_quotes:
        raise SourceError("unbalanced '\"'")
    key = text[start:i]
    rest = text[i:].lstrip(SPACE)
    if not rest.startswith("="):
        raise SourceError("missing '=' after attribute name")
    return key, rest[1:].strip(SPACE)


def _balanced_length(text: str) -> int:
    """The length of the ``{...}`` group ``text`` starts with, 0 when it does not close
    (Postfix's balpar())."""
    depth = 0
    for i, c in enumerate(text):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return 0


def extract_braced(text: str) -> str:
    """The content of ``{ ... }`` with the braces and the white space inside them removed
    (Postfix's extpar() with stripping); SourceError when ``text`` is not one brace group."""
    if not text.startswith("{"):
        raise SourceError(f"no '{{' at start of text in \"{text}\"")
    length = _balanced_length(text)
    if length == 0:
        raise SourceError(f"missing '}}' in \"{text}\"")
    if length != len(text):
        raise SourceError(f"syntax error after '}}' in \"{text}\"")
    return text[1:-1].strip(SPACE)


def tokenize_braced(text: str) -> list[str]:
    """The elements of a brace list's content (without its outer braces), as Postfix's
    mystrtokq() separates them: commas and white space outside braces separate; a token keeps
    its braces."""
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in _SEPARATORS:
            i += 1
            continue
        start, depth = i, 0
        while i < n:
            c = text[i]
            if c == "{":
                depth += 1
            elif depth > 0 and c == "}":
                depth -= 1
            elif depth == 0 and c in _SEPARATORS:
                break
            i += 1
        tokens.append(text[start:i])
    return tokens


def list_body(name: str) -> str:
    """The text inside a table name's outer braces (``{ a, b }`` -> `` a, b ``); SourceError
    when the name is not exactly one brace group."""
    length = _balanced_length(name) if name.startswith("{") else 0
    if length == 0 or length != len(name):
        raise SourceError("bad syntax")
    return name[1:-1]
