"""``mailbox_domains`` and ``alias_domains`` as Postfix matches virtual_mailbox_domains and
virtual_alias_domains (its domain_list, without parent-domain matching): a name matches itself
only; a lookup table matches a domain it finds as a key (whatever the value), or, for a
fixed-string table, a key ``.parent`` of it (``.example.org`` for ``mail.example.org``); a
pattern table (regexp:, pcre:) is asked the domain alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from filterd.config.types import TableRef
from filterd.sdk.tables import Table

__all__ = ["DomainList", "names_of", "parent_keys"]


def names_of(entries: Sequence[str | TableRef]) -> frozenset[str]:
    """The domain names of a configured list (its tables left out)."""
    return frozenset(entry for entry in entries if isinstance(entry, str))


def parent_keys(domain: str) -> list[str]:
    """``a.b.c`` -> ``.b.c``, ``.c``."""
    keys = []
    dot = domain.find(".", 1)
    while dot >= 0:
        keys.append(domain[dot:])
        dot = domain.find(".", dot + 1)
    return keys


class DomainList:
    """Names and tables; empty when it has neither."""

    def __init__(self, names: frozenset[str], tables: Sequence[Table]) -> None:
        self.names = names
        self.tables = tuple(tables)

    def __bool__(self) -> bool:
        return bool(self.names or self.tables)

    async def contains(self, domain: str) -> bool:
        """Whether ``domain`` (lower case) is listed. A table that cannot answer raises
        ``TableFailure``: the question stays open, never "not listed"."""
        if domain in self.names:
            return True
        for table in self.tables:
            if await table.lookup(domain) is not None:
                return True
            if table.fixed_string:
                for key in parent_keys(domain):
                    if await table.lookup(key) is not None:
                        return True
        return False
