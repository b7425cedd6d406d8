"""Durations, sizes, socket addresses, networks and host names as configuration values."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import TypeVar

import pytest
from pydantic import TypeAdapter, ValidationError

from filterd.config.types import (
    ByteSize,
    Duration,
    Endpoint,
    HostName,
    IPNetwork,
    SocketAddress,
    format_duration,
    parse_endpoint,
)

DURATION: TypeAdapter[float] = TypeAdapter(Duration)
SIZE: TypeAdapter[int] = TypeAdapter(ByteSize)
ADDRESS: TypeAdapter[Endpoint] = TypeAdapter(SocketAddress)
NETWORK: TypeAdapter[IPv4Network | IPv6Network] = TypeAdapter(IPNetwork)
HOST: TypeAdapter[str] = TypeAdapter(HostName)

T = TypeVar("T")


def error_text(adapter: TypeAdapter[T], value: object) -> tuple[str, str]:
    """(message, hint) of the one error ``value`` raises."""
    with pytest.raises(ValidationError) as info:
        adapter.validate_python(value)
    (error,) = info.value.errors()
    ctx = error.get("ctx", {})
    return str(ctx.get("reason", error["msg"])), str(ctx.get("hint", ""))


# --- Duration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        (" 30S ", 30.0),
        ("30", 30.0),
        ("0.25", 0.25),
        (30, 30.0),
        (0, 0.0),
        (2.5, 2.5),
    ],
)
def test_duration_accepts(text: object, seconds: float) -> None:
    assert DURATION.validate_python(text) == seconds


@pytest.mark.parametrize("value", ["thirty", "30 seconds", "-5s", "5x", "", "s", "1h 30m"])
def test_duration_rejects_text_with_an_example(value: str) -> None:
    message, hint = error_text(DURATION, value)
    assert message == f'expected a duration such as "30s", got "{value}"'
    assert '"500ms", "30s", "5m", "1h"' in hint


@pytest.mark.parametrize("value", [-1, -0.5, float("inf"), float("nan"), 10**400, "9" * 400 + "d"])
def test_duration_rejects_negative_and_infinite_numbers(value: float) -> None:
    message, _ = error_text(DURATION, value)
    assert "zero or more seconds" in message


@pytest.mark.parametrize("value", [True, None, [30]])
def test_duration_rejects_other_types(value: object) -> None:
    message, _ = error_text(DURATION, value)
    assert message.startswith('expected a duration such as "30s", got ')


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.5, "500ms"),
        (30.0, "30s"),
        (90.0, "90s"),
        (300.0, "5m"),
        (5400.0, "90m"),
        (3600.0, "1h"),
        (172800.0, "2d"),
        (0.0001, "0.0001s"),
        (1.2345, "1.2345s"),
    ],
)
def test_format_duration_is_short_and_exact(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert DURATION.validate_python(text) == seconds


def test_duration_serialises_as_text_in_json_mode_only() -> None:
    assert DURATION.dump_python(300.0, mode="json") == "5m"
    assert DURATION.dump_python(300.0) == 300.0


# --- ByteSize -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (512, 512),
        ("512", 512),
        ("10k", 10_000),
        ("10KB", 10_000),
        ("10kb", 10_000),
        ("10KiB", 10_240),
        ("50MB", 50_000_000),
        ("50MiB", 52_428_800),
        ("1GB", 1_000_000_000),
        ("1GiB", 1_073_741_824),
        ("1.5MB", 1_500_000),
        ("10 MiB", 10_485_760),
        (1e6, 1_000_000),
    ],
)
def test_byte_size_accepts(value: object, size: int) -> None:
    assert SIZE.validate_python(value) == size


@pytest.mark.parametrize("value", ["ten", "10 parsecs", "10XB", "-1", ""])
def test_byte_size_rejects_text_with_an_example(value: str) -> None:
    message, hint = error_text(SIZE, value)
    assert message == f'expected a size such as "10MB", got "{value}"'
    assert '"10KiB"' in hint


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-1, "zero or more bytes"),
        (1.5, "whole number of bytes"),
        ("1.0001KB", "not a whole number of bytes"),
        (True, "expected a size"),
    ],
)
def test_byte_size_rejects_bad_numbers(value: object, expected: str) -> None:
    message, _ = error_text(SIZE, value)
    assert expected in message


# --- SocketAddress ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "endpoint", "canonical"),
    [
        ("127.0.0.1:10025", Endpoint("tcp", host="127.0.0.1", port=10025), "127.0.0.1:10025"),
        ("[::1]:10025", Endpoint("tcp", host="::1", port=10025), "[::1]:10025"),
        ("[0:0::1]:25", Endpoint("tcp", host="::1", port=25), "[::1]:25"),
        ("localhost:25", Endpoint("tcp", host="localhost", port=25), "localhost:25"),
        ("Mail.Example.ORG:587", Endpoint("tcp", host="mail.example.org", port=587), None),
        ("127.0.0.1:0", Endpoint("tcp", host="127.0.0.1", port=0), "127.0.0.1:0"),
        ("unix:/path/to/sock", Endpoint("unix", path="/path/to/sock"), "unix:/path/to/sock"),
        ("unix:private/filter", Endpoint("unix", path="private/filter"), "unix:private/filter"),
    ],
)
def test_socket_address_parses_and_prints_canonically(
    text: str, endpoint: Endpoint, canonical: str | None
) -> None:
    parsed = ADDRESS.validate_python(text)
    assert parsed == endpoint
    assert str(parsed) == (canonical or text.lower())
    assert parse_endpoint(str(parsed)) == parsed
    assert ADDRESS.dump_python(parsed, mode="json") == str(parsed)
    assert ADDRESS.validate_python(parsed) is parsed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", "expected host:port"),
        (":25", "expected host:port"),
        ("127.0.0.1:smtp", "port number"),
        ("127.0.0.1:65536", "port number"),
        ("127.0.0.1:-1", "port number"),
        ("::1:25", "IPv6 address needs brackets"),
        ("[::1]", "port after the brackets"),
        ("[bogus]:25", "IPv6 address in brackets"),
        ("bad host:25", "is not a host name or address"),
        ("unix:", "socket path"),
    ],
)
def test_socket_address_rejects(text: str, expected: str) -> None:
    message, hint = error_text(ADDRESS, text)
    assert expected in message
    assert f'got "{text}"' in message
    assert hint


def test_socket_address_rejects_non_strings() -> None:
    message, _ = error_text(ADDRESS, 10025)
    assert message == "expected a socket address string, got 10025"


# --- networks and host names --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("127.0.0.0/8", IPv4Network("127.0.0.0/8")),
        ("::1/128", IPv6Network("::1/128")),
        ("192.0.2.7", IPv4Network("192.0.2.7/32")),
        ("2001:db8::/32", IPv6Network("2001:db8::/32")),
    ],
)
def test_network_accepts(text: str, network: IPv4Network | IPv6Network) -> None:
    assert NETWORK.validate_python(text) == network
    assert NETWORK.dump_python(network, mode="json") == str(network)


def test_network_with_host_bits_suggests_the_network() -> None:
    message, hint = error_text(NETWORK, "10.1.2.3/8")
    assert message == '"10.1.2.3/8" has host bits set'
    assert hint == 'did you mean "10.0.0.0/8"?'


@pytest.mark.parametrize("value", ["localhost", "10.0.0.0/33", 10])
def test_network_rejects(value: object) -> None:
    message, _ = error_text(NETWORK, value)
    assert message.startswith("expected an IP network")


@pytest.mark.parametrize("name", ["localhost", "mx.example.org", "filter-1.example", "a_b.local"])
def test_host_name_accepts(name: str) -> None:
    assert HOST.validate_python(name) == name


@pytest.mark.parametrize("name", ["", "two words", "evil\r\n250 ok", "[127.0.0.1]", "-x.org", 5])
def test_host_name_rejects(name: object) -> None:
    message, _ = error_text(HOST, name)
    assert message.startswith('expected a host name such as "mail.example.org"')
