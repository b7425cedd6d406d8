"""``TableSpec``: a lookup table named in a plugin's configuration, checked when the
configuration is loaded.

A plugin's ``Config`` field typed ``TableSpec`` accepts Postfix's ``type:name``
(``"texthash:/etc/postfix/access"``, ``"cidr:/etc/postfix/clients.cidr"``,
``"inline:{ a=b }"``); a malformed name or an unknown type is a configuration error naming the
config file, the line, the key and the fix, before anything starts. The field's value is a
:class:`~filterd.sdk.tables.names.TableName`: open it in ``Plugin.start`` with
:func:`~filterd.sdk.tables.registry.open_table` (which reads and checks the table's own file)
and close it in ``Plugin.stop``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from filterd.config.types import show_value
from filterd.sdk.tables.base import TableError
from filterd.sdk.tables.names import TableName, parse_table_name
from filterd.sdk.tables.registry import SUPPORTED_TYPES

__all__ = ["TableSpec", "parse_table_spec"]

_EXAMPLES = '"texthash:/etc/postfix/access", "cidr:/etc/postfix/clients.cidr" or "inline:{ a=b }"'


def _invalid(reason: str, hint: str) -> PydanticCustomError:
    # The "reason" and "hint" context is what the configuration loader shows (with file,
    # line and key) for filterd's own types.
    return PydanticCustomError("table_name", "{reason}", {"reason": reason, "hint": hint})


def parse_table_spec(value: object) -> TableName:
    """``"type:name"`` -> TableName, or a configuration error with its fix."""
    if isinstance(value, TableName):
        return value
    if not isinstance(value, str):
        raise _invalid(
            f"expected a lookup table such as {_EXAMPLES}, got {show_value(value)}",
            "write the table as Postfix's main.cf does: type:name in double quotes",
        )
    try:
        name = parse_table_name(value)
    except TableError as exc:
        raise _invalid(f"{show_value(value)}: {exc.message}", exc.hint) from None
    if name.type not in SUPPORTED_TYPES:
        raise _invalid(
            f'unsupported table type "{name.type}" in {show_value(value)}',
            "use one of " + ", ".join(SUPPORTED_TYPES),
        )
    return name


TableSpec = Annotated[
    TableName,
    PlainValidator(parse_table_spec),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "examples": ["texthash:/etc/postfix/access"]}),
]
"""A Postfix lookup table, ``type:name``, for a plugin's ``Config``."""
