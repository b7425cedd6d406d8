"""Typed configuration values: durations, sizes, socket addresses, networks, host names.

Each is a pydantic ``Annotated`` type that parses what an admin writes in TOML into the value code
uses (``Duration`` → float seconds, ``ByteSize`` → int bytes, ``SocketAddress`` → ``Endpoint``) and
serialises back, in JSON mode, to the form the admin would write. Parse errors are
``PydanticCustomError``s whose context carries a ``hint`` (the fix), which ``config.load`` shows.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from filterd.config.endpoint import (
    ENDPOINT_HINT,
    Endpoint,
    EndpointError,
    is_hostname,
    split_endpoint,
)

__all__ = [
    "ByteSize",
    "ClientPattern",
    "DomainPattern",
    "Duration",
    "Endpoint",
    "HostName",
    "IPNetwork",
    "SocketAddress",
    "TableRef",
    "format_duration",
    "parse_byte_size",
    "parse_client_pattern",
    "parse_domain_pattern",
    "parse_duration",
    "parse_endpoint",
    "parse_network",
    "show_value",
]


def show_value(value: object) -> str:
    """Show a configuration input the way it looks in TOML: ``"thirty"``, ``true``, ``12``."""
    match value:
        case bool():
            return "true" if value else "false"
        case str():
            return json.dumps(value, ensure_ascii=False)
        case dict():
            return "a table"
        case list() | tuple():
            return "an array"
        case _:
            return str(value)


def _invalid(error_type: str, reason: str, hint: str) -> PydanticCustomError:
    return PydanticCustomError(error_type, "{reason}", {"reason": reason, "hint": hint})


# --- durations ----------------------------------------------------------------------------------

_DURATION_UNITS: dict[str, int] = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,  # Postfix's time units: s, m, h, d, w
}
_DURATION_PART = r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d|w)"
_DURATION_RE = re.compile(rf"(?:{_DURATION_PART})+", re.IGNORECASE)
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_DURATION_HINT = (
    'write a number with a unit ms, s, m, h, d or w ("500ms", "30s", "5m", "1h", "1h30m"), '
    "or a plain number of seconds"
)


def parse_duration(value: object) -> float:
    """``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"``, ``"4w"``, ``"1h30m"``, or seconds →
    seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _invalid(
            "duration_type",
            f'expected a duration such as "30s", got {show_value(value)}',
            _DURATION_HINT,
        )
    if isinstance(value, int | float):
        seconds = float(value) if abs(value) < 1e300 else math.inf
    else:
        text = value.strip()
        if _NUMBER_RE.fullmatch(text):
            seconds = float(text)
        elif _DURATION_RE.fullmatch(text):
            millis = Decimal(0)
            for number, unit in re.findall(_DURATION_PART, text, re.IGNORECASE):
                millis += Decimal(number) * _DURATION_UNITS[unit.lower()]
            seconds = float(millis / 1000)
        else:
            raise _invalid(
                "duration_parsing",
                f'expected a duration such as "30s", got {show_value(value)}',
                _DURATION_HINT,
            )
    if not math.isfinite(seconds) or seconds < 0:
        raise _invalid(
            "duration_range",
            f"expected a duration of zero or more seconds, got {show_value(value)}",
            _DURATION_HINT,
        )
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form: 300.0 → ``"5m"``, 0.5 → ``"500ms"``, 90.0 → ``"90s"``."""
    if seconds.is_integer():
        whole = int(seconds)
        for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
            if whole and whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"
    millis = round(seconds * 1000)
    if millis / 1000 == seconds:
        return f"{millis}ms"
    return f"{seconds!r}s"


Duration = Annotated[
    float,
    PlainValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "examples": ["500ms", "30s", "5m", "1h"]}),
]
"""A span of time, in float seconds."""


# --- sizes --------------------------------------------------------------------------------------

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)", re.IGNORECASE)
_SIZE_HINT = (
    'write a whole number of bytes, or a number with a unit: "10k"/"10KB" (1000s), "10KiB" '
    '(1024s), "50MB", "50MiB", "1GB", "1GiB"'
)


def parse_byte_size(value: object) -> int:
    """Bytes from ``512``, ``"512"``, ``"10k"``/``"10KB"`` (1000s), ``"10KiB"`` (1024s), MB, MiB….

    Units are case-insensitive: k, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB, TiB.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _invalid(
            "byte_size_type",
            f'expected a size such as "10MB", got {show_value(value)}',
            _SIZE_HINT,
        )
    if isinstance(value, int | float):
        if isinstance(value, float) and not value.is_integer():
            raise _invalid(
                "byte_size_fraction",
                f"expected a whole number of bytes, got {show_value(value)}",
                _SIZE_HINT,
            )
        if value < 0:
            raise _invalid(
                "byte_size_range",
                f"expected a size of zero or more bytes, got {show_value(value)}",
                _SIZE_HINT,
            )
        return int(value)
    match = _SIZE_RE.fullmatch(value.strip())
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise _invalid(
            "byte_size_parsing",
            f'expected a size such as "10MB", got {show_value(value)}',
            _SIZE_HINT,
        )
    try:
        size = Decimal(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise _invalid("byte_size_parsing", f"bad size {show_value(value)}", _SIZE_HINT) from exc
    if size != size.to_integral_value():
        raise _invalid(
            "byte_size_fraction",
            f"{show_value(value)} is not a whole number of bytes",
            _SIZE_HINT,
        )
    return int(size)


ByteSize = Annotated[
    int,
    PlainValidator(parse_byte_size),
    WithJsonSchema({"type": "integer", "examples": [1048576, "10MB", "50MiB"]}),
]
"""A number of bytes."""


# --- host names and socket addresses ------------------------------------------------------------


def parse_hostname(value: object) -> str:
    """A DNS host name (letters, digits, ``-``, ``_``, dots): what we say in greetings and HELO."""
    if not isinstance(value, str) or not is_hostname(value):
        raise _invalid(
            "hostname",
            f"expected a host name such as {show_value('mail.example.org')}, "
            f"got {show_value(value)}",
            "use letters, digits, hyphens and dots only (no spaces, no brackets)",
        )
    return value


HostName = Annotated[
    str,
    PlainValidator(parse_hostname),
    WithJsonSchema({"type": "string", "examples": ["mail.example.org"]}),
]


def parse_domain_pattern(value: object) -> str:
    """A domain as Postfix's relay_domains lists it: ``"example.org"`` or ``".example.org"``
    (lower case, without a trailing dot)."""
    text = value.strip().lower().rstrip(".") if isinstance(value, str) else ""
    if not text or not is_hostname(text.removeprefix(".")):
        raise _invalid(
            "domain",
            f"expected a domain such as {show_value('example.org')} or "
            f"{show_value('.example.org')}, got {show_value(value)}",
            "write a domain name (letters, digits, hyphens and dots), with a leading dot to "
            "match only its subdomains",
        )
    return text


DomainPattern = Annotated[
    str,
    PlainValidator(parse_domain_pattern),
    WithJsonSchema({"type": "string", "examples": ["example.org", ".example.org"]}),
]


def _bad_endpoint(value: object, why: str, hint: str = ENDPOINT_HINT) -> PydanticCustomError:
    return _invalid("socket_address", f"{why}, got {show_value(value)}", hint)


def parse_endpoint(value: object) -> Endpoint:
    """``"127.0.0.1:10025"``, ``"[::1]:10025"``, ``"localhost:25"``, ``"unix:/path"`` → Endpoint."""
    if isinstance(value, Endpoint):
        return value
    if not isinstance(value, str):
        raise _bad_endpoint(value, "expected a socket address string")
    try:
        return split_endpoint(value)
    except EndpointError as exc:
        raise _bad_endpoint(value, exc.why, exc.hint) from None


SocketAddress = Annotated[
    Endpoint,
    PlainValidator(parse_endpoint),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "examples": ["127.0.0.1:10025", "unix:/run/filterd.sock"]}),
]


