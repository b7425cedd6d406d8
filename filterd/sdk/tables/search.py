"""Postfix's search orders over lookup tables: the keys one address, host name or client
address is looked up as, in order, and which of them matched. One helper per kind, for every
plugin:

- :func:`access_address` -- access(5) ``check_sender_access`` / ``check_recipient_access``:
  ``user+ext@domain``, ``user@domain``, ``domain`` and its parents, ``user+ext@``, ``user@``;
  the null sender as one key (``<>``).
- :func:`access_host` -- access(5) ``check_helo_access`` (and other host names): the name and
  its parent domains.
- :func:`access_client` -- access(5) ``check_client_access``: the client's name and its
  parents, then its address and its parent networks (``1.2.3.4``, ``1.2.3``, ``1.2``, ``1``).
- :func:`virtual_alias` / :func:`canonical` -- virtual(5) and canonical(5): ``user+ext@domain``,
  ``user@domain``, ``user+ext``, ``user`` (only for a local domain), ``@domain``; each key tried
  in every table of the list before the next key; the result rewritten as Postfix does.
- :func:`virtual_mailbox` -- virtual(8)'s mailbox, uid and gid maps: ``user+ext@domain``,
  ``user@domain``, ``@domain``.

Each key is tried in every table of the list before the next key (Postfix's maps). A pattern
table (regexp:, pcre:, cidr:; ``Table.fixed_string`` False) is asked only the first, whole key.
Tables fold keys to lower case themselves. A :class:`~filterd.sdk.tables.base.TableFailure`
propagates: the caller answers ``451 4.3.0 <addr>: Temporary lookup failure``, never "not found".
An empty value is a table error in Postfix (``returns an empty string result``): a TableFailure.

Addresses are looked up in the form given. Postfix also tries the other of the quoted and
unquoted forms of a local part that needs RFC 5322 quoting (``"joe smith"@example.com``);
these helpers do not: give such an address in the form its table keys are written in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from filterd.sdk.tables.base import Table, TableFailure

__all__ = [
    "AddressRules",
    "Match",
    "access_address",
    "access_client",
    "access_client_address",
    "access_host",
    "canonical",
    "split_extension",
    "virtual_alias",
    "virtual_mailbox",
]

Tables = Table | Sequence[Table]
IsLocal = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class AddressRules:
    """The Postfix parameters that shape a search; the defaults are Postfix's.

    ``recipient_delimiter``: a set of characters (``"+-"``); the local part is split at the
    first of them. Empty: no address extensions.
    ``parent_domain_matches_subdomains``: True when Postfix's parameter of that name lists
    ``smtpd_access_maps`` (its default): the key ``example.com`` matches ``a.example.com``;
    False: only ``.example.com`` does.
    ``owner_request_special``: ``owner-*`` and ``*-request`` keep their ``-`` (when ``-`` is a
    delimiter).
    ``double_bounce_sender``: never split, like ``postmaster`` and ``mailer-daemon``.
    ``null_access_key``: how access(5) looks the null sender up
    (``smtpd_null_access_lookup_key``).
    ``propagate_unmatched_extensions``: the tables whose result gets the extension that was
    stripped to find it (Postfix's default: canonical and virtual).
    """

    recipient_delimiter: str = ""
    parent_domain_matches_subdomains: bool = True
    owner_request_special: bool = True
    double_bounce_sender: str = "double-bounce"
    null_access_key: str = "<>"
    propagate_unmatched_extensions: frozenset[str] = frozenset({"canonical", "virtual"})


@dataclass(frozen=True, slots=True)
class Match:
    """What a search found: the table's ``value`` (for virtual/canonical the rewritten
    address(es), ``raw`` the table's own text), the ``key`` that matched, the ``table`` it was
    found in, and the ``extension`` (with its delimiter) stripped to find it, if any."""

    value: str
    key: str
    table: Table
    extension: str | None = None
    raw: str = ""

    @property
    def addresses(self) -> list[str]:
        """A virtual/canonical value as a list of addresses (comma or space separated)."""
        return _split_addresses(self.value)


# --- address parts --------------------------------------------------------------------------


def split_extension(localpart: str, rules: AddressRules) -> tuple[str, str | None]:
    """``("user", "+ext")`` for ``user+ext``; ``(localpart, None)`` when Postfix would not
    split it: no delimiter in it, a delimiter first, postmaster, mailer-daemon, the
    double-bounce sender, ``owner-*`` / ``*-request`` (``-`` a delimiter, owner_request_special)."""
    delimiters = rules.recipient_delimiter
    if not delimiters:
        return localpart, None
    folded = localpart.lower()
    if folded in ("postmaster", "mailer-daemon", rules.double_bounce_sender.lower()):
        return localpart, None
    if "-" in delimiters and rules.owner_request_special:
        if folded.startswith("owner-"):
            return localpart, None
        if len(folded) > len("-request") and folded.endswith("-request"):
            return localpart, None
    cut = next((i for i, c in enumerate(localpart) if c in delimiters), -1)
    if cut <= 0:
        return localpart, None
    return localpart[:cut], localpart[cut:]


def _strip_address(address: str, rules: AddressRules) -> tuple[str, str] | None:
    """``("user@domain", "+ext")`` for ``user+ext@domain``; None without an extension."""
    local, at, domain = address.rpartition("@")
    if not at:
        local = address
    bare, extension = split_extension(local, rules)
    if extension is None:
        return None
    return bare + at + domain, extension


# --- the one exact query over a list of tables ----------------------------------------------


def _as_list(tables: Tables) -> Sequence[Table]:
    return [tables] if isinstance(tables, Table) else tables


async def _find(tables: Sequence[Table], key: str, *, partial: bool) -> Match | None:
    """Postfix's maps_find: the first table that has ``key``; pattern tables skipped for a
    partial key; an empty key is never looked up."""
    if not key:
        return None
    for table in tables:
        if partial and not table.fixed_string:
            continue
        value = await table.lookup(key)
        if value is None:
            continue
        if value == "":
            raise TableFailure(table.name, f'lookup of "{key}" returns an empty string result')
        return Match(value, key, table, raw=value)
    return None


# --- Postfix's address search strategy (mail_addr_find) ---------------------------------------


@dataclass(frozen=True, slots=True)
class _Strategy:
    full: bool = True
    noext: bool = True
    localpart_if_local: bool = False
    at_domain: bool = False
    domain: bool = False
    parent_style: bool = True  # domain walk: a.b.c, b.c, c (False: a.b.c, .b.c, .c)
    localpart_at: bool = False


def _domain_walk(domain: str, parents: bool) -> list[str]:
    """``a.b.c`` then ``b.c``, ``c`` (parents) or ``.b.c``, ``.c``; each dot after the first
    character starts the next key."""
    keys: list[str] = []
    name = domain
    while name:
        keys.append(name)
        dot = name.find(".", 1)
        if dot < 0:
            break
        name = name[dot + 1 :] if parents else name[dot:]
    return keys


async def _find_address(
    tables: Sequence[Table],
    address: str,
    strategy: _Strategy,
    rules: AddressRules,
    is_local: IsLocal | None = None,
) -> Match | None:
    stripped = _strip_address(address, rules) if strategy.noext else None
    if strategy.full and (found := await _find(tables, address, partial=False)):
        return found
    if stripped and (found := await _find(tables, stripped[0], partial=True)):
        return _with_extension(found, stripped[1])
    local, at, domain = address.rpartition("@")
    if not at:
        return None
    if (
        strategy.localpart_if_local
        and is_local is not None
        and is_local(domain)
        and (found := await _find_local(tables, local, stripped, "", rules))
    ):
        return found
    if strategy.at_domain and (found := await _find(tables, "@" + domain, partial=True)):
        return found
    if strategy.domain:
        for key in _domain_walk(domain, strategy.parent_style):
            if found := await _find(tables, key, partial=True):
                return found
    if strategy.localpart_at:
        return await _find_local(tables, local, stripped, "@", rules)
    return None


async def _find_local(
    tables: Sequence[Table],
    local: str,
    stripped: tuple[str, str] | None,
    suffix: str,
    rules: AddressRules,
) -> Match | None:
    """``user+ext`` then ``user`` (``suffix`` "@": ``user+ext@`` then ``user@``)."""
    if found := await _find(tables, local + suffix, partial=True):
        return found
    if stripped is not None:
        bare, extension = split_extension(local, rules)
        if extension is not None and (found := await _find(tables, bare + suffix, partial=True)):
            return _with_extension(found, extension)
    return None


def _with_extension(found: Match, extension: str) -> Match:
    return Match(found.value, found.key, found.table, extension, found.raw)


# --- access(5) --------------------------------------------------------------------------------


def _is_dunno(value: str) -> bool:
    return value.split(None, 1)[0].lower() == "dunno" if value.strip() else False


def _access(found: Match | None) -> Match | None:
    """DUNNO: found, the walk stops, and it is as if nothing was found."""
    return None if found is None or _is_dunno(found.value) else found


async def access_address(
    tables: Tables, address: str, rules: AddressRules = AddressRules()
) -> Match | None:
    """check_sender_access / check_recipient_access: the access(5) entry for ``address``
    (fully qualified, as Postfix resolved it), or None (not found, or DUNNO). The null
    sender (``""``) is the one key ``rules.null_access_key``."""
    listed = _as_list(tables)
    if not address:
        return _access(await _find(listed, rules.null_access_key, partial=False))
    strategy = _Strategy(
        domain=True, localpart_at=True, parent_style=rules.parent_domain_matches_subdomains
    )
    return _access(await _find_address(listed, address, strategy, rules))


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


async def _host(tables: Sequence[Table], name: str, rules: AddressRules) -> Match | None:
    # A numerical host name (an IP address) is looked up only whole.
    parents = rules.parent_domain_matches_subdomains
    keys = [name] if _is_address(name) else _domain_walk(name, parents)
    for index, key in enumerate(keys):
        if found := await _find(tables, key, partial=index > 0):
            return found
    return None


async def _client_address(tables: Sequence[Table], address: str) -> Match | None:
    delimiter = ":" if ":" in address else "."
    key = address
    partial = False
    while True:
        if found := await _find(tables, key, partial=partial):
            return found
        cut = key.rfind(delimiter)
        if cut <= 0:
            return None
        key = key[:cut]
        partial = True


async def access_host(
    tables: Tables, name: str, rules: AddressRules = AddressRules()
) -> Match | None:
    """check_helo_access (and any host name): ``name`` then its parent domains as
    parent_domain_matches_subdomains says; a numerical name only whole; None for not
    found or DUNNO."""
    return _access(await _host(_as_list(tables), name, rules))


async def access_client_address(tables: Tables, address: str) -> Match | None:
    """The address part of check_client_access: ``1.2.3.4``, ``1.2.3``, ``1.2``, ``1``; IPv6
    in its compressed form, cut at the last ``:`` repeatedly (``2001:db8::1``, ``2001:db8:``,
    ``2001:db8``, ``2001``); None for not found or DUNNO."""
    return _access(await _client_address(_as_list(tables), address))


async def access_client(
    tables: Tables, name: str, address: str, rules: AddressRules = AddressRules()
) -> Match | None:
    """check_client_access: the client's host ``name`` (``unknown`` without one) and its
    parent domains, then its ``address`` and its parent networks. A DUNNO on the name ends
    the search too. None for not found or DUNNO."""
    listed = _as_list(tables)
    found = await _host(listed, name, rules)
    if found is None:
        found = await _client_address(listed, address)
    return _access(found)


# --- virtual(5), canonical(5), virtual(8) -------------------------------------------------------


def _split_addresses(value: str) -> list[str]:
    return [part for part in value.replace(",", " ").split() if part]


def _add_extension(address: str, extension: str) -> str:
    local, at, domain = address.rpartition("@")
    return f"{local}{extension}@{domain}" if at else address + extension


def _rewrite(found: Match, address: str, propagate: bool) -> Match:
    """Postfix's result rewriting: an ``@otherdomain`` result keeps the user (the extension
    too unless the key matched without it); the extension stripped to match is added to every
    result address when ``propagate``."""
    value = found.value.strip()
    if value.startswith("@"):
        local = address.rpartition("@")[0] or address
        if found.extension:
            local = local[: len(local) - len(found.extension)]
        value = local + value
    addresses = _split_addresses(value)
    if propagate and found.extension:
        addresses = [_add_extension(a, found.extension) for a in addresses]
    return Match(", ".join(addresses), found.key, found.table, found.extension, found.raw)


async def _map_address(
    tables: Tables, address: str, rules: AddressRules, is_local: IsLocal, kind: str
) -> Match | None:
    strategy = _Strategy(localpart_if_local=True, at_domain=True)
    found = await _find_address(_as_list(tables), address, strategy, rules, is_local)
    if found is None:
        return None
    return _rewrite(found, address, kind in rules.propagate_unmatched_extensions)


async def virtual_alias(
    tables: Tables,
    address: str,
    rules: AddressRules = AddressRules(),
    is_local: IsLocal = lambda domain: False,
) -> Match | None:
    """virtual(5): ``user+ext@domain``, ``user@domain``, ``user+ext`` and ``user`` (only when
    ``is_local(domain)``: $myorigin, $mydestination, $inet_interfaces, $proxy_interfaces),
    ``@domain``. The value is the rewritten result (``Match.addresses``): an ``@otherdomain``
    result becomes the same user there; an extension stripped to match is added to each
    address (propagate_unmatched_extensions). One lookup, no recursion."""
    return await _map_address(tables, address, rules, is_local, "virtual")


async def canonical(
    tables: Tables,
    address: str,
    rules: AddressRules = AddressRules(),
    is_local: IsLocal = lambda domain: False,
) -> Match | None:
    """canonical(5): the search order and result rewriting of :func:`virtual_alias`."""
    return await _map_address(tables, address, rules, is_local, "canonical")


async def virtual_mailbox(
    tables: Tables, address: str, rules: AddressRules = AddressRules()
) -> Match | None:
    """virtual(8)'s virtual_mailbox_maps, virtual_uid_maps, virtual_gid_maps:
    ``user+ext@domain``, ``user@domain``, ``@domain``. The value as the table has it (the
    extension is never added)."""
    strategy = _Strategy(at_domain=True)
    return await _find_address(_as_list(tables), address, strategy, rules)
