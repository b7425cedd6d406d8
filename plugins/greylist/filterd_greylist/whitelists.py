"""postgrey's whitelist files, read as postgrey 1.37 reads them (``read_clients_whitelists``,
``read_recipients_whitelists``).

Each line: ``#`` starts a comment, surrounding white space is dropped, empty lines are skipped.

Clients (matched against the client's name and address):

- ``/regex/`` (no white space inside): a case-insensitive regex on the client name;
- ``a.b.c.d`` or ``a.b.c.d/nn``: an IPv4 address or network; ``a.b.c``: ``a.b.c.0/24``;
  ``a.b``: ``a.b.0.0/24`` (postgrey's code says /16 but builds a /24);
- anything with two colons: an IPv6 address or network;
- any other word: a host name, matching that name or any name below it.

Recipients (matched against the whole recipient address):

- ``/regex/``: a case-insensitive regex;
- ``user@domain``: that address, also with a ``+extension``; ``user@``: that user in any
  domain; ``domain``: addresses ending in ``@domain`` or ``.domain``.

Patterns are Python regular expressions (postgrey's are Perl's; the usual ones read the same).
A line that does not parse is logged and skipped, as postgrey warns and goes on.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

Warn = Callable[[str], None]

_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?:/\d{1,2})?")
_IPV4_3 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}")
_IPV4_2 = re.compile(r"\d{1,3}\.\d{1,3}")
_IPV6 = re.compile(r".*:.*:.*(?:/\d{1,3})?")
_REGEX = re.compile(r"/(\S+)/")
_WORD = re.compile(r"\S+")


def _lines(path: Path, warn: Warn) -> Iterable[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        if not path.name.endswith(".local"):  # postgrey: a .local file may be missing
            warn(f"can't open {path}: {exc.strerror or exc}")
        return
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            yield number, line


def _compile(pattern: str, path: Path, number: int, warn: Warn) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        warn(f"{path} line {number}: bad regular expression {pattern!r}: {exc}")
        return None


def _network(text: str, prefix: int | None) -> IPv4Network | IPv6Network | None:
    try:
        if prefix is None:
            return ipaddress.ip_network(text, strict=False)
        parts = text.split(".") + ["0"] * (4 - text.count(".") - 1)
        return ipaddress.ip_network(f"{'.'.join(parts)}/{prefix}", strict=False)
    except ValueError:
        return None  # postgrey: NetAddr::IP gave undef, the line is skipped


@dataclass
class ClientWhitelist:
    names: list[re.Pattern[str]] = field(default_factory=list)
    networks: list[IPv4Network | IPv6Network] = field(default_factory=list)

    def add_file(self, path: Path, warn: Warn) -> None:
        for number, line in _lines(path, warn):
            regex = _REGEX.fullmatch(line)
            network: IPv4Network | IPv6Network | None
            if regex is not None:
                pattern = _compile(regex.group(1), path, number, warn)
                if pattern is not None:
                    self.names.append(pattern)
                continue
            if _IPV4.fullmatch(line) or _IPV6.fullmatch(line):
                network = _network(line, None)
            elif _IPV4_3.fullmatch(line) or _IPV4_2.fullmatch(line):
                network = _network(line, 24)
            elif _WORD.fullmatch(line):
                self.names.append(re.compile(r"(?:^|\.)" + re.escape(line) + "$", re.IGNORECASE))
                continue
            else:
                warn(f"{path} line {number}: doesn't look like a hostname")
                continue
            if network is not None:
                self.networks.append(network)

    def listed(self, name: str, address: IPv4Address | IPv6Address) -> bool:
        return any(p.search(name) for p in self.names) or any(
            address.version == n.version and address in n for n in self.networks
        )


@dataclass
class RecipientWhitelist:
    patterns: list[re.Pattern[str]] = field(default_factory=list)

    def add_file(self, path: Path, warn: Warn) -> None:
        for number, line in _lines(path, warn):
            user, at, domain = line.partition("@")
            regex = _REGEX.fullmatch(line)
            if regex is not None:
                pattern = _compile(regex.group(1), path, number, warn)
            elif not _WORD.fullmatch(line):
                warn(f"{path} line {number}: doesn't look like an address")
                continue
            elif at and domain:  # user@domain, also user+extension@domain
                text = rf"^{re.escape(user)}(?:\+[^@]+)?@{re.escape(domain)}$"
                pattern = re.compile(text, re.IGNORECASE)
            elif at:  # user@ in any domain
                pattern = re.compile(rf"^{re.escape(user)}(?:\+[^@]+)?@", re.IGNORECASE)
            else:  # a domain and its subdomains
                pattern = re.compile(rf"(?:@|\.){re.escape(user)}$", re.IGNORECASE)
            if pattern is not None:
                self.patterns.append(pattern)

    def listed(self, recipient: str) -> bool:
        return any(p.search(recipient) for p in self.patterns)


def load_whitelists(
    clients: Iterable[Path], recipients: Iterable[Path], warn: Warn
) -> tuple[ClientWhitelist, RecipientWhitelist]:
    client_list, recipient_list = ClientWhitelist(), RecipientWhitelist()
    for path in clients:
        client_list.add_file(path, warn)
    for path in recipients:
        recipient_list.add_file(path, warn)
    return client_list, recipient_list
