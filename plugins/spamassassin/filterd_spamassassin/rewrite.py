"""PROCESS mode: turn spamd's rewritten message into filterd edits.

filterd's edits cannot say "replace the whole message". They can remove and insert header
fields and replace the body, and that is enough to reproduce any rewrite byte for byte, as
long as every new field has the form filterd writes (``Name: value`` + CRLF, folded lines
starting with white space). The edits keep the fields spamd left alone (their raw bytes stay
untouched), remove the ones it dropped or changed, insert the ones it added or changed at the
right places (a longest common subsequence of the two field lists), and replace the body only
if it differs. ``Rewrite.exact`` says whether the result is byte-identical to spamd's output;
when it is not, the reasons say which fields filterd had to normalise.

The indexes of ``InsertHeader`` and the occurrences of ``RemoveHeader`` refer to the header
fields as received (with filterd's own trace header first, as spamd saw them): header edits
of plugins earlier in the chain (other than ``AddHeader`` at the top) shift them, so put this
plugin before other header-editing plugins when it runs in PROCESS mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from filterd.sdk import Edit, InsertHeader, RemoveHeader, ReplaceBody

from .headers import RawField, RawMessage, edit_value


@dataclass(frozen=True, slots=True)
class Original:
    """The message as spamd received it: its header fields, the separator and the body."""

    fields: tuple[RawField, ...]
    separator: bytes
    body_chunks: Iterable[bytes]


@dataclass(frozen=True, slots=True)
class Rewrite:
    edits: tuple[Edit, ...]
    exact: bool
    problems: tuple[str, ...] = field(default=())
    body_replaced: bool = False


def rewrite_edits(original: Original, rewritten: RawMessage) -> Rewrite:
    problems: list[str] = []
    old = [f.raw for f in original.fields]
    new = [f.raw for f in rewritten.fields]
    keep_old, keep_new = _common(old, new)
    edits: list[Edit] = []
    # Removals from the last field back: the occurrence numbers of earlier fields stay valid.
    for i in reversed(range(len(old))):
        if i in keep_old:
            continue
        name = original.fields[i].name
        occurrence = 1 + sum(1 for f in original.fields[:i] if f.name.lower() == name.lower())
        edits.append(RemoveHeader(name, occurrence))
    # Insertions in the order of the new section: each lands at its final index.
    for j, new_field in enumerate(rewritten.fields):
        if j in keep_new:
            continue
        value, exact = edit_value(new_field)
        if not exact:
            problems.append(f"header {new_field.name!r} cannot be written as spamd wrote it")
        edits.append(InsertHeader(j, new_field.name, value))
    body, separator_ok = _body_after(original.separator, rewritten)
    if not separator_ok:
        problems.append("spamd changed the blank line between header and body")
    replaced = not _same(original.body_chunks, body)
    if replaced:
        edits.append(ReplaceBody(body))
    return Rewrite(tuple(edits), not problems, tuple(problems), replaced)


def _body_after(separator: bytes, rewritten: RawMessage) -> tuple[bytes, bool]:
    """The body to hand on after the *original* separator, so that the whole equals spamd's
    separator + body; and whether that is exact."""
    tail = rewritten.separator + rewritten.body
    if tail.startswith(separator):
        return tail[len(separator) :], True
    return rewritten.body, False


def _same(chunks: Iterable[bytes], expected: bytes) -> bool:
    pos = 0
    for chunk in chunks:
        if expected[pos : pos + len(chunk)] != chunk:
            return False
        pos += len(chunk)
    return pos == len(expected)


def _common(old: Sequence[bytes], new: Sequence[bytes]) -> tuple[set[int], set[int]]:
    """Indexes of a longest common subsequence of two field lists (equal raw bytes)."""
    n, m = len(old), len(new)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = table[i], table[i + 1]
        for j in range(m - 1, -1, -1):
            row[j] = below[j + 1] + 1 if old[i] == new[j] else max(below[j], row[j + 1])
    keep_old: set[int] = set()
    keep_new: set[int] = set()
    for i, j in _walk(table, old, new):
        keep_old.add(i)
        keep_new.add(j)
    return keep_old, keep_new


def _walk(
    table: list[list[int]], old: Sequence[bytes], new: Sequence[bytes]
) -> Iterator[tuple[int, int]]:
    i = j = 0
    while i < len(old) and j < len(new):
        if old[i] == new[j]:
            yield i, j
            i += 1
            j += 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
