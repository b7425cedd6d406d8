"""SpamAssassin's header conventions, reproduced from its source (SpamAssassin 4.0.1).

``Mail::SpamAssassin::PerMsgStatus`` adds, from ``10_default_prefs.cf``::

    add_header spam Flag _YESNOCAPS_
    add_header all Status _YESNO_, score=_SCORE_ required=_REQD_ tests=_TESTS_ \
        autolearn=_AUTOLEARN_ version=_VERSION_     (one line)
    add_header all Level _STARS(*)_
    add_header all Checker-Version SpamAssassin _VERSION_ (_SUBVERSION_) on _HOSTNAME_

- ``_SCORE_``/``_REQD_`` are ``%2.1f`` (a ham at or over the threshold shows threshold - 0.1):
  exactly the strings in spamd's ``Spam: True ; 1000.0 / 5.0`` response header.
- ``_TESTS_`` is the sorted rule list joined by "," (``none`` when empty): exactly SYMBOLS'
  body (``get_names_of_tests_hit`` = ``join(',', sort @test_names_hit)``).
- ``_STARS(*)_`` is one ``*`` per whole point of the *raw* score, at most 50, none when < 1.
  spamd only reports the score rounded to one decimal, so from SYMBOLS the stars can be one too
  many when the rounded score ends in ``.0`` (raw 0.999 shows as 1.0 and gets no star).
- ``_process_header`` folds a value with ``Util::wrap(..., "\\t", "", 79, 0, '(?<=[\\s,])')``
  on ``"X-Spam-<name>!!<value>"``: lines of at most 79 columns (a tab counts 8), broken only
  after white space or a comma, continuation lines starting with a tab.
- ``rewrite_no_report_safe`` drops the message's own ``X-Spam-*`` headers (but not
  ``X-Spam-Prev-*``) and puts its headers at the top, or after a leading ``Return-Path``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

FOLD_WIDTH: Final = 79
MAX_STARS: Final = 50
_BREAK: Final = re.compile(r"((?<=[\s,]))")
_TRAILING_SPACE: Final = re.compile(r"\s+$")
_BLANK_LINE: Final = re.compile(r"^\s*\n", re.MULTILINE)
_FIELD_START: Final = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_OWN_HEADER: Final = re.compile(r"X-Spam-(?!Prev-)", re.IGNORECASE)


def perl_wrap(
    text: str,
    prefix: str = "",
    first: str = "",
    length: int = 77,
    overflow: bool = False,
    breaks: re.Pattern[str] = _BREAK,
) -> str:
    """``Mail::SpamAssassin::Util::wrap``, line for line (``breaks`` must capture)."""
    parts = breaks.split(text)
    while parts and parts[-1] == "":  # Perl's split drops trailing empty fields
        parts.pop()
    if first:
        parts.insert(0, first)
    pos = 0
    pos_mod = False
    while len(parts) - 1 > pos:
        size = _columns(parts[pos])
        if pos_mod and not overflow:
            size += _columns(parts[pos + 1])
        if size <= length:
            parts[pos] += parts.pop(pos + 1)
            pos_mod = True
        else:
            parts[pos] = _TRAILING_SPACE.sub("", parts[pos])
            pos += 1
            pos_mod = False
            parts.insert(pos, prefix)
    return "\n".join(parts)


def _columns(text: str) -> int:
    return len(text) + text.count("\t") * 7


def fold_value(name: str, value: str) -> str:
    """How SpamAssassin folds the value of its header ``name`` (e.g. ``X-Spam-Status``):
    continuation lines joined with "\\n\\t", ready for ``AddHeader``."""
    wrapped = perl_wrap(f"{name}!!{value}", "\t", "", FOLD_WIDTH, False)
    wrapped = _BLANK_LINE.sub("", wrapped)
    return wrapped.split("!!", 1)[1]


def stars(score: float, char: str = "*") -> str:
    """``_STARS(*)_``: one per whole point (Perl ``int``: truncated), at most 50."""
    count = min(int(score), MAX_STARS)
    return char * count if count > 0 else ""


def status_value(
    is_spam: bool,
    score: str,
    required: str,
    tests: Sequence[str],
    autolearn: str = "unavailable",
    version: str | None = None,
) -> str:
    """The (unfolded) ``X-Spam-Status`` value, e.g.
    ``Yes, score=1000.0 required=5.0 tests=GTUBE,NO_RELAYS autolearn=unavailable``.

    ``autolearn`` is what SpamAssassin says when it has no autolearn status: SYMBOLS does not
    report it. ``version`` (``version=4.0.1``) is left out unless given."""
    text = (
        f"{'Yes' if is_spam else 'No'}, score={score} required={required} "
        f"tests={','.join(tests) or 'none'} autolearn={autolearn}"
    )
    return f"{text} version={version}" if version else text


def is_own_header(name: str) -> bool:
    """A header SpamAssassin replaces: ``X-Spam-*`` but not ``X-Spam-Prev-*``."""
    return _OWN_HEADER.match(name) is not None


def rules_from_status(value: str) -> tuple[str, ...]:
    """The rule names in an (unfolded) ``X-Spam-Status`` value; () if it has no tests=."""
    match = re.search(r"\btests=(\S*)", re.sub(r"\s*\n\s*", " ", value))
    if match is None or match.group(1) in ("", "none"):
        return ()
    return tuple(name for name in match.group(1).split(",") if name)


# --- raw header sections (spamd's PROCESS/HEADERS output) -------------------------------------


@dataclass(frozen=True, slots=True)
class RawField:
    name: str
    raw: bytes  # the whole field: name, colon, value, folding, line end


@dataclass(frozen=True, slots=True)
class RawMessage:
    fields: tuple[RawField, ...]
    separator: bytes  # the blank line that ended the header section, or b""
    body: bytes


def split_message(data: bytes) -> RawMessage:
    """Split a message into header fields, separator and body, the way filterd parses the
    messages it relays (Postfix's rules): ``name:`` starts a field, a line starting with a
    space or tab continues it, a blank line ends the section (and is the separator), and any
    other line ends it too (and starts the body)."""
    fields: list[RawField] = []
    pos = 0
    start = -1
    name = ""
    length = len(data)
    while pos < length:
        end = data.find(b"\n", pos)
        end = length - 1 if end < 0 else end
        line = data[pos : end + 1]
        if line[:1] in (b" ", b"\t") and start >= 0:
            pos = end + 1
            continue
        if start >= 0:
            fields.append(RawField(name, data[start:pos]))
            start = -1
        if line in (b"\r\n", b"\n"):
            return RawMessage(tuple(fields), line, data[pos + len(line) :])
        match = _FIELD_START.match(line)
        if match is None:
            return RawMessage(tuple(fields), b"", data[pos:])
        start = pos
        name = match.group(1).decode("ascii")
        pos = end + 1
    if start >= 0:
        fields.append(RawField(name, data[start:]))
    return RawMessage(tuple(fields), b"", b"")


def field_value(field: RawField) -> str:
    """The value unfolded, as ``MessageView`` headers give it."""
    _, _, rest = field.raw.partition(b":")
    text = rest.decode("utf-8", "surrogateescape")
    return text.replace("\r\n", "").replace("\n", "").strip(" \t")


def edit_value(field: RawField) -> tuple[str, bool]:
    """The value to give ``AddHeader``/``InsertHeader`` so that filterd writes this field
    back byte for byte (filterd builds ``f"{name}: {value}"`` with "\\n" → CRLF, plus CRLF),
    and whether that is exact. A field filterd cannot write as it is (``Name:value`` without
    the space, a bare LF or CR, a space before the colon) gets the closest value."""
    text = field.raw.decode("utf-8", "surrogateescape")
    lead = f"{field.name}: "
    if text.startswith(lead) and text.endswith("\r\n"):
        value = text[len(lead) : -2]
        unfolded = value.replace("\r\n", "\n")
        if "\r" not in unfolded and "\x00" not in unfolded and not unfolded.endswith("\n"):
            lines = unfolded.split("\n")
            if all(line[:1] in (" ", "\t") for line in lines[1:]):
                return unfolded, True
    _, _, rest = text.partition(":")
    value = rest.replace("\r\n", "\n").replace("\r", "").rstrip("\n").lstrip(" \t")
    value = re.sub(r"\n(?![ \t])", "\n ", value).replace("\x00", "")
    return value, False
