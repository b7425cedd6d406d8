"""Edits as data. Plugins never mutate a message; the front door applies edits at end of
message (the relay before handing it on, the milter as modifications)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")  # RFC 5322 field-name: printable, no colon


def _check_header(name: str, value: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"bad header name {name!r}")
    if "\r" in value or "\x00" in value:
        raise ValueError("a header value must not contain CR or NUL (use \\n + WSP to fold)")
    for line in value.split("\n")[1:]:
        if line[:1] not in (" ", "\t"):
            raise ValueError("a folded header line must start with a space or tab")


@dataclass(frozen=True, slots=True)
class AddHeader:
    """Add a header: at the top (``at_top=True``, like Postfix PREPEND) or the end of the
    header section."""

    name: str
    value: str
    at_top: bool = True

    def __post_init__(self) -> None:
        _check_header(self.name, self.value)


@dataclass(frozen=True, slots=True)
class InsertHeader:
    """Insert a header before the ``index``-th header (0 = first)."""

    index: int
    name: str
    value: str

    def __post_init__(self) -> None:
        _check_header(self.name, self.value)


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    """Replace the value of the ``occurrence``-th (1-based) header called ``name``."""

    name: str
    value: str
    occurrence: int = 1

    def __post_init__(self) -> None:
        _check_header(self.name, self.value)
        if self.occurrence < 1:
            raise ValueError("occurrence is 1-based")


@dataclass(frozen=True, slots=True)
class RemoveHeader:
    """Remove the ``occurrence``-th (1-based) header called ``name``; 0 removes them all."""

    name: str
    occurrence: int = 0


@dataclass(frozen=True, slots=True)
class AddRecipient:
    address: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RemoveRecipient:
    address: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the message to ``address`` instead of all its recipients (access(5) ``REDIRECT
    user@domain``; the last one wins). The doors apply it at end of message over the
    recipients the client gave (``filterd.model.editing.expand_redirect``); the policy door
    answers Postfix ``REDIRECT address``, and Postfix does the same."""

    address: str


@dataclass(frozen=True, slots=True)
class ChangeSender:
    address: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplaceBody:
    """Replace the body (everything after the header section) with ``body`` (CRLF lines)."""

    body: bytes


Edit = (
    AddHeader
    | InsertHeader
    | ChangeHeader
    | RemoveHeader
    | AddRecipient
    | RemoveRecipient
    | Redirect
    | ChangeSender
    | ReplaceBody
)

HEADER_EDITS = (AddHeader, InsertHeader, ChangeHeader, RemoveHeader)
ENVELOPE_EDITS = (AddRecipient, RemoveRecipient, Redirect, ChangeSender)
