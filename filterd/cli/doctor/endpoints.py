"""Where Postfix connects, in each syntax it has for it, and whether that is a filterd listener.

- ``content_filter = transport:nexthop``: smtp(8) next hops ``[host]:port``, ``host:port``,
  ``[host]``, ``host`` (port 25); lmtp(8) ones ``inet:host:port``, ``inet:[address]:port``,
  ``unix:/path`` (port 24).
- ``smtpd_proxy_filter``: ``host:port``, ``inet:host:port``, ``unix:path`` (no host: localhost).
- ``smtpd_milters`` and ``check_policy_service``: ``inet:host:port``, ``unix:path``.
- master.cf inet service names: ``host:port``, ``[v6]:port`` or a bare port (every address).

A relative unix path is relative to Postfix's queue directory, and so is an absolute one for a
chrooted client. Host names are resolved the way the system resolves them (``localhost`` from
/etc/hosts); a name that does not resolve matches nothing.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Literal

from filterd.config.types import Endpoint

__all__ = [
    "Target",
    "lmtp_destination",
    "master_inet_address",
    "matches_listener",
    "milter_endpoint",
    "policy_endpoint",
    "proxy_destination",
    "smtp_destination",
]

SMTP_PORT = 25
LMTP_PORT = 24
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})


@dataclass(frozen=True)
class Target:
    """A place Postfix connects to (or listens on): a TCP host and port, or a unix path."""

    kind: Literal["tcp", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _port(text: str) -> int | None:
    if text.isdigit():
        port = int(text)
        return port if 0 < port < 65536 else None
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        return None


def _host_port(text: str, default_port: int | None) -> Target | None:
    """``host:port``, ``[host]:port``, ``[host]`` or ``host`` (when a default port is given)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        host = host.removeprefix("ipv6:").removeprefix("IPv6:")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or ":" in host:
            host, port_text = text, ""
    if not port_text:
        if default_port is None:
            return None
        return Target("tcp", host=host, port=default_port)
    port = _port(port_text)
    return None if port is None else Target("tcp", host=host, port=port)


def smtp_destination(nexthop: str) -> Target | None:
    """An smtp(8) next hop; None when it names no host (mail goes to the recipient domain)."""
    if not nexthop:
        return None
    return _host_port(nexthop.removeprefix("inet:"), SMTP_PORT)


def lmtp_destination(nexthop: str) -> Target | None:
    """An lmtp(8) next hop."""
    if nexthop.startswith("unix:"):
        return Target("unix", path=nexthop.removeprefix("unix:"))
    if not nexthop:
        return None
    return _host_port(nexthop.removeprefix("inet:"), LMTP_PORT)


def proxy_destination(value: str) -> Target | None:
    """``smtpd_proxy_filter``: ``host:port``, ``:port`` or ``port`` (localhost), ``inet:``,
    ``unix:path``."""
    if value.startswith("unix:"):
        return Target("unix", path=value.removeprefix("unix:"))
    value = value.removeprefix("inet:")
    if value.isdigit() or value.startswith(":"):
        value = "localhost:" + value.lstrip(":")
    return _host_port(value, None)


def milter_endpoint(value: str) -> Target | None:
    """A milter's ``inet:host:port``, ``unix:path`` or ``local:path``."""
    for prefix in ("unix:", "local:"):
        if value.startswith(prefix):
            return Target("unix", path=value.removeprefix(prefix))
    if value.startswith("inet:"):
        return _host_port(value.removeprefix("inet:"), None)
    return None


def policy_endpoint(value: str) -> Target | None:
    """A policy service's ``inet:host:port`` or ``unix:path``."""
    if value.startswith("unix:"):
        return Target("unix", path=value.removeprefix("unix:"))
    if value.startswith("inet:"):
        return _host_port(value.removeprefix("inet:"), None)
    return None


def master_inet_address(service_name: str) -> Target | None:
    """An inet service's name: ``host:port``, ``[v6]:port``, or a port (every address)."""
    if ":" not in service_name or service_name.startswith("*:"):
        port = _port(service_name.removeprefix("*:"))
        return None if port is None else Target("tcp", host="", port=port)
    return _host_port(service_name, None)


@functools.lru_cache(maxsize=256)
def addresses(host: str) -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``host`` stands for (itself, if it is one); empty if it does not resolve."""
    try:
        return frozenset({ipaddress.ip_address(host.split("%")[0])})
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return frozenset()
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for *_, sockaddr in infos:
        try:
            found.add(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
        except ValueError:
            continue
    return frozenset(found)


def is_loopback(target: Target) -> bool:
    """A unix socket, or a TCP host whose every address is a loopback one."""
    if target.kind == "unix":
        return True
    if target.host in _WILDCARDS:
        return target.host == ""  # Postfix's own default host: localhost
    found = addresses(target.host)
    return bool(found) and all(address.is_loopback for address in found)


def unix_path(path: str, queue_directory: str, chrooted: bool) -> str:
    """Where Postfix's unix ``path`` is on the file system (relative: in the queue directory;
    absolute from a chrooted client: below it)."""
    if not os.path.isabs(path) or chrooted:
        path = os.path.join(queue_directory, path.lstrip("/"))
    return os.path.normpath(path)


def same_host(first: str, second: str) -> bool:
    """Whether two hosts (names or addresses; ``""`` or a wildcard = every address) meet."""
    if first in _WILDCARDS or second in _WILDCARDS:
        return True
    return bool(addresses(first) & addresses(second))


def matches_listener(
    target: Target, listener: Endpoint, *, queue_directory: str, chrooted: bool
) -> bool:
    """Whether Postfix connecting to ``target`` reaches filterd's ``listener``."""
    if target.kind != listener.kind:
        return False
    if target.kind == "unix":
        return unix_path(target.path, queue_directory, chrooted) == os.path.normpath(listener.path)
    return target.port == listener.port and same_host(target.host or "localhost", listener.host)


def matches_service(target: Target, service_address: Target) -> bool:
    """Whether connecting to ``target`` reaches a master.cf inet service at ``service_address``."""
    if target.kind != "tcp" or service_address.kind != "tcp":
        return False
    return target.port == service_address.port and same_host(target.host, service_address.host)
