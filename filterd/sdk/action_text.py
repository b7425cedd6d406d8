"""How Postfix reads the text of a table action, shared by access(5) (smtpd) and
header_checks(5) (cleanup): a command word, optional text, an optional RFC 3463 status code at
the start of that text, and the ``name: value`` test of a header to prepend.

- :func:`split_action` -- the command (up to the first space or tab) and the text after it,
  leading whitespace skipped (smtpd's ``check_table_result()``, cleanup's ``cleanup_act()``);
- :func:`dsn_valid` / :func:`dsn_split` -- Postfix's ``dsn_valid()`` and ``dsn_split()``: the
  status code a text starts with, else a default, and the free text after it;
- :func:`is_header` -- Postfix's ``is_header()``, what PREPEND requires.
"""

from __future__ import annotations

__all__ = ["C_SPACE", "dsn_split", "dsn_valid", "is_header", "split_action"]

#: C ``isspace()`` in the "C" locale: what Postfix's ISSPACE() skips.
C_SPACE = " \t\n\v\f\r"


def split_action(raw: str) -> tuple[str, str]:
    """Split a table value into (command, optional text): the command ends at the first space
    or tab; whitespace before the text is skipped."""
    cut = len(raw)
    for sep in " \t":
        idx = raw.find(sep)
        if idx != -1 and idx < cut:
            cut = idx
    return raw[:cut], raw[cut:].lstrip(C_SPACE)


def dsn_valid(text: str) -> int:
    """Length of the RFC 3463 status code at the start of ``text``, or 0: ``[245].d{1,3}.d{1,3}``
    followed by the end of the text or whitespace."""
    if len(text) < 2 or text[0] not in "245" or text[1] != ".":
        return 0
    pos = 2
    for limit, terminators in ((3, "."), (3, None)):
        start = pos
        while pos < len(text) and text[pos] in "0123456789":
            pos += 1
        if not 1 <= pos - start <= limit:
            return 0
        if terminators is not None:
            if pos >= len(text) or text[pos] != ".":
                return 0
            pos += 1
        elif pos < len(text) and text[pos] not in C_SPACE:
            return 0
    return pos


def dsn_split(default: str, text: str) -> tuple[str, str]:
    """(status code, free text) of ``text``: the code it starts with (after whitespace), else
    ``default``; the free text with leading whitespace skipped."""
    text = text.lstrip(C_SPACE)
    length = dsn_valid(text)
    if length:
        return text[:length], text[length:].lstrip(C_SPACE)
    return default, text


def is_header(text: str) -> bool:
    """Postfix ``is_header()``: does ``text`` start with ``label[ \\t]*:``?

    The label is one or more printable ASCII characters other than space and colon;
    whitespace may stand between label and colon (RFC 822 obsolete syntax).
    """
    seen_label = False
    in_space = False
    for ch in text:
        if ch == ":":
            return seen_label
        if ch in " \t":
            if not seen_label:
                return False
            in_space = True
            continue
        code = ord(ch)
        if code >= 0x7F or code < 0x20 or in_space:
            return False
        seen_label = True
    return False
