"""The header lines a final delivery adds, as Postfix's mail_copy() writes them, and the
Delivered-To loop check of local(8).

Order and form (src/global/mail_copy.c): ``Return-Path: <sender>`` (``<>`` for the null
sender), ``X-Original-To: recipient`` (the recipient as the client gave it; left out when
empty), ``Delivered-To: recipient`` (the final recipient), each ended by LF; every address
with its local part quoted as quote_822_local() does (8-bit clean). Addresses come as the
envelope gives them (RFC 5321: ``"john doe"@example.com``) and are unquoted first, as
Postfix's smtpd stores them (``unquote_local``), so a quoted local part is quoted once.
"""

from __future__ import annotations

from collections.abc import Iterable

from filterd.model.headers import Header
from filterd.model.reply import Reply

__all__ = [
    "delivery_header",
    "forwarding_loop",
    "has_delivered_to",
    "quote_local",
    "unquote_local",
]

_SPECIALS = frozenset('()<>@,;:\\"[]')


def _is_dot_string(local: str) -> bool:
    if not local or local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    return not any(
        char == " " or char in _SPECIALS or ord(char) < 0x20 or ord(char) == 0x7F for char in local
    )


def quote_local(address: str) -> str:
    """``address`` with its local part as an RFC 822 quoted-string unless it is a dot-string
    (``"a b"@example.org``; ``"`` and ``\\`` and CR backslash-escaped); a source route
    (``@a,@b:``) is kept before it, the domain after the last ``@`` as it is."""
    start = address.index(":") + 1 if address.startswith("@") and ":" in address else 0
    end = address.rfind("@", start)
    if end < 0:
        end = len(address)
    local = address[start:end]
    if _is_dot_string(local):
        return address
    escaped = "".join("\\" + char if char in '"\\\r' else char for char in local)
    return f'{address[:start]}"{escaped}"{address[end:]}'


def unquote_local(address: str) -> str:
    """``address`` with the quotes and backslash escapes of its local part removed, as
    Postfix's unquote_822_local() does: ``"a b"@example.org`` is ``a b@example.org``. A
    source route (``@a,@b:``) and the domain after the last unquoted ``@`` are kept as they
    are."""
    start = address.index(":") + 1 if address.startswith("@") and ":" in address else 0
    out: list[str] = []
    quoted = False
    last_at: tuple[int, int] | None = None  # (position in out, position in address)
    index = start
    while index < len(address):
        char = address[index]
        if char == '"':
            quoted = not quoted
            index += 1
            continue
        if char == "@" and not quoted:
            last_at = (len(out), index)
        elif char == "\\":
            index += 1
            if index == len(address):
                break
            char = address[index]
        out.append(char)
        index += 1
    if last_at is not None:
        return address[:start] + "".join(out[: last_at[0]]) + address[last_at[1] :]
    return address[:start] + "".join(out)


def delivery_header(sender: str, original: str, delivered: str) -> bytes:
    """Return-Path, X-Original-To and Delivered-To, as the top of a delivered message."""
    lines = [f"Return-Path: <{_requote(sender) if sender else ''}>\n"]
    if original:
        lines.append(f"X-Original-To: {_requote(original)}\n")
    lines.append(f"Delivered-To: {_requote(delivered)}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def _requote(address: str) -> str:
    return quote_local(unquote_local(address))


def has_delivered_to(headers: Iterable[Header], address: str) -> bool:
    """True when the header section carries ``Delivered-To: address`` (local(8)'s check:
    the address quoted as mail_copy writes it, compared without regard to case)."""
    wanted = _requote(address).casefold()
    return any(
        header.is_named("Delivered-To") and header.value.strip().casefold() == wanted
        for header in headers
    )


def forwarding_loop(address: str) -> Reply:
    """local(8)'s bounce for a message that already went to ``address``."""
    return Reply(554, "5.4.6", f"mail forwarding loop for {address}")
