"""How one rule value is compared with one request attribute, as postfwd 1.35 compares them
(its ``%postfwd_compare`` functions), Perl's ways with strings and numbers included:

- ``cidr`` (``client_address``): an IPv4 address in an IPv4 network (``a.b.c.d/nn``; a bare
  address is a /32; ``0.0.0.0/0`` any address; an empty attribute is in none); an attribute
  that is no IPv4 address is compared as a string (``default``);
- ``numeric`` (``size``, ``recipient_count``, ``encryption_keysize``, ``request_score``): the
  item's default ``=`` is ``>=``;
- ``default``: ``==`` / ``!=`` equal without regard to case (an empty attribute is neither),
  ``=~`` / ``!~`` and the default ``=`` a case-insensitive regular expression search
  (unanchored, ``/.../`` allowed), ``<`` ``>`` ``=<`` ``=>`` ``!<`` ``!>`` numeric;
- the time windows ``date``, ``time``, ``days``, ``months`` against the rule clock's local time.

Negation (``!!``) is applied by the caller, after the comparison.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

__all__ = [
    "CIDR_ITEMS",
    "NUMERIC_ITEMS",
    "OPERATORS",
    "TIME_ITEMS",
    "LocalTime",
    "compare",
    "local_time",
    "perl_number",
]

#: postfwd's operators, after its parser rewrote ``<=`` ``>=`` ``~=`` into ``=<`` ``=>`` ``=~``.
OPERATORS = ("==", "=~", "!~", "!=", "=<", "=>", "!<", "!>", "<", ">", "=")

CIDR_ITEMS = frozenset({"client_address"})
NUMERIC_ITEMS = frozenset({"size", "recipient_count", "encryption_keysize", "request_score"})
TIME_ITEMS = frozenset({"date", "time", "days", "months"})

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_WEEKDAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_NUMBER = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\Z", re.ASCII)
_NETWORK = re.compile(r"(\d+)\.(\d+)\.(\d+)\.(\d+)/(\d+)\Z", re.ASCII)
_BITS = re.compile(r"/\d{1,2}\Z")


def perl_number(text: str) -> float:
    """A string as Perl reads it as a number: its leading number, else 0."""
    found = _NUMBER.match(text)
    return float(found.group(1)) if found else 0.0


def _perl_true(text: str | None) -> bool:
    return bool(text) and text != "0"


@dataclass(frozen=True, slots=True)
class LocalTime:
    """What postfwd takes from ``localtime()``: month 0-11, weekday 0 (Sunday) to 6."""

    year: int
    month: int
    day: int
    weekday: int
    hour: int
    minute: int
    second: int


def local_time(moment: datetime) -> LocalTime:
    return LocalTime(
        year=moment.year,
        month=moment.month - 1,
        day=moment.day,
        weekday=(moment.weekday() + 1) % 7,
        hour=moment.hour,
        minute=moment.minute,
        second=moment.second,
    )


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error:
        return None


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` is no regular expression, or None."""
    try:
        re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        return str(exc)
    return None


def _search(pattern: str, item: str) -> bool:
    compiled = _regex(pattern)
    return compiled is not None and compiled.search(item) is not None


def _strip_slashes(value: str) -> str:
    """postfwd's ``s/^\\/?(.*?)\\/?$/$1/``: one optional slash off each end."""
    if value.startswith("/"):
        value = value[1:]
    if value.endswith("/"):
        value = value[:-1]
    return value


def _numeric_op(op: str, left: float, right: float) -> bool | None:
    match op:
        case "==":
            return left == right
        case "!=":
            return left != right
        case "=<":
            return left <= right
        case "=>":
            return left >= right
        case "<":
            return left < right
        case ">":
            return left > right
        case "!<":
            return not left <= right
        case "!>":
            return not left >= right
    return None


def _default(op: str, value: str, item: str) -> bool:
    if op == "==":
        return bool(item) and item.lower() == value.lower()
    if op == "!=":
        return bool(item) and item.lower() != value.lower()
    if op == "=~":
        return _search(value, item)
    if op == "!~":
        return not _search(value, item)
    numeric = _numeric_op(op, perl_number(item), perl_number(value))
    if numeric is not None:
        return numeric
    return _search(_strip_slashes(value), item)