# --- networks -----------------------------------------------------------------------------------


def parse_network(value: object) -> IPv4Network | IPv6Network:
    """``"10.0.0.0/8"``, ``"::1/128"``, or a single address (``"192.0.2.1"`` → a /32)."""
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    hint = 'write an address or network such as "192.0.2.7", "10.0.0.0/8" or "::1/128"'
    if not isinstance(value, str):
        raise _invalid(
            "ip_network", f"expected an IP network string, got {show_value(value)}", hint
        )
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise _invalid(
                "ip_network", f"expected an IP network, got {show_value(value)}", hint
            ) from exc
        raise _invalid(
            "ip_network",
            f"{show_value(value)} has host bits set",
            f"did you mean {show_value(str(loose))}?",
        ) from exc


IPNetwork = Annotated[
    IPv4Network | IPv6Network,
    PlainValidator(parse_network),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "examples": ["127.0.0.0/8", "::1/128"]}),
]


# --- networks or lookup tables ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableRef:
    """A Postfix lookup table (``type:name``) where a list of networks may name one, as
    Postfix's ``mynetworks`` does; the part that uses it opens it (and names what is wrong
    with it)."""

    spec: str

    def __str__(self) -> str:
        return self.spec


_TABLE_REF_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*:\S.*", re.DOTALL)


def parse_client_pattern(value: object) -> IPv4Network | IPv6Network | TableRef:
    """A network (``"10.0.0.0/8"``, ``"::1/128"``, ``"192.0.2.7"``), or a lookup table
    (``"cidr:/etc/postfix/mynetworks.cidr"``) that lists client addresses."""
    if isinstance(value, TableRef):
        return value
    try:
        return parse_network(value)
    except PydanticCustomError:
        if isinstance(value, str) and _TABLE_REF_RE.fullmatch(value.strip()):
            return TableRef(value.strip())
        raise _invalid(
            "client_pattern",
            f"expected an IP network or a lookup table, got {show_value(value)}",
            'write an address or network such as "192.0.2.7", "10.0.0.0/8" or "::1/128", '
            'or a table such as "cidr:/etc/postfix/mynetworks.cidr"',
        ) from None


ClientPattern = Annotated[
    IPv4Network | IPv6Network | TableRef,
    PlainValidator(parse_client_pattern),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "examples": ["127.0.0.0/8", "cidr:/etc/postfix/mynetworks.cidr"]}
    ),
]
"""A network, or a lookup table of client addresses (``mynetworks``)."""
