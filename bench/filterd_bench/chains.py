"""The chains the benchmarks give filterd: the *seed* chain is the ``[[chain]]`` of filterd's
embedded default configuration (``filterd/config/defaults.toml``: header_checks with
``/^Received: .*/ IGNORE`` and ``/^User-Agent: .*/ IGNORE``), read from the installed package
so that the benchmarks always run what a fresh installation runs; *empty* is no chain at all.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from typing import Literal

ChainName = Literal["seed", "empty"]


def seed_chain() -> list[dict[str, object]]:
    """The embedded default configuration's chain entries, as TOML reads them."""
    text = resources.files("filterd.config").joinpath("defaults.toml").read_text("utf-8")
    entries = tomllib.loads(text).get("chain", [])
    if not isinstance(entries, list) or not entries:
        raise ValueError("filterd's embedded default configuration has no [[chain]]")
    return entries


def seed_rules() -> list[str]:
    """The header_checks rules of the seed chain."""
    for entry in seed_chain():
        config = entry.get("config")
        if entry.get("plugin") == "header_checks" and isinstance(config, dict):
            return [str(rule) for rule in config.get("rules", [])]
    raise ValueError("the embedded default chain has no header_checks entry with rules")


def chain_toml(name: ChainName) -> str:
    """The ``[[chain]]`` tables of a chain, as TOML text to append to a configuration."""
    if name == "empty":
        return ""
    lines = ["# the seed chain: the [[chain]] of filterd's embedded default configuration"]
    for entry in seed_chain():
        lines.append("[[chain]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in entry.items())
    return "\n".join(lines) + "\n"


def toml_value(value: object) -> str:
    """A TOML value for what ``tomllib`` reads (JSON's string escapes are TOML's too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(str(key))} = {toml_value(item)}" for key, item in value.items())
        return "{ " + ", ".join(items) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")
