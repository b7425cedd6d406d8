"""What every check gets: both configurations, how they meet, the chain, and the report."""

from __future__ import annotations

import ipaddress
import math
import socket
from dataclasses import dataclass

from filterd.cli.doctor.chain_facts import ChainFacts, where
from filterd.cli.doctor.endpoints import addresses
from filterd.cli.doctor.findings import Report
from filterd.cli.doctor.postconf import PostfixConfig, Service
from filterd.cli.doctor.wiring import Wiring
from filterd.config.locate import KeyPath
from filterd.config.schema import Config, ListenConfig

__all__ = ["Context", "postfix_seconds", "source_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Context:
    config: Config
    postfix: PostfixConfig
    wiring: Wiring
    chain: ChainFacts
    report: Report

    def toml(self, path: KeyPath, setting: str) -> str:
        """A fix in filterd.toml: ``file:line: [table] key = value``."""
        return f"{where(self.config, path)}: {setting}"

    def listener(self, index: int) -> str:
        listener = self.config.listen[index]
        return f"listen[{index}] ({listener.address}, {listener.protocol})"

    def set_override(self, service: Service, name: str, value: str) -> list[str]:
        """The fix that sets ``-o name=value`` on ``service``: the postconf command, and the
        master.cf line it writes."""
        return [
            self.postconf("-P", f"'{service.key}/{name}={value}'"),
            f'(master.cf: "  -o {name}={value}" under the "{service.name} {service.type}" entry)',
        ]

    def postconf(self, *args: str) -> str:
        return self.postfix.postconf(*args)


def postfix_seconds(value: float) -> str:
    """A time for a Postfix parameter (whole seconds, rounded up)."""
    return f"{math.ceil(value)}s"


def source_address(host: str, bind_address: str = "") -> IPAddress | None:
    """The address this host connects from to ``host`` (the bind address when one is set):
    the kernel's route choice, asked with an unconnected UDP socket (nothing is sent)."""
    if bind_address:
        try:
            return ipaddress.ip_address(bind_address)
        except ValueError:
            return None
    for address in sorted(addresses(host or "localhost"), key=lambda a: a.version):
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((str(address), 9))
                return ipaddress.ip_address(probe.getsockname()[0].split("%")[0])
        except OSError:
            continue
    return None


def listener_client_host(listener: ListenConfig, target_host: str) -> str:
    """The host Postfix connects to for ``listener``: the listener's own address, or the
    host Postfix names when filterd listens on every address."""
    host = listener.address.host
    return target_host if host in ("", "0.0.0.0", "::") else host