def _numeric(op: str, value: str, item: str) -> bool:
    left, right = perl_number(item or "0"), perl_number(value or "0")
    result = _numeric_op(op, left, right)
    return left >= right if result is None else result


def _cidr(op: str, value: str, item: str) -> bool:
    result = bool(value and item)
    if result:
        result = value == "0.0.0.0/0"
        if not result:
            if _IPV4.match(item) is None:
                return _default(op, value, item)
            network = value if _BITS.search(value) else f"{value}/32"
            result = _in_network(network, item)
    return not result if op == "!=" else result


def _in_network(network: str, address: str) -> bool:
    found = _masked_network(network)
    if found is None:
        return False
    mask, net = found
    a = [int(part) for part in address.split(".")]
    addr = (a[0] << 24) + (a[1] << 16) + (a[2] << 8) + a[3]
    return (addr & mask) == net


@lru_cache(maxsize=4096)  # the rules' own networks (or $$ expansions): parsed once
def _masked_network(network: str) -> tuple[int, int] | None:
    """``A.B.C.D/BITS`` as (mask, network & mask); None when it is no network."""
    parsed = _NETWORK.match(network)
    if parsed is None:
        return None
    *octets, bits = (int(part) for part in parsed.groups())
    if any(octet > 255 for octet in octets) or bits > 32:
        return None
    mask = ~((1 << (32 - bits)) - 1) & 0xFFFFFFFF
    net = (octets[0] << 24) + (octets[1] << 16) + (octets[2] << 8) + octets[3]
    return mask, net & mask


def _range(value: str) -> tuple[str, str, bool]:
    """postfwd's ``split(/\\s*-\\s*/, $val)``: low and high (empty when absent)."""
    parts = re.split(r"\s*-\s*", value)
    while parts and parts[-1] == "":  # Perl's split drops trailing empty fields
        parts.pop()
    low = parts[0] if parts else ""
    high = parts[1] if len(parts) > 1 else ""
    return low, high, "-" in value


def _spellings(table: dict[str, int]) -> dict[str, int]:
    """postfwd's name tables hold "Mon", "mon" and "MON" only: other spellings are unknown."""
    return {
        spelled: number
        for name, number in table.items()
        for spelled in (name, name.capitalize(), name.upper())
    }


_MONTH_NAMES = _spellings(_MONTHS)
_WEEKDAY_NAMES = _spellings(_WEEKDAYS)


def _bounds(value: str, now: float, convert: Callable[[str], float]) -> bool:
    """Is ``now`` in ``low-high`` (an end left out is open; one value alone: that value)?
    An end Perl reads as false (empty, "0") counts as left out."""
    low, high, is_range = _range(value)
    lo = convert(low) if _perl_true(low) else now
    hi = convert(high) if _perl_true(high) else (now if is_range else lo)
    return lo <= now <= hi


def _name_or_digit(names: dict[str, int]) -> Callable[[str], float]:
    def convert(text: str) -> float:
        if re.fullmatch(r"\d", text, re.ASCII):
            return float(text)
        return float(names.get(text, 0))  # Perl: an unknown name is undef, i.e. 0

    return convert


def _time_item(item: str, value: str, now: LocalTime) -> bool:
    match item:
        case "months":
            return _bounds(value, now.month, _name_or_digit(_MONTH_NAMES))
        case "days":
            return _bounds(value, now.weekday, _name_or_digit(_WEEKDAY_NAMES))
        case "date":
            today = float(f"{now.year}{now.month + 1:02d}{now.day:02d}")
            return _bounds(value, today, lambda t: perl_number("".join(reversed(t.split(".")))))
        case _:  # time
            clock = float(f"{now.hour:02d}{now.minute:02d}{now.second:02d}")
            return _bounds(value, clock, lambda t: perl_number(t.replace(":", "")))


def compare(item: str, op: str, value: str, attribute: str, now: LocalTime) -> bool:
    """One comparison, as postfwd makes it for ``item`` (before any ``!!`` negation)."""
    if item in TIME_ITEMS:
        result = _time_item(item, value, now)
        return not result if op == "!=" else result
    if item in CIDR_ITEMS:
        return _cidr(op, value, attribute)
    if item in NUMERIC_ITEMS:
        return _numeric(op, value, attribute)
    return _default(op, value, attribute)
