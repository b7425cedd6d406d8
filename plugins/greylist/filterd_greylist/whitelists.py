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


_CASELESS = re.compile("", re.IGNORECASE).flags  # a pattern's flags: IGNORECASE, nothing else


class AnyOf:
    """Whether any of some patterns is found in a text: one search of their alternation where
    it reads the same as each alone (no group, so no reference to one; only ``IGNORECASE``, no
    other flag), the others one by one."""

    def __init__(self, patterns: Iterable[re.Pattern[str]] = ()) -> None:
        self.patterns = list(patterns)
        self._combined: re.Pattern[str] | None = None
        self._alone: list[re.Pattern[str]] = []
        self._built = False

    def add(self, pattern: re.Pattern[str]) -> None:
        self.patterns.append(pattern)
        self._built = False

    def search(self, text: str) -> bool:
        if not self._built:
            self._build()
        combined = self._combined
        if combined is not None and combined.search(text) is not None:
            return True
        return any(p.search(text) for p in self._alone)

    def _build(self) -> None:
        plain = [p for p in self.patterns if not p.groups and p.flags == _CASELESS]
        self._alone = [p for p in self.patterns if p.groups or p.flags != _CASELESS]
        self._combined = None
        if plain:
            try:
                self._combined = re.compile(
                    "|".join(f"(?:{p.pattern})" for p in plain), re.IGNORECASE
                )
            except re.error:  # an inline global flag, e.g. (?i) at its start: each alone
                self._alone = self.patterns
        self._built = True


@dataclass
class ClientWhitelist:
    """Host names are found by their suffixes in a set (an ASCII name against ASCII entries:
    case-insensitive equality is lower-case equality there), networks by their masked address
    per prefix length; regexes (and any name or entry not ASCII) by :class:`AnyOf`."""

    names: list[re.Pattern[str]] = field(default_factory=list)  # every name entry, in order
    networks: list[IPv4Network | IPv6Network] = field(default_factory=list)
    _hosts: set[str] = field(default_factory=set, init=False)  # ASCII host names, lower case
    _other: AnyOf = field(default_factory=AnyOf, init=False)  # regexes, other host names
    _all: AnyOf = field(default_factory=AnyOf, init=False)  # every name entry (name not ASCII)
    # IP version -> netmask -> the network addresses with that mask, as integers
    _masks: dict[int, dict[int, set[int]]] = field(
        default_factory=lambda: {4: {}, 6: {}}, init=False
    )

    def add_file(self, path: Path, warn: Warn) -> None:
        for number, line in _lines(path, warn):
            regex = _REGEX.fullmatch(line)
            network: IPv4Network | IPv6Network | None
            if regex is not None:
                pattern = _compile(regex.group(1), path, number, warn)
                if pattern is not None:
                    self._add_name(pattern)
                continue
            if _IPV4.fullmatch(line) or _IPV6.fullmatch(line):
                network = _network(line, None)
            elif _IPV4_3.fullmatch(line) or _IPV4_2.fullmatch(line):
                network = _network(line, 24)
            elif _WORD.fullmatch(line):
                pattern = re.compile(r"(?:^|\.)" + re.escape(line) + "$", re.IGNORECASE)
                self._add_name(pattern, host=line)
                continue
            else:
                warn(f"{path} line {number}: doesn't look like a hostname")
                continue
            if network is not None:
                self.networks.append(network)
                mask = int(network.netmask)
                self._masks[network.version].setdefault(mask, set()).add(
                    int(network.network_address)
                )

    def _add_name(self, pattern: re.Pattern[str], host: str | None = None) -> None:
        self.names.append(pattern)
        self._all.add(pattern)
        if host is not None and host.isascii():
            self._hosts.add(host.lower())
        else:
            self._other.add(pattern)

    def listed(self, name: str, address: IPv4Address | IPv6Address) -> bool:
        return self._name_listed(name) or self._address_listed(address)

    def _name_listed(self, name: str) -> bool:
        if not name.isascii():
            return self._all.search(name)
        hosts = self._hosts
        if hosts:
            # "(?:^|\.)host$": the name or a name below it; "$" also before a final newline
            text = name.lower()
            if text.endswith("\n"):
                text = text[:-1]
            if text in hosts:
                return True
            dot = text.find(".")
            while dot >= 0:
                if text[dot + 1 :] in hosts:
                    return True
                dot = text.find(".", dot + 1)
        return self._other.search(name)

    def _address_listed(self, address: IPv4Address | IPv6Address) -> bool:
        masks = self._masks[address.version]
        if not masks:
            return False
        number = int(address)
        return any(number & mask in networks for mask, networks in masks.items())


@dataclass
class RecipientWhitelist:
    patterns: AnyOf = field(default_factory=AnyOf)

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
                self.patterns.add(pattern)

    def listed(self, recipient: str) -> bool:
        return self.patterns.search(recipient)


def load_whitelists(
    clients: Iterable[Path], recipients: Iterable[Path], warn: Warn
) -> tuple[ClientWhitelist, RecipientWhitelist]:
    client_list, recipient_list = ClientWhitelist(), RecipientWhitelist()
    for path in clients:
        client_list.add_file(path, warn)
    for path in recipients:
        recipient_list.add_file(path, warn)
    return client_list, recipient_list
