"""``cidr:`` tables (cidr_table(5)): ``pattern result`` lines tried in file order, the first
match wins. A pattern is an address (exact) or ``address/prefix``, optionally in ``[]``,
negated with ``!``; ``if pattern`` ... ``endif`` (nestable, ``if !pattern`` too) guards the
rules between them. ``cidr:{ {rule}, {rule} }`` holds the rules in the name.

Addresses are read as Postfix reads them (glibc's inet_pton()): an IPv4 address is four
decimal octets without leading zeros -- cidr_table(5) calls a leading zero octal, but Postfix
3.7 on glibc rejects it, in a pattern ("bad address pattern") and in a key (no match); filterd
answers as postmap does. IPv6 is any inet_pton() form: compressed, expanded, leading zeros,
an embedded IPv4 tail. Keys are not folded and not stripped of ``[]``.

A rule Postfix would skip with a warning (a bad address, host bits set, no result, ``endif``
without ``if``, an ``if`` without ``endif``) is an error here: the table does not open, and
the message names the file, the line and the fix.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from filterd.sdk.tables.base import Table, TableError, TableSettings
from filterd.sdk.tables.memory import read_source_file
from filterd.sdk.tables.names import TableName
from filterd.sdk.tables.source import (
    SPACE,
    SourceError,
    extract_braced,
    leading_space_dropped,
    list_body,
    logical_lines,
    tokenize_braced,
)

__all__ = ["CidrTable", "Rule", "open_table", "parse_address", "parse_rules"]


def parse_address(text: str) -> tuple[int, int] | None:
    """``(family bits, value)`` of an address as inet_pton() reads it (family by the
    presence of ``:``), or None when inet_pton() would reject it."""
    if not text.isascii() or "%" in text:
        return None
    try:
        if ":" in text:
            return 128, int(ipaddress.IPv6Address(text))
        octets = text.split(".")
        if len(octets) != 4:
            return None
        value = 0
        for octet in octets:
            if not octet.isdigit() or len(octet) > 3 or (len(octet) > 1 and octet[0] == "0"):
                return None
            number = int(octet)
            if number > 255:
                return None
            value = value << 8 | number
        return 32, value
    except ValueError:
        return None


@dataclass(slots=True)
class Rule:
    op: str  # "match", "if", "endif"
    bits: int = 0  # 32 or 128; 0 for endif
    network: int = 0
    mask: int = 0
    match: bool = True  # False when negated
    value: str = ""
    line: int = 0
    block_end: int = -1  # for "if": the index of its endif

    def matches(self, bits: int, address: int) -> bool:
        """True when this rule applies to the address (negation included); never across
        address families."""
        if bits != self.bits:
            return False
        return ((address & self.mask) == self.network) == self.match


def _negations(text: str) -> tuple[str, bool]:
    """Leading ``!`` (each one flips) and white space removed: (rest, match)."""
    match = True
    i = 0
    while i < len(text) and (text[i] == "!" or text[i] in SPACE):
        if text[i] == "!":
            match = not match
        i += 1
    return text[i:], match


def _parse_pattern(pattern: str, match: bool) -> Rule:
    """One address pattern (cidr_match_parse()); SourceError with Postfix's wording."""
    mask_search = pattern
    if pattern.startswith("["):
        inside, bracket, after = pattern[1:].partition("]")
        if not bracket:
            raise SourceError(f"missing ']' character after \"{pattern}\"")
        if after and not after.startswith("/"):
            raise SourceError(f'garbage after "[{inside}]"')
        pattern = inside + after
        mask_search = pattern
    address, slash, mask_text = mask_search.partition("/")
    bits_of_family = 128 if ":" in address else 32
    if slash:
        if not mask_text.isdigit() or not mask_text.isascii():
            raise SourceError(f'bad mask value in "{address}/{mask_text}"')
        prefix = int(mask_text)
        if prefix > bits_of_family:
            raise SourceError(f'bad mask length in "{address}/{mask_text}"')
        parsed = parse_address(address)
        if parsed is None or parsed[0] != bits_of_family:
            raise SourceError(f'bad network value in "{address}/{mask_text}"')
    else:
        parsed = parse_address(address)
        if parsed is None:
            raise SourceError(f'bad address pattern: "{address}"')
        prefix = bits_of_family
    bits, network = parsed
    mask = ((1 << prefix) - 1) << (bits - prefix) if prefix else 0
    if network & ~mask:
        net = network & mask
        shown = ipaddress.ip_address(net) if bits == 32 else ipaddress.IPv6Address(net)
        raise SourceError(
            f'non-null host address bits in "{address}/{mask_text}", '
            f'perhaps you should use "{shown}/{prefix}" instead'
        )
    return Rule("match", bits, network, mask, match)


