"""Postfix ``regexp:`` and ``pcre:`` tables, matched as Postfix matches them: one engine for the
``regexp:``/``pcre:`` lookup tables (:mod:`filterd.sdk.tables`) and header_checks.

:func:`parse_table` / :func:`load_table` read the rules (a :class:`RuleError` names the file
and line of a malformed one); :meth:`PatternTable.query` answers what ``postmap -q`` prints.
"""

from filterd.sdk.patterns.pattern import FLAVOURS, Flavour
from filterd.sdk.patterns.table import (
    Hit,
    PatternTable,
    RuleError,
    ValueCheck,
    load_table,
    parse_table,
)

__all__ = [
    "FLAVOURS",
    "Flavour",
    "Hit",
    "PatternTable",
    "RuleError",
    "ValueCheck",
    "load_table",
    "parse_table",
]
