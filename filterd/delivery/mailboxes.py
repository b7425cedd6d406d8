"""Who a recipient is to the Maildir stage: the Maildir(s) its mail goes to, their owner, the
address extension (virtual(8)'s mailbox, alias, uid and gid lookups).

``MailboxResolver`` is the seam. ``NoMaps`` is the resolver without lookup tables: every user
of ``mailbox_domains`` (every domain when that is empty) has the Maildir
``mailbox_base/domain/user/``. With lookup tables (``mailbox_maps``, ``alias_maps``,
``uid_maps``, ``gid_maps``, tables in ``mailbox_domains`` or ``alias_domains``)
``open_resolver`` gives ``filterd.delivery.virtual_maps.MapsResolver``.

Directory names without maps: the local part folded to lower case (``str.casefold``), with
every byte of its UTF-8 form that is not ASCII, and every ``%``, written ``%XX`` (upper-case
hex): ``ünï`` is ``%C3%BCn%C3%AF``, reversed by percent-decoding. A domain in UTF-8 is stored
under its IDNA form (``xn--``). Only dot-atoms (RFC 5321; RFC 6531 with SMTPUTF8) name a
Maildir, so a name never starts with a dot nor holds a ``/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote

from filterd.config.schema import MaildirDelivery
from filterd.delivery.delivery_tables import TableOpenError, table_problem, table_specs
from filterd.model.reply import Reply

__all__ = [
    "BAD_MAILBOX",
    "CONFIGURATION_ERROR",
    "Mailbox",
    "MailboxResolver",
    "NoMaps",
    "TableOpenError",
    "directory_name",
    "lookup_failure",
    "maps_problem",
    "open_resolver",
    "relay_denied",
    "split_extension",
    "unknown_user",
    "user_of_directory",
    "without_tables",
]

BAD_MAILBOX = Reply(550, "5.1.3", "Bad destination mailbox address")
CONFIGURATION_ERROR = Reply(451, "4.3.5", "mail system configuration error")
"""virtual(8)'s deferral for a bad uid/gid or mailbox lookup result."""


def unknown_user(address: str) -> Reply:
    """smtpd's answer for a user the mailbox table does not know."""
    return Reply(
        550,
        "5.1.1",
        f"<{address}>: Recipient address rejected: User unknown in virtual mailbox table",
    )


def lookup_failure(address: str) -> Reply:
    """smtpd's answer when a table cannot answer (Postfix's DICT_ERR_RETRY)."""
    return Reply(451, "4.3.0", f"<{address}>: Temporary lookup failure")


def relay_denied(address: str) -> Reply:
    """smtpd's answer for a domain this server does not receive mail for."""
    return Reply(554, "5.7.1", f"<{address}>: Relay access denied")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """Where one recipient's copy goes."""

    address: str  # the final recipient: Delivered-To
    maildir: Path  # the Maildir (tmp, new, cur inside)
    extension: str | None = None  # what recipient_delimiter split off the local part
    uid: int | None = None  # owner of the files (filterd running as root); None: filterd's
    gid: int | None = None


class MailboxResolver(Protocol):
    async def resolve(self, address: str, *, smtputf8: bool) -> list[Mailbox] | Reply:
        """The mailboxes of ``address`` (several through an alias), or the refusal: 550 5.1.1
        unknown, 554 5.7.1 not our domain, 451 4.3.0 a table that cannot answer."""
        ...

    async def aclose(self) -> None: ...


_SPECIAL = frozenset(("postmaster", "mailer-daemon", "double-bounce"))


def split_extension(local: str, delimiters: str) -> tuple[str, str | None]:
    """``user+tag`` → ``("user", "tag")`` as Postfix splits it: at the first character of the
    set ``delimiters``, never at the first position, never for postmaster, mailer-daemon,
    double-bounce, owner-* and *-request (owner_request_special)."""
    lowered = local.lower()
    if (
        not delimiters
        or lowered in _SPECIAL
        or lowered.startswith("owner-")
        or (len(lowered) > 8 and lowered.endswith("-request"))
    ):
        return local, None
    for index, char in enumerate(local):
        if char in delimiters:
            if index == 0:
                return local, None
            return local[:index], local[index + 1 :]
    return local, None


_ATEXT = r"a-z0-9!#$%&'*+=?^_`{|}~\-"
_ASCII_LOCAL = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_UTF8_LOCAL = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*")
_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
_SAFE = "!#$&'*+=?^_`{|}~-."  # atext but "%", and the dot: kept as they are


def directory_name(local: str, *, smtputf8: bool) -> str | None:
    """The directory of a local part (see the module), or None if it names none."""
    folded = local.casefold()
    pattern = _UTF8_LOCAL if smtputf8 else _ASCII_LOCAL
    if not pattern.fullmatch(folded):
        return None
    return quote(folded, safe=_SAFE, encoding="utf-8")


def user_of_directory(name: str) -> str:
    """The local part a directory was named for (``directory_name`` reversed)."""
    return unquote(name, encoding="utf-8", errors="strict")


def domain_directory(domain: str) -> str | None:
    """The domain as a directory name: lower case, IDNA (``xn--``) when it is in UTF-8."""
    folded = domain.lower()
    if not folded.isascii():
        try:
            folded = folded.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return folded if _DOMAIN.fullmatch(folded) else None


def without_tables(config: MaildirDelivery, address: str, *, smtputf8: bool) -> Mailbox | Reply:
    """``mailbox_base/domain/user/`` for ``address``, whatever its domain; owned by filterd."""
    local, at, domain = address.rpartition("@")
    if not at:
        return BAD_MAILBOX
    domain_dir = domain_directory(domain)
    if domain_dir is None:
        return BAD_MAILBOX
    user, extension = split_extension(local, config.recipient_delimiter)
    user_dir = directory_name(user, smtputf8=smtputf8)
    if user_dir is None:
        return BAD_MAILBOX
    return Mailbox(address, config.base / domain_dir / user_dir, extension)


class NoMaps:
    """Every user of ``mailbox_domains`` has ``mailbox_base/domain/user/``; owned by filterd."""

    def __init__(self, config: MaildirDelivery) -> None:
        self.config = config
        self.domains = frozenset(d for d in config.mailbox_domains if isinstance(d, str))

    async def resolve(self, address: str, *, smtputf8: bool) -> list[Mailbox] | Reply:
        _, at, domain_part = address.rpartition("@")
        domain = domain_directory(domain_part) if at else None
        if domain is not None and self.domains and domain not in self.domains:
            return relay_denied(address)
        found = without_tables(self.config, address, smtputf8=smtputf8)
        return found if isinstance(found, Reply) else [found]

    async def aclose(self) -> None:
        return None


def maps_problem(config: MaildirDelivery) -> str | None:
    """``table_problem`` as the line to show: ``delivery.mailbox_maps[0]: table ...``."""
    problem = table_problem(config)
    return None if problem is None else str(problem)


def open_resolver(config: MaildirDelivery) -> MailboxResolver:
    """The resolver the configuration asks for: ``NoMaps`` without tables, else
    ``virtual_maps.MapsResolver`` with its tables opened (``TableOpenError``)."""
    if not table_specs(config):
        return NoMaps(config)
    from filterd.delivery.virtual_maps import MapsResolver  # it builds on this module

    return MapsResolver(config)
