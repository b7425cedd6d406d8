"""Socket addresses as the configuration writes them (``"127.0.0.1:10025"``, ``"[::1]:10025"``,
``"localhost:25"``, ``"unix:/run/filterd.sock"``) and host names: apart from the pydantic types
(``filterd.config.types``), so that ``filterd pipe --via ADDRESS`` parses its address without
loading pydantic."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["ENDPOINT_HINT", "Endpoint", "EndpointError", "is_hostname", "split_endpoint"]

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")

_ENDPOINT_EXAMPLES = '"127.0.0.1:10025", "[::1]:10025", "localhost:25" or "unix:/run/filterd.sock"'
ENDPOINT_HINT = f"write host:port or unix:/path, e.g. {_ENDPOINT_EXAMPLES}"


def is_hostname(text: str) -> bool:
    """A DNS host name (letters, digits, ``-``, ``_``, dots), at most 253 characters."""
    return len(text) <= 253 and _HOSTNAME_RE.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to listen or connect: a TCP host and port, or a unix-domain socket path.

    For ``kind == "tcp"`` ``path`` is ``""``; for ``kind == "unix"`` ``host`` is ``""`` and
    ``port`` is 0. ``str()`` gives the canonical form ``parse_endpoint`` accepts.
    """

    kind: Literal["tcp", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


class EndpointError(ValueError):
    """Not a socket address: ``why`` (without the value) and ``hint``, how to write one."""

    def __init__(self, why: str, hint: str = ENDPOINT_HINT) -> None:
        super().__init__(why)
        self.why = why
        self.hint = hint


def _port(port: str) -> int:
    if not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise EndpointError("expected a port number 0-65535 after the last colon")
    return int(port)


def split_endpoint(value: str) -> Endpoint:
    """``"127.0.0.1:10025"``, ``"[::1]:10025"``, ``"localhost:25"``, ``"unix:/path"`` → Endpoint;
    ``EndpointError`` for anything else."""
    if value.startswith("unix:"):
        path = value.removeprefix("unix:")
        if not path or "\0" in path:
            raise EndpointError("expected a socket path after unix:")
        return Endpoint("unix", path=path)
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise EndpointError("expected an IPv6 address in brackets") from None
        if not rest.startswith(":"):
            raise EndpointError("expected a port after the brackets, as in [::1]:25")
        return Endpoint("tcp", host=str(address), port=_port(rest[1:]))
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise EndpointError("expected host:port")
    if ":" in host:
        raise EndpointError("an IPv6 address needs brackets", 'write it as "[::1]:10025"')
    try:
        host = str(ipaddress.IPv4Address(host))
    except ValueError:
        if not is_hostname(host):
            shown = json.dumps(host, ensure_ascii=False)  # as show_value shows a string
            raise EndpointError(f"{shown} is not a host name or address") from None
        host = host.lower()
    return Endpoint("tcp", host=host, port=_port(port))
