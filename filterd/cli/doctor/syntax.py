"""Postfix's value syntax, for the values postconf prints: lists, ``{ }`` groups, times, and
master.cf's process limit.

Lists (``smtpd_milters``, restriction lists, ``receive_override_options``...) are separated by
white space or commas; a ``{`` opens a group that runs to its matching ``}`` whatever it holds,
so ``{ inet:host:port, timeout=10s }`` or ``inline:{ a=b, c=d }`` is one item (Postfix's
``mystrtokq`` with ``{}`` as parentheses).
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "group_items",
    "group_settings",
    "match_address_list",
    "parse_process_limit",
    "parse_time",
    "split_list",
]

SEPARATORS = frozenset(" \t\r\n,")
_TIME = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def split_list(text: str) -> list[str]:
    """The items of a Postfix list; a ``{...}`` group (with what it holds) stays one item.
    An unbalanced ``{`` runs to the end of the text."""
    items: list[str] = []
    start = -1
    depth = 0
    for index, char in enumerate(text):
        if start < 0:
            if char in SEPARATORS:
                continue
            start = index
        if char == "{":
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
        elif char in SEPARATORS and depth == 0:
            items.append(text[start:index])
            start = -1
    if start >= 0:
        items.append(text[start:])
    return items


def group_items(item: str) -> list[str] | None:
    """The items inside a ``{ ... }`` group, or None if ``item`` is not one."""
    if len(item) < 2 or item[0] != "{" or item[-1] != "}":
        return None
    return split_list(item[1:-1])


def group_settings(items: list[str]) -> dict[str, str]:
    """``name=value`` items of a group (``{ inet:host:port, timeout=10s }`` after its first
    item); ``{ name = value }`` may hold spaces. Items that are no setting are skipped."""
    settings: dict[str, str] = {}
    for item in items:
        inner = group_items(item)
        text = " ".join(inner) if inner is not None else item
        name, sep, value = text.partition("=")
        if sep and name.strip():
            settings[name.strip()] = value.strip()
    return settings


def parse_time(text: str) -> float | None:
    """A Postfix time value in seconds: a number with an optional unit s, m, h, d or w (a bare
    number is seconds, the default unit of every time parameter the doctor reads); None if
    it is not one."""
    match = _TIME.fullmatch(text.strip())
    if match is None:
        return None
    return float(match[1]) * _UNITS[match[2]]


def parse_process_limit(field: str, default_process_limit: str) -> int | None:
    """master.cf's maxproc: ``-`` is ``default_process_limit``; 0 means no limit (None)."""
    text = default_process_limit if field == "-" else field
    if not text.strip().isdigit():
        return None
    limit = int(text)
    return None if limit == 0 else limit


def _network(item: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """``1.2.3.4``, ``1.2.3.0/24``, ``[::1]``, ``[2001:db8::]/32`` (Postfix writes IPv6 in
    brackets in address lists); None for anything else (names, tables, files)."""
    text = item
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith("/")):
            return None
        text = address + rest
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def match_address_list(
    value: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> bool | None:
    """Whether a Postfix address list (``smtpd_authorized_xforward_hosts``, ``mynetworks``)
    matches a client ``address``, as Postfix reads it: in order, the first item that matches
    decides, ``!item`` excluding. None when an item the doctor cannot evaluate (a host name,
    a ``type:table`` lookup, a ``/file``) comes before any item that decides."""
    undecided = False
    for item in split_list(value):
        negated = item.startswith("!")
        network = _network(item.removeprefix("!"))
        if network is None:
            undecided = True
            continue
        if address.version == network.version and address in network:
            return None if undecided else not negated
    return None if undecided else False
