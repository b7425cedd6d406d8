"""The spf plugin's settings, in the spirit of pypolicyd-spf's policyd-spf.conf."""

from __future__ import annotations

import ipaddress
import re
import socket
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated, Literal

from filterd.sdk import BeforeValidator, Field, IPNetwork, PluginConfig, field_validator

HeaderKind = Literal["received-spf", "authentication-results"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m)?", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}


def _seconds(value: object) -> float:
    """``"2s"``, ``"500ms"``, ``"1m"`` or a number of seconds → seconds (more than zero)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f'expected a duration such as "2s" or "500ms", got {value!r}')
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            raise ValueError(f'expected a duration such as "2s" or "500ms", got "{value}"')
        seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    else:
        seconds = float(value)
    if not 0 < seconds < 3600:
        raise ValueError(f"expected a duration above zero and below one hour, got {value!r}")
    return seconds


Seconds = Annotated[float, BeforeValidator(_seconds)]


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"192.0.2.53"``, ``"127.0.0.1:5353"``, ``"::1"``, ``"[::1]:5353"`` → (address, port)."""
    text = text.strip()
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f'expected "[address]:port", got "{text}"')
            port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f'expected an IP address with an optional port ("127.0.0.1:5353", "[::1]:53"), '
            f'got "{text}"'
        ) from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'expected a port number 1-65535 in "{text}"')
    return str(address), int(port)


def _loopback_networks() -> list[IPv4Network | IPv6Network]:
    """pypolicyd-spf's skip_addresses default."""
    return [IPv4Network("127.0.0.0/8"), IPv6Network("::ffff:127.0.0.0/104"), IPv6Network("::1/128")]


def _all_headers() -> list[HeaderKind]:
    return ["received-spf", "authentication-results"]


def _authserv_id_default() -> str:
    return socket.gethostname() or "localhost"  # as pypolicyd-spf; getfqdn() could wait on DNS


class ResolverConfig(PluginConfig):
    """The DNS resolver the checks use (one per chain entry, with its own cache)."""

    nameservers: list[str] = Field(
        default_factory=list,
        description='Recursive DNS servers, "address" or "address:port" ("[v6]:port"); '
        "empty: the system's (/etc/resolv.conf).",
    )
    timeout: Seconds = Field(default=2.0, description="Wait for one server's answer.")
    lifetime: Seconds = Field(
        default=5.0, description="Budget for one DNS lookup, retries and servers included."
    )

    @field_validator("nameservers")
    @classmethod
    def _nameservers_parse(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_nameserver(value)
        return values

    def endpoints(self) -> list[tuple[str, int]]:
        return [parse_nameserver(value) for value in self.nameservers]


class SpfConfig(PluginConfig):
    on_fail: Literal["reject", "tag"] = Field(
        default="reject", description="SPF fail: reject at MAIL (550 5.7.23), or tag only."
    )
    on_softfail: Literal["tag", "reject"] = Field(
        default="tag", description="SPF softfail: tag only, or reject (550 5.7.23)."
    )
    on_temperror: Literal["tempfail", "tag"] = Field(
        default="tempfail", description="SPF temperror: defer (451 4.7.24), or tag only."
    )
    on_permerror: Literal["tag", "reject"] = Field(
        default="tag", description="SPF permerror: tag only, or reject (550 5.7.24)."
    )
    helo_check: Literal["off", "tag", "reject-fail"] = Field(
        default="off",
        description="Also check the HELO identity (RFC 7208 §2.3) at MAIL: off, tag (note "
        "and headers), or reject-fail (a HELO fail is refused with 550 5.7.23).",
    )
    skip_networks: list[IPNetwork] = Field(
        default_factory=_loopback_networks,
        description="Clients never checked (trusted relays, local submission).",
    )
    whitelist_senders: list[str] = Field(
        default_factory=list, description="Envelope senders never checked (whole addresses)."
    )
    whitelist_domains: list[str] = Field(
        default_factory=list,
        description='Sender domains never checked; ".example.com" also covers subdomains.',
    )
    headers: list[HeaderKind] = Field(
        default_factory=_all_headers,
        description="Headers added to checked mail: received-spf (RFC 7208 §9.1), "
        "authentication-results (RFC 8601).",
    )
    authserv_id: str = Field(
        default_factory=_authserv_id_default,
        description="authserv-id of the Authentication-Results header (default: host name).",
    )
    receiver: str | None = Field(
        default=None,
        description="The receiver in the headers and the %{r} macro (default: authserv_id).",
    )
    resolver: ResolverConfig = Field(
        default_factory=ResolverConfig,
        description='The DNS resolver: { nameservers = ["127.0.0.1:53"], timeout = "2s", '
        'lifetime = "5s" } (default: the system\'s servers).',
    )
    cache_size: int = Field(
        default=10000, ge=0, description="DNS answers kept (TTLs honoured); 0: no cache."
    )
    result_cache_size: int = Field(
        default=10000,
        ge=0,
        description="SPF results kept, each until the first DNS answer it used expires "
        "(at most an hour; temperrors never); 0: every check runs pyspf.",
    )
    lookup_time: Seconds = Field(
        default=20.0,
        description="DNS time budget of one check (RFC 7208 §4.6.4; pypolicyd-spf "
        "Lookup_Time); past it the result is temperror.",
    )

    @field_validator("whitelist_senders", "whitelist_domains")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        return [value.strip().lower().rstrip(".") for value in values]

    @field_validator("authserv_id", "receiver")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", value):
            raise ValueError(f'expected a host name such as "mx.example.org", got "{value}"')
        return value

    @property
    def receiver_name(self) -> str:
        return self.receiver or self.authserv_id
