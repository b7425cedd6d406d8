"""Compare a message as delivered by Postfix with the message that was injected.

Postfix changes a message in transit in a few known ways only, all verified with the
private instance of tests/support/postfix.py (Postfix 3.7.11):

- virtual(8) prepends `Return-Path:`, `X-Original-To:` and `Delivered-To:`, and every
  hop (pickup/smtpd, the reinjection smtpd, a filter that adds a trace header) prepends
  one `Received:`;
- cleanup(8) removes every `Return-Path:` header the message arrived with;
- cleanup(8) inserts the empty line that separates header and body when the first body
  line follows the headers directly;
- a leading mbox `From ` line becomes an `X-Mailbox-Line: From ...` header over SMTP,
  while sendmail(1) drops it;
- local submissions only (sendmail(1), or SMTP clients in `local_header_rewrite_clients`,
  which the test instance leaves empty): cleanup(8) appends missing `Date:`,
  `Message-Id:`, `From:` at the end of the header block, and completes bare local parts
  in address headers with `@$myorigin` (`To: baz` -> `To: baz@mx.postfix.test`);
- line endings are LF in the Maildir file, whatever arrived (CRLF over SMTP), and the
  last line always ends with a newline.

`delivery_differences` applies exactly these rules and reports anything else.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.support.data import MAIL_CORPUS

Injection = Literal["smtp", "sendmail"]

CORPUS_DIR = MAIL_CORPUS
"""The 48 CPython email test messages (tests/data/mail/)."""

# RFC 5322 field name: printable ASCII except ":" and space, then ":".
_FIELD_START = re.compile(rb"^([!-9;-~]+):")

DELIVERY_TRACE = ("return-path", "x-original-to", "delivered-to")
"""The headers virtual(8) prepends, in order, above the Received: lines."""

REMOVED_BY_CLEANUP = frozenset({"return-path"})
CLEANUP_ADDITIONS = frozenset(
    {"date", "message-id", "from", "resent-date", "resent-message-id", "resent-from"}
)
ADDRESS_FIELDS = frozenset(
    {"from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender"}
    | {"resent-to", "resent-cc", "resent-bcc", "errors-to", "return-receipt-to"}
)
_BARE_LOCAL_PART = re.compile(rb"^([A-Za-z0-9-]+:[ \t]*)([A-Za-z0-9._+-]+)([ \t]*\n)$")


def corpus() -> list[Path]:
    """The corpus files, sorted; fails (never skips) if there are none."""
    files = sorted(CORPUS_DIR.glob("*.txt"))
    assert files, f"no test messages in {CORPUS_DIR}"
    return files


@dataclass(frozen=True)
class Field:
    """One header field: its lower-case name and raw bytes (all folded lines, LF-ended)."""

    name: str
    raw: bytes


def normalise_newlines(message: bytes) -> bytes:
    """CRLF -> LF, and a final LF if the message lacks one."""
    text = message.replace(b"\r\n", b"\n")
    return text if not text or text.endswith(b"\n") else text + b"\n"


def split_message(message: bytes) -> tuple[list[Field], bytes]:
    """Split an LF-normalised message into header fields and the rest.

    The header block ends at the first line that is neither a field nor a folded
    continuation; the rest (the empty separator line included, if any) is the body.
    """
    lines = message.splitlines(keepends=True)
    fields: list[Field] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        match = _FIELD_START.match(line)
        if match is not None:
            fields.append(Field(match.group(1).decode("ascii").lower(), line))
        elif line[:1] in (b" ", b"\t") and fields and line.strip():
            last = fields[-1]
            fields[-1] = Field(last.name, last.raw + line)
        else:
            break
        index += 1
    return fields, b"".join(lines[index:])


def expected_after_postfix(
    original: bytes, injection: Injection, myorigin: str = "mx.postfix.test"
) -> tuple[list[Field], bytes]:
    """The header fields and body Postfix should deliver for `original` (before additions)."""
    text = normalise_newlines(original)
    if text.startswith(b"From "):
        first, _, text = text.partition(b"\n")
        if injection == "smtp":
            text = b"X-Mailbox-Line: " + first + b"\n" + text
    fields, body = split_message(text)
    fields = [f for f in fields if f.name not in REMOVED_BY_CLEANUP]
    if injection == "sendmail":
        fields = [_qualify(f, myorigin) for f in fields]
    if body and not body.startswith(b"\n"):
        body = b"\n" + body
    return fields, body


def _qualify(field: Field, myorigin: str) -> Field:
    """An address header holding one bare local part, completed as cleanup(8) does."""
    match = _BARE_LOCAL_PART.match(field.raw) if field.name in ADDRESS_FIELDS else None
    if match is None:
        return field
    head, local, tail = match.groups()
    return Field(field.name, head + local + b"@" + myorigin.encode() + tail)


def delivery_differences(
    original: bytes,
    delivered: bytes,
    *,
    injection: Injection,
    received_added: int,
    myorigin: str = "mx.postfix.test",
) -> list[str]:
    """Differences between `delivered` and `original` beyond Postfix's known changes.

    injection: how the original entered Postfix ("smtp" to the inbound smtpd, or
    "sendmail"); local submissions get missing headers added.
    received_added: how many Received: headers the path adds (1 per Postfix smtpd or
    pickup, plus 1 for a filter that adds its own trace header).
    myorigin: the instance's myorigin (sendmail completes bare local parts with it).
    Returns human-readable problems; empty means "equal apart from the allowed changes".
    """
    want_fields, want_body = expected_after_postfix(original, injection, myorigin)
    got_fields, got_body = split_message(normalise_newlines(delivered))
    problems: list[str] = []

    prefix_names = [*DELIVERY_TRACE, *(["received"] * received_added)]
    got_prefix = [f.name for f in got_fields[: len(prefix_names)]]
    if got_prefix != prefix_names:
        problems.append(f"trace headers at the top are {got_prefix}, expected {prefix_names}")
    rest = got_fields[len(prefix_names) :]

    kept, added = rest[: len(want_fields)], rest[len(want_fields) :]
    if [f.raw for f in kept] != [f.raw for f in want_fields]:
        problems.append(
            "header block differs:\n"
            + _diff([f.raw for f in want_fields], [f.raw for f in kept], "expected", "delivered")
        )
    original_names = {f.name for f in want_fields}
    for field in added:
        allowed = (
            injection == "sendmail"
            and field.name in CLEANUP_ADDITIONS
            and field.name not in original_names
        )
        if not allowed:
            problems.append(f"unexpected header added at the end: {field.raw!r}")
    if got_body != want_body:
        problems.append(
            "body differs:\n"
            + _diff(
                want_body.splitlines(keepends=True),
                got_body.splitlines(keepends=True),
                "expected",
                "delivered",
            )
        )
    return problems


def format_problems(problems: dict[str, list[str]], total: int, shown: int = 3) -> str:
    """An assertion message: how many of `total` messages differ, and the first few why."""
    lines = [f"{len(problems)} of {total} messages differ"]
    lines += [f"{name}: {'; '.join(found)}" for name, found in list(problems.items())[:shown]]
    return "\n".join(lines)


def received_headers(delivered: bytes) -> list[bytes]:
    """The Received: fields of a delivered message, top first (raw, folded bytes)."""
    fields, _ = split_message(normalise_newlines(delivered))
    return [f.raw for f in fields if f.name == "received"]


def _diff(want: Sequence[bytes], got: Sequence[bytes], a: str, b: str) -> str:
    lines = difflib.unified_diff(
        [x.decode("latin-1") for x in want],
        [x.decode("latin-1") for x in got],
        fromfile=a,
        tofile=b,
        lineterm="",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)[:4000]
