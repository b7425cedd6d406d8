"""Postfix's ``type:name`` table syntax: ``hash:/etc/postfix/access``, ``static:OK``,
``inline:{ k1=v1, { k2 = v w } }``, ``proxy:mysql:/etc/postfix/m.cf`` (proxy: is stripped:
filterd has no proxymap, the table is opened directly), ``unionmap:{t1, t2}``."""

from __future__ import annotations

from dataclasses import dataclass

from filterd.sdk.tables.base import TableError

__all__ = ["TableName", "parse_table_name", "split_braced_list"]


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


def split_braced_list(text: str, table: str, *, braced_only: bool = False) -> list[str]:
    """The elements of ``{ a, { b c }, d }`` as Postfix's mystrtokq() splits them: commas or
    white space separate, ``{...}`` keeps its content together (outer braces and the white
    space inside them removed). With ``braced_only`` every element must be in braces (the
    rules of an inline ``regexp:{ {rule}, {rule} }``, as dict_stream_open() wants them)."""
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise TableError(table, "expected a list in braces", hint="write {element, element}")
    body = body[1:-1]
    items: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c in " \t\r\n,":
            i += 1
            continue
        if c == "{":
            depth, j = 0, i
            while j < len(body):
                if body[j] == "{":
                    depth += 1
                elif body[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if depth != 0:
                raise TableError(table, "unbalanced braces", hint="close every { with }")
            items.append(body[i + 1 : j].strip())
            i = j + 1
            continue
        if braced_only:
            raise TableError(
                table,
                f'element {len(items) + 1} is not in braces: "{body[i:].rstrip()}"',
                hint="write each element in braces: { {first}, {second} }",
            )
        j = i
        depth = 0
        while j < len(body) and (depth or body[j] not in " \t\r\n,"):
            if body[j] == "{":
                depth += 1
            elif body[j] == "}":
                depth -= 1
            j += 1
        items.append(body[i:j])
        i = j
    return items