def _parse_rule(text: str, line: int, nesting: int) -> Rule:
    lowered = text[:5].lower()
    if lowered.startswith("if") and not (len(text) > 2 and text[2].isalnum()):
        rest, match = _negations(text[2:])
        if not rest:
            raise SourceError("no address pattern")
        rule = _parse_pattern(rest.rstrip(SPACE), match)
        rule.op = "if"
    elif lowered == "endif" and not (len(text) > 5 and text[5].isalnum()):
        if text[5:].strip(SPACE):
            raise SourceError("garbage after ENDIF")
        if nesting == 0:
            raise SourceError("ENDIF without IF")
        rule = Rule("endif")
    else:
        rest, match = _negations(text)
        end = 0
        while end < len(rest) and rest[end] not in SPACE:
            end += 1
        pattern, value = rest[:end], rest[end:].strip(SPACE)
        if not pattern:
            raise SourceError("no address pattern")
        rule = _parse_pattern(pattern, match)
        if not value:
            raise SourceError("no lookup result")
        rule.value = value
    rule.line = line
    return rule


def parse_rules(table: str, file: str, text: str) -> list[Rule]:
    """The rules of a cidr_table(5) text; TableError naming the file and line and the fix."""
    rules: list[Rule] = []
    open_ifs: list[int] = []
    for line in logical_lines(text):
        if leading_space_dropped(line):
            raise TableError(
                table,
                "a rule must not start with white space",
                file=file,
                line=line.first,
                hint="start the rule in the first column (an indented line continues the line "
                "before it)",
            )
        try:
            rule = _parse_rule(line.text, line.first, len(open_ifs))
        except SourceError as exc:
            raise TableError(
                table, str(exc), file=file, line=line.first, hint=_hint(str(exc))
            ) from None
        if rule.op == "if":
            open_ifs.append(len(rules))
        elif rule.op == "endif":
            rules[open_ifs.pop()].block_end = len(rules)
        rules.append(rule)
    if open_ifs:
        raise TableError(
            table,
            "IF has no matching ENDIF",
            file=file,
            line=rules[open_ifs[-1]].line,
            hint='close the block with a line "endif"',
        )
    return rules


def _hint(message: str) -> str:
    if "perhaps you should use" in message:
        return "write the network address with its host bits zero, " + message.split(", ")[-1]
    if "ENDIF" in message:
        return 'remove the "endif" or add the "if pattern" it closes'
    if "no lookup result" in message:
        return "write the result after the pattern: address/prefix result"
    return (
        "write an IPv4 address (four decimal octets, no leading zeros) or an IPv6 address, "
        "optionally /prefix, e.g. 192.0.2.0/24 REJECT"
    )


class CidrTable(Table):
    fixed_string = False

    def __init__(self, name: str, settings: TableSettings, rules: list[Rule]) -> None:
        super().__init__(name, settings)
        self.rules = rules

    async def lookup(self, key: str) -> str | None:
        return self.find(key)

    def find(self, key: str) -> str | None:
        """The result of the first rule that matches ``key`` (cidr_match_execute())."""
        parsed = parse_address(key)
        if parsed is None:
            return None
        bits, address = parsed
        rules = self.rules
        i = 0
        while i < len(rules):
            rule = rules[i]
            if rule.op == "match":
                if rule.matches(bits, address):
                    return rule.value
            elif rule.op == "if" and not rule.matches(bits, address):
                i = rule.block_end  # past the block (its endif)
            i += 1
        return None


def open_table(name: TableName, settings: TableSettings) -> Table:
    """Open a ``cidr:`` file or an inline ``cidr:{ {rule}, ... }``."""
    table = str(name)
    if name.name.startswith("{"):
        try:
            elements = [extract_braced(t) for t in tokenize_braced(list_body(name.name))]
        except SourceError as exc:
            need = 'write "cidr:{ {pattern result}, {pattern result} }"'
            raise TableError(table, f"cidr map: {exc}", hint=need) from None
        return CidrTable(table, settings, parse_rules(table, "", "\n".join(elements)))
    if not name.name:
        raise TableError(table, "no file name", hint='write "cidr:/etc/postfix/file.cidr"')
    text = read_source_file(table, name.name)
    return CidrTable(table, settings, parse_rules(table, name.name, text))
