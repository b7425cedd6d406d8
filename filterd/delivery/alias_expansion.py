"""virtual(5) alias expansion as Postfix's cleanup(8) does it before a message is queued: one
address to many, recursively, with its limits and its loop rule.

Each address of the list is looked up (``filterd.sdk.tables.search.virtual_alias``: the full
address, without its extension, ``@domain``; the result rewritten and the extension propagated)
and replaced by the first address of the result, the others appended to the list; the new
address is looked up again, until a lookup finds nothing. An address whose result names
itself (case-insensitively) is not looked up again: it is delivered to itself, as Postfix does
(``john@example.org -> john@example.org`` is how a mailbox is listed next to its aliases).

Limits (each a deferral, ``4.6.0 Alias expansion error``, as cleanup logs and defers it): more
addresses than ``expansion_limit``; more than ``recursion_limit`` lookups on one place of the
list (a loop ``a -> b -> a`` ends there); a result address longer than ``length_limit``. A
table that cannot answer raises ``TableFailure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from filterd.sdk.tables import Table
from filterd.sdk.tables.search import AddressRules, Match, virtual_alias

__all__ = ["AliasLimits", "ExpansionError", "expand_aliases"]


@dataclass(frozen=True, slots=True)
class AliasLimits:
    """virtual_alias_expansion_limit, _recursion_limit, _address_length_limit."""

    expansion_limit: int = 1000
    recursion_limit: int = 1000
    length_limit: int = 1000


class ExpansionError(Exception):
    """The expansion went over a limit; ``str()`` is what cleanup logs."""


_DEFAULT_RULES = AddressRules()
_DEFAULT_LIMITS = AliasLimits()


async def expand_aliases(
    tables: Sequence[Table],
    address: str,
    rules: AddressRules = _DEFAULT_RULES,
    limits: AliasLimits = _DEFAULT_LIMITS,
) -> list[str]:
    """The addresses ``address`` is delivered to (see the module), each once
    (case-insensitively), in order. Raises ``ExpansionError`` or ``TableFailure``."""
    found: dict[str, Match | None] = {}  # one lookup per address in one expansion

    async def lookup(key: str) -> Match | None:
        folded = key.lower()
        if folded not in found:
            found[folded] = await virtual_alias(tables, key, rules)
        return found[folded]

    result = [address]
    to_itself: set[str] = set()
    index = 0
    while index < len(result):
        if len(result) > limits.expansion_limit:
            raise ExpansionError(f"unreasonable virtual_alias map expansion size for {address}")
        count = 0
        while result[index].lower() not in to_itself:
            if count >= limits.recursion_limit:
                raise ExpansionError(f"unreasonable virtual_alias map nesting for {address}")
            match = await lookup(result[index])
            if match is None:
                break
            before = result[index]
            for position, target in enumerate(match.addresses):
                if len(target) > limits.length_limit:
                    raise ExpansionError(f"unreasonable virtual_alias result {target[:300]}...")
                if position == 0:
                    result[index] = target
                else:
                    result.append(target)
                if target.lower() == before.lower():
                    to_itself.add(before.lower())
            count += 1
        index += 1
    once: dict[str, str] = {}
    for target in result:
        once.setdefault(target.lower(), target)
    return list(once.values())
