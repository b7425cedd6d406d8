"""Compare two trees of Maildirs, one written by Postfix's virtual(8), one by filterd, as
the differential test of the Maildir stage does (tests/e2e/test_virtual_differential.py).

What must be the same: every directory below the mailbox base, and every file that is not a
message (``maildirfolder``), with its mode and owner; ``tmp/`` empty; and, in each ``new/`` and
``cur/``, the same messages, each with its mode and owner, byte for byte but for:

- its name (``<sec>.V<dev>I<ino>M<usec>.<host>``: time, inode and host of its writer);
- the three header lines delivery adds on top, ``Return-Path:``, ``X-Original-To:`` and
  ``Delivered-To:``, compared by their values (``Message.trace``);
- the one ``Received:`` field right below them: the trace line of the server that received
  the message over SMTP (Postfix's smtpd or filterd's door), in each server's own words
  (its name, queue id, software, time). Only that field is left out; every other
  ``Received:`` (those the message arrived with) is compared as it is.

``snapshot`` reads a tree, ``tree_differences`` reports what differs, in words,
``without_field`` and ``without_message`` take a documented disagreement out.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

TRACE_FIELDS = ("return-path", "x-original-to", "delivered-to")
_FIELD = re.compile(rb"^([!-9;-~]+):[ \t]*(.*)\n\Z", re.DOTALL)


@dataclass(frozen=True, order=True)
class Entry:
    """A directory or a non-message file: where, what, mode, owner."""

    path: str
    kind: str  # "dir" or "file"
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True, order=True)
class Message:
    """A delivered file as compared: its Maildir, the values of the trace fields, the rest
    (the message without them and without the receiving server's Received:), owner, mode."""

    maildir: str  # e.g. example.org/alice/.Junk/new
    trace: tuple[tuple[str, str], ...]
    rest: bytes
    mode: int
    uid: int
    gid: int


@dataclass
class Tree:
    entries: list[Entry]
    messages: list[Message]
    problems: list[str]  # what cannot be compared (a file left in tmp/, a malformed top)


def _fields(data: bytes) -> Iterable[tuple[bytes, int]]:
    """(raw field with its folded lines, end offset) from the top of ``data``."""
    offset = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        if end < 0:
            return
        end += 1
        while end < len(data) and data[end : end + 1] in (b" ", b"\t"):
            more = data.find(b"\n", end)
            if more < 0:
                return
            end = more + 1
        yield data[offset:end], end
        offset = end


def split_delivered(data: bytes) -> tuple[tuple[tuple[str, str], ...], bytes] | str:
    """The trace fields' values and the rest of a delivered file, without the receiving
    server's ``Received:``; or what is wrong with its top."""
    trace: list[tuple[str, str]] = []
    offset = 0
    for raw, end in _fields(data):
        match = _FIELD.match(raw)
        if match is None:
            return f"not a header field at the top: {raw[:80]!r}"
        name = match.group(1).decode("ascii").lower()
        if len(trace) < len(TRACE_FIELDS) and name in TRACE_FIELDS:
            trace.append((name, match.group(2).decode("utf-8", "surrogateescape")))
            offset = end
            continue
        if name != "received":
            return f"no Received: below the delivery's lines, but {raw[:80]!r}"
        return tuple(trace), data[end:]
    return f"no Received: below the delivery's lines: {data[offset : offset + 80]!r}"


def snapshot(base: Path) -> Tree:
    """Everything below ``base`` (see the module)."""
    tree = Tree([], [], [])
    for root, dirs, files in os.walk(base):
        dirs.sort()
        here = Path(root)
        relative = here.relative_to(base)
        if relative != Path("."):
            info = here.lstat()
            tree.entries.append(_entry(str(relative), "dir", info))
        for name in sorted(files):
            path = here / name
            info = path.lstat()
            if here.name == "tmp":
                tree.problems.append(f"{relative / name}: left in tmp/")
            elif here.name in ("new", "cur"):
                parts = split_delivered(path.read_bytes())
                if isinstance(parts, str):
                    tree.problems.append(f"{relative / name}: {parts}")
                    continue
                trace, rest = parts
                tree.messages.append(
                    Message(
                        str(relative),
                        trace,
                        rest,
                        stat.S_IMODE(info.st_mode),
                        info.st_uid,
                        info.st_gid,
                    )
                )
            else:
                tree.entries.append(_entry(str(relative / name), "file", info))
    tree.messages.sort()
    return tree


def _entry(path: str, kind: str, info: os.stat_result) -> Entry:
    return Entry(path, kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)


def without_field(tree: Tree, name: str) -> tuple[Tree, int]:
    """``tree`` with every header field ``name`` (lower case) removed from its messages' header
    sections (a documented disagreement), and how many were removed."""
    removed = 0
    messages = []
    for message in tree.messages:
        kept = []
        offset = 0
        for raw, end in _fields(message.rest):
            match = _FIELD.match(raw)
            if match is None:
                break
            offset = end
            if match.group(1).decode("ascii").lower() == name:
                removed += 1
            else:
                kept.append(raw)
        messages.append(replace(message, rest=b"".join(kept) + message.rest[offset:]))
    return Tree(tree.entries, sorted(messages), tree.problems), removed


def without_message(tree: Tree, line: bytes) -> tuple[Tree, int]:
    """``tree`` without the messages whose header section holds ``line`` (a whole header
    line, LF-ended: a Message-ID), and how many there were."""
    kept = [m for m in tree.messages if line not in m.rest.partition(b"\n\n")[0] + b"\n"]
    return Tree(tree.entries, kept, tree.problems), len(tree.messages) - len(kept)


def tree_differences(postfix: Tree, filterd: Tree, *, owners: bool = True) -> list[str]:
    """Each difference between the two trees, in words; empty when they agree. ``owners``:
    False leaves uid and gid out (filterd without uid_maps/gid_maps writes as itself)."""
    if not owners:
        postfix, filterd = _without_owners(postfix), _without_owners(filterd)
    found = [f"postfix: {p}" for p in postfix.problems]
    found += [f"filterd: {p}" for p in filterd.problems]
    ours, theirs = set(filterd.entries), set(postfix.entries)
    found += [f"only postfix has {e}" for e in sorted(theirs - ours)]
    found += [f"only filterd has {e}" for e in sorted(ours - theirs)]
    only_postfix = _minus(postfix.messages, filterd.messages)
    only_filterd = _minus(filterd.messages, postfix.messages)
    for maildir in sorted({m.maildir for m in only_postfix + only_filterd}):
        left = [m for m in only_postfix if m.maildir == maildir]
        right = [m for m in only_filterd if m.maildir == maildir]
        for index in range(max(len(left), len(right))):
            a = left[index] if index < len(left) else None
            b = right[index] if index < len(right) else None
            found.append(f"{maildir}: " + _message_difference(a, b))
    return found


def _without_owners(tree: Tree) -> Tree:
    entries = [replace(entry, uid=-1, gid=-1) for entry in tree.entries]
    messages = [replace(message, uid=-1, gid=-1) for message in tree.messages]
    return Tree(entries, messages, tree.problems)


def _minus(messages: list[Message], others: list[Message]) -> list[Message]:
    """``messages`` without one of each in ``others`` (a multiset difference)."""
    left = list(others)
    kept = []
    for message in messages:
        if message in left:
            left.remove(message)
        else:
            kept.append(message)
    return kept


def _message_difference(postfix: Message | None, filterd: Message | None) -> str:
    if filterd is None:
        assert postfix is not None
        return f"a message only postfix delivered: {dict(postfix.trace)}"
    if postfix is None:
        return f"a message only filterd delivered: {dict(filterd.trace)}"
    parts = []
    if postfix.trace != filterd.trace:
        parts.append(f"trace fields postfix {dict(postfix.trace)}, filterd {dict(filterd.trace)}")
    if (postfix.mode, postfix.uid, postfix.gid) != (filterd.mode, filterd.uid, filterd.gid):
        parts.append(
            f"mode/owner postfix {postfix.mode:o} {postfix.uid}:{postfix.gid}, "
            f"filterd {filterd.mode:o} {filterd.uid}:{filterd.gid}"
        )
    if postfix.rest != filterd.rest:
        diff = difflib.unified_diff(
            postfix.rest.decode("latin-1").splitlines(keepends=True),
            filterd.rest.decode("latin-1").splitlines(keepends=True),
            "postfix",
            "filterd",
        )
        parts.append("content differs:\n" + "".join(diff)[:3000])
    return "; ".join(parts)
