"""What filterd's own configuration implies for the wiring: how long the chain may take at each
stage, how many processes run it, which of its settings refuse mail with a 5xx, and where in
filterd.toml a setting is written (for the fixes).

Reject actions are recognised by convention, for every plugin: an entry's ``on_error =
"reject"``; a plugin setting whose value is ``"reject"`` or ``"reject-..."`` (SPF's ``on_fail``,
Pyzor's and Razor's ``action_when_listed``, SPF's ``helo_check = "reject-fail"``); a
``reject_...`` threshold that is set (SpamAssassin's ``reject_score``); and a Postfix-style
table rule whose action is REJECT with a 5xx or no code (header_checks' inline ``rules`` and
its ``regexp:``/``pcre:`` table files).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from filterd.chain.registry import PluginClass, resolve_chain, stages_of
from filterd.config.locate import KeyLines, KeyPath
from filterd.config.schema import ChainEntryConfig, Config
from filterd.config.types import format_duration
from filterd.sdk.plugin import PluginConfig

__all__ = [
    "ChainFacts",
    "RejectAction",
    "chain_facts",
    "chain_processes",
    "seconds",
    "table_line_rejects",
    "where",
]

_FLAGS_AND_ACTION = re.compile(r"[A-Za-z]*\s+(\S+)(?:\s+(.*))?$")
_TABLE = re.compile(r"(regexp|pcre):(/.+)")
_MESSAGE_STAGES = ("on_connect", "on_helo", "on_mail_from", "on_rcpt", "on_message")


@dataclass(frozen=True)
class RejectAction:
    """A setting that makes the chain answer 5xx."""

    entry: int
    label: str
    what: str  # 'on_fail = "reject" (the default)', "rule /x/ REJECT"
    path: KeyPath  # where it is (or would be) written in filterd.toml
    fix: str


@dataclass(frozen=True)
class ChainFacts:
    resolved: list[tuple[ChainEntryConfig, PluginClass, PluginConfig]]
    worst_case: dict[str, float]
    """Per stage, the longest the chain may take: the sum of the timeouts of the entries that
    implement it (entries run one after the other)."""
    entries: dict[str, list[str]]
    """Per stage, the labels of the entries that implement it."""

    def slowest(self, stages: tuple[str, ...] = _MESSAGE_STAGES) -> tuple[str, float]:
        """The stage of ``stages`` the chain may take longest at, and how long."""
        candidates = [(self.worst_case.get(stage, 0.0), stage) for stage in stages]
        worst, stage = max(candidates)
        return stage, worst

    def describe(self, stage: str) -> str:
        labels = self.entries.get(stage, [])
        return f"{stage}: {' + '.join(labels)} = {seconds(self.worst_case.get(stage, 0.0))}"


def chain_facts(config: Config) -> ChainFacts:
    """Load the chain's plugins (ConfigError as for ``filterd check-config``)."""
    resolved = resolve_chain(config)
    worst: dict[str, float] = {}
    entries: dict[str, list[str]] = {}
    for entry, cls, _ in resolved:
        for stage in stages_of(cls):
            worst[stage] = worst.get(stage, 0.0) + entry.timeout
            entries.setdefault(stage, []).append(f"{entry.label} {seconds(entry.timeout)}")
    return ChainFacts(resolved, worst, entries)


def chain_processes(config: Config) -> int:
    """How many processes run the chain: the main one serves every listener, and each
    listener with ``processes`` above 1 adds that many less one worker processes."""
    return 1 + sum(listener.process_count - 1 for listener in config.listen)


def seconds(value: float) -> str:
    return format_duration(value)


def where(config: Config, path: KeyPath) -> str:
    """``file:line`` of ``path`` in filterd.toml (its table's line when it is not written)."""
    line = KeyLines(config.text).line(path) if config.text else None
    return config.source if line is None else f"{config.source}:{line}"


def table_line_rejects(line: str) -> bool:
    """Whether a regexp:/pcre: table line (Postfix header_checks syntax, ``/pattern/flags
    ACTION text``) refuses with a 5xx: REJECT without text, or with text not starting "4"."""
    text = line.strip()
    if not text or text.startswith("#"):
        return False
    text = text.removeprefix("!")
    if not text or text[0].isalnum() or text[0].isspace():
        return False  # "if"/"endif" lines, and no pattern
    delimiter = text[0]
    index = 1
    while index < len(text) and text[index] != delimiter:
        index += 2 if text[index] == "\\" else 1
    match = _FLAGS_AND_ACTION.match(text[index + 1 :]) if index < len(text) else None
    if match is None:
        return False
    return match[1].upper() == "REJECT" and not (match[2] or "").startswith("4")


def _table_rejects(value: str) -> Iterator[str]:
    match = _TABLE.fullmatch(value)
    if match is None:
        return
    try:
        lines = Path(match[2]).read_text(errors="replace").splitlines()
    except OSError:
        return
    for number, line in enumerate(lines, 1):
        if table_line_rejects(line):
            yield f"{match[2]}:{number}: {line.strip()}"


def _is_reject(value: object) -> bool:
    return isinstance(value, str) and (value == "reject" or value.startswith("reject-"))


def _other_choice(model: type[BaseModel], name: str) -> str | None:
    annotation = model.model_fields[name].annotation
    for choice in typing.get_args(annotation):
        if isinstance(choice, str) and not _is_reject(choice):
            return choice
    return None


def _setting_rejects(
    index: int, entry: ChainEntryConfig, settings: PluginConfig
) -> Iterator[RejectAction]:
    model = type(settings)
    base: KeyPath = ("chain", index, "config")
    for name in model.model_fields:
        value = getattr(settings, name)
        default = "" if name in entry.config else " (the default)"
        if _is_reject(value):
            other = _other_choice(model, name)
            fix = f'{name} = "{other}"' if other else f"{name}: an action that is not a reject"
            yield RejectAction(
                index, entry.label, f'{name} = "{value}"{default}', (*base, name), fix
            )
        elif name.startswith("reject_") and value is not None and not isinstance(value, str):
            instead = name.replace("reject_", "quarantine_", 1)
            fix = (
                f"{instead} = {value!r} and no {name}"
                if instead in model.model_fields
                else f"remove {name}"
            )
            yield RejectAction(index, entry.label, f"{name} = {value!r}", (*base, name), fix)
        for item in value if isinstance(value, list | tuple) else [value]:
            if not isinstance(item, str):
                continue
            rules = [item] if table_line_rejects(item) else list(_table_rejects(item))
            for rule in rules:
                yield RejectAction(
                    index,
                    entry.label,
                    f"{name}: {rule}",
                    (*base, name),
                    "HOLD (quarantine) or a PREPENDed tag instead of REJECT",
                )


def reject_actions(facts: ChainFacts) -> Iterator[RejectAction]:
    """Every setting of the chain that refuses mail with a 5xx."""
    for index, (entry, _, settings) in enumerate(facts.resolved):
        if entry.on_error == "reject":
            yield RejectAction(
                index,
                entry.label,
                'on_error = "reject"',
                ("chain", index, "on_error"),
                'on_error = "tempfail"',
            )
        yield from _setting_rejects(index, entry, settings)
