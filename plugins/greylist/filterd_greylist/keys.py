"""What postgrey 1.37 keys its records by: the triplet (client network, normalised sender,
recipient) and the client address for the auto-whitelist (``do_sender_substitutions``,
``do_client_substitutions``, ``smtpd_access_policy``). Pure functions."""

from __future__ import annotations

import hashlib
import re
from ipaddress import IPv4Address, IPv6Address, ip_address

_BATV_TAG = re.compile(r"[0-9a-z]{10}")
_NUMBER = re.compile(r"\b\d+\b", re.ASCII)
_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Perl's ``lc`` on a byte string: ASCII letters only."""
    if text.isascii():  # str.lower changes only A-Z there, and much faster than translate
        return text.lower()
    return text.translate(_ASCII_UPPER)


def normalise_sender(address: str) -> str:
    """BATV ``prvs=tag=local`` → ``local``; ``+extension`` stripped; every number in the local
    part (a whole word) → ``#``. An address without ``@`` is kept as it is."""
    user, at, domain = address.partition("@")
    if not at:
        return address
    if user.startswith("prvs="):
        parts = user.split("=")
        while parts and not parts[-1]:  # Perl's split drops trailing empty fields
            parts.pop()
        if len(parts) == 3:
            first_tag = _BATV_TAG.match(parts[1]) is not None
            second_tag = _BATV_TAG.match(parts[2]) is not None
            # prvs=tag=local is the standard; prvs=local=tag shows up too
            user = parts[1] if second_tag and not first_tag else parts[2]
    user = user.split("+", 1)[0]
    user = _NUMBER.sub("#", user)
    return f"{user}@{domain}"


def parse_client(text: str) -> IPv4Address | IPv6Address | None:
    """``ipaddress.ip_address(text)``, None where it raises. A dotted quad is read here: four
    octets of one to three ASCII digits, no leading zero, at most 255, as the module reads them
    (its parser, a Python call per octet, was most of a new client's cost)."""
    parts = text.split(".")
    if len(parts) == 4:
        number = 0
        for part in parts:
            if not (part.isascii() and part.isdigit()) or len(part) > 3:
                break
            if part[0] == "0" and len(part) > 1:
                break
            octet = int(part)
            if octet > 255:
                break
            number = number << 8 | octet
        else:
            return IPv4Address(number)
    try:
        return ip_address(text)
    except ValueError:
        return None


def client_network(
    address: IPv4Address | IPv6Address, *, ipv4cidr: int, ipv6cidr: int, by_host: bool
) -> str:
    """The client part of the triplet: its network's address (``192.0.2.0``), or the address
    itself with ``lookup_by_host``."""
    if by_host:
        return str(address)
    if address.version == 4:  # the network's address written out, as str(IPv4Address) does
        number = int(address) & ((1 << ipv4cidr) - 1) << (32 - ipv4cidr)
        return f"{number >> 24}.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"
    mask = ((1 << ipv6cidr) - 1) << (128 - ipv6cidr)  # the address's network, without parsing
    return str(IPv6Address(int(address) & mask))


def recipient_domain(recipient: str) -> str:
    """postgrey's ``%r``: what follows the last ``@`` (the whole address without one)."""
    return recipient.rpartition("@")[2]


def triplet_key(network: str, sender: str, recipient: str, *, privacy: bool) -> str:
    key = ascii_lower(f"{network}/{normalise_sender(sender)}/{recipient}")
    return _private(key) if privacy else key


def client_key(address: IPv4Address | IPv6Address, *, privacy: bool) -> str:
    key = str(address)
    return _private(key) if privacy else key


def _private(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
