"""Postfix's ``type:name`` table syntax: ``hash:/etc/postfix/access``, ``static:OK``,
``inline:{ k1=v1, { k2 = v w } }``, ``proxy:mysql:/etc/postfix/m.cf`` (proxy: is stripped:
filterd has no proxymap, the table is opened directly), ``unionmap:{t1, t2}``. The braced
lists are taken apart by :mod:`filterd.sdk.tables.source`."""

from __future__ import annotations

from dataclasses import dataclass

from filterd.sdk.tables.base import TableError

__all__ = ["TableName", "parse_table_name"]


@dataclass(frozen=True, slots=True)
class TableName:
    type: str  # lower case: "mysql"
    name: str  # the rest, as written: "/etc/postfix/m.cf", "{ k1=v1 }"

    def __str__(self) -> str:
        return f"{self.type}:{self.name}"


def parse_table_name(spec: str) -> TableName:
    """Split ``type:name`` (``proxy:`` dropped); a TableError names what is wrong and the fix."""
    text = spec.strip()
    while True:
        kind, colon, rest = text.partition(":")
        if not colon or not kind or not kind.replace("_", "").isalnum():
            raise TableError(
                spec or '""',
                "not a table name",
                hint='write type:name, e.g. "texthash:/etc/postfix/access" or "inline:{ a=b }"',
            )
        kind = kind.lower()
        if kind != "proxy":
            break
        text = rest
    if rest.startswith("{") and not rest.rstrip().endswith("}"):
        raise TableError(spec, "unbalanced braces", hint="close the list with }")
    return TableName(kind, rest)
