"""Postfix lookup tables for plugins and the delivery stage: open a table by Postfix's
``type:name`` syntax, reading an administrator's files unchanged, and look keys up
asynchronously. See docs/plugins.md, "Lookup tables".
"""

from filterd.sdk.tables.base import Table, TableError, TableFailure, TableSettings
from filterd.sdk.tables.names import TableName, parse_table_name
from filterd.sdk.tables.registry import SUPPORTED_TYPES, open_table
from filterd.sdk.tables.spec import TableSpec, parse_table_spec

__all__ = [
    "SUPPORTED_TYPES",
    "Table",
    "TableError",
    "TableFailure",
    "TableName",
    "TableSettings",
    "TableSpec",
    "open_table",
    "parse_table_name",
    "parse_table_spec",
]
