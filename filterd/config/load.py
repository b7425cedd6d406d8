"""Load the TOML configuration into a ``Config`` (``config.render`` writes one back as TOML).

Every problem becomes a ``ConfigError`` naming the file, the line, the key and the fix; all the
problems pydantic finds are reported at once, in file order.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticUndefined

from filterd.config.locate import KeyLines, KeyPath
from filterd.config.render import format_key, toml_string, toml_value, unwrap_annotation
from filterd.config.schema import LISTEN_HINT, Config
from filterd.config.types import show_value
from filterd.errors import ConfigError

__all__ = ["EMBEDDED_SOURCE", "load_config", "parse_config"]

EMBEDDED_SOURCE = "<embedded default>"
"""``Config.source`` of the configuration embedded in the package (``defaults.toml``)."""

_LOADER_ONLY_KEYS = frozenset({"source", "text"})  # Config fields that never come from TOML
_TOML_SPEC = "https://toml.io/en/v1.0.0"


def load_config(path: str | Path | None = None, *, serving: bool = True) -> Config:
    """Read and validate a configuration file; ``None`` means the embedded default.

    ``serving=False`` accepts a file without listeners or delivery (``filterd scan`` and
    ``filterd learn`` use only the chain). Raises ``ConfigError`` (with every problem found in
    ``.problems``).
    """
    if path is None:
        text = resources.files("filterd.config").joinpath("defaults.toml").read_text("utf-8")
        return parse_config(text, source=EMBEDDED_SOURCE, serving=serving)
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            source,
            None,
            "",
            f"cannot read the configuration file: {exc.strerror or exc}",
            "check the path given with -c/--config",
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            source, line, "", "the file is not valid UTF-8 text", "save it as UTF-8"
        ) from None
    return parse_config(text, source=source, serving=serving)


def parse_config(text: str, *, source: str = "<string>", serving: bool = True) -> Config:
    """Validate configuration TOML text; ``source`` names it in errors and in ``Config.source``.

    ``serving``: as for ``load_config``.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text, source) from None
    lines = KeyLines(text)
    errors = [
        ConfigError(source, lines.line((key,)), key, *_unknown_key(key, Config, at_top=True))
        for key in sorted(_LOADER_ONLY_KEYS & data.keys())
    ]
    data = {key: value for key, value in data.items() if key not in _LOADER_ONLY_KEYS}
    try:
        config = Config.model_validate(data, context={"serving": serving})
    except ValidationError as exc:
        errors.extend(_convert(exc.errors(), lines, source))
    if errors:
        errors.sort(key=lambda error: (error.line is None, error.line or 0))
        raise ConfigError.collect(errors)
    return config.model_copy(update={"source": source, "text": text})


# --- TOML syntax errors -------------------------------------------------------------------------

_POSITION_RE = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)$")
_SYNTAX_HINTS = (
    ("Invalid value", 'quote strings, durations and addresses: address = "127.0.0.1:10025"'),
    ("Cannot overwrite", "define each key and table once; repeat tables with [[name]]"),
    ("Cannot declare", "define each key and table once; repeat tables with [[name]]"),
    ("Expected '=' after a key", "write one key = value per line"),
    (
        "Expected newline or end of document after a statement",
        'write one key = value per line, and quote strings: address = "127.0.0.1:10025"',
    ),
    ("Unclosed", "close the string, array or table that starts here"),
    ("Unterminated", "close the string that starts here"),
)


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, source: str) -> ConfigError:
    message = str(exc)
    line: int | None = None
    match = _POSITION_RE.search(message)
    if match is not None:
        message = message[: match.start()]
        if match.group(1) is not None:
            line = int(match.group(1))
            message = f"{message} (column {match.group(2)})"
        else:
            line = text.count("\n") + (0 if text.endswith("\n") else 1)
            message = f"{message} (at the end of the file)"
    hint = next((fix for start, fix in _SYNTAX_HINTS if message.startswith(start)), "")
    return ConfigError(source, line, "", f"invalid TOML: {message}", hint or f"see {_TOML_SPEC}")


# --- validation errors --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """A pydantic error location resolved against the schema."""

    loc: KeyPath  # as written in TOML (a discriminated union's tag removed)
    model: type[BaseModel] | None = None  # the model owning the last key, when known
    info: FieldInfo | None = None  # that key's field, when it is one
    tags: Mapping[str, type[BaseModel]] = field(default_factory=dict)  # union at loc, if any


def _union_tags(annotation: object, discriminator: str) -> dict[str, type[BaseModel]]:
    tags: dict[str, type[BaseModel]] = {}
    for member in typing.get_args(unwrap_annotation(annotation)):
        if isinstance(member, type) and issubclass(member, BaseModel):
            tag_field = member.model_fields.get(discriminator)
            if tag_field is not None and typing.get_origin(tag_field.annotation) is Literal:
                for tag in typing.get_args(tag_field.annotation):
                    tags[str(tag)] = member
    return tags


def _resolve(loc: Sequence[str | int], root: type[BaseModel] = Config) -> _Where:
    clean: list[str | int] = []
    node: object = root
    model: type[BaseModel] | None = None
    info: FieldInfo | None = None
    tags: dict[str, type[BaseModel]] = {}
    for item in loc:
        if tags:  # a discriminated union: pydantic's loc names the tag, TOML does not
            node, tags = tags.get(str(item)), {}
            continue
        clean.append(item)
        node = unwrap_annotation(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            model, info = node, node.model_fields.get(str(item))
            node = None if info is None else info.annotation
            if info is not None and isinstance(info.discriminator, str):
                tags = _union_tags(info.annotation, info.discriminator)
        elif typing.get_origin(node) in (tuple, list) and isinstance(item, int):
            node = typing.get_args(node)[0]
        else:
            node = None
    return _Where(tuple(clean), model, info, tags)


def _valid_keys(model: type[BaseModel], *, at_top: bool) -> list[str]:
    return [name for name in model.model_fields if not (at_top and name in _LOADER_ONLY_KEYS)]


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""


def _unknown_key(key: str, model: type[BaseModel] | None, *, at_top: bool) -> tuple[str, str]:
    message = f"unknown key {show_value(key)}"
    if model is None:
        return message, "remove it"
    valid = _valid_keys(model, at_top=at_top)
    return message, f"{_suggest(key, valid)}valid keys here: {', '.join(valid)}"


def _table_name(loc: KeyPath) -> str:
    if not loc:
        return "the top level"
    return format_key(loc) if isinstance(loc[-1], int) else f"[{format_key(loc)}]"


def _example(info: FieldInfo | None) -> object | None:
    if info is None:
        return None
    if info.examples:
        example: object = info.examples[0]
        return example
    default = info.default
    if default is PydanticUndefined or not isinstance(default, bool | int | str):
        return None
    return default


def _assignment(name: str, info: FieldInfo | None) -> str:
    example = _example(info)
    return "" if example is None else f"{name} = {toml_value(example)}"


def _quoted_choices(ctx_text: object) -> list[str]:
    return re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx_text))


def _describe(error: ErrorDetails, where: _Where) -> tuple[str, str]:
    """(message, hint) for one pydantic error."""
    kind = error["type"]
    ctx = error.get("ctx", {})
    value = error.get("input")
    loc = where.loc
    name = str(loc[-1]) if loc else ""
    got = f"got {show_value(value)}"
    if "reason" in ctx and "hint" in ctx:  # our own types and rules
        return str(ctx["reason"]), str(ctx["hint"])
    match kind:
        case "extra_forbidden":
            return _unknown_key(name, where.model, at_top=len(loc) == 1)
        case "missing":
            return _missing(loc, where)
        case "union_tag_not_found":
            choices = " or ".join(toml_string(tag) for tag in where.tags)
            return f"missing required key {show_value(name)}", f"set {name} = {choices}"
        case "union_tag_invalid":
            tags = _quoted_choices(ctx.get("expected_tags", ""))
            return _not_one_of(name, ctx.get("tag", value), tags)
        case "literal_error":
            return _not_one_of(name, value, _quoted_choices(ctx.get("expected", "")))
        case "int_type" | "int_parsing" | "int_from_float":
            return f"expected a whole number, {got}", _for_example(name, where.info, quotes=True)
        case "bool_type" | "bool_parsing":
            return f"expected true or false, {got}", f"write {name} = true or {name} = false"
        case "string_type":
            return f"expected a string, {got}", _for_example(name, where.info, quotes=False)
        case "path_type":
            return f"expected a path string, {got}", f'write {name} = "/some/path"'
        case "greater_than_equal":
            return f"must be at least {ctx.get('ge')}, {got}", f"use {ctx.get('ge')} or more"
        case "model_type" | "model_attributes_type" | "dict_type":
            return f"expected a table, {got}", f"write it as a {_table_name(loc)} table"
        case "tuple_type" | "list_type" if name == "listen":
            return f"expected [[listen]] tables, {got}", LISTEN_HINT
        case "tuple_type" | "list_type":
            return f"expected an array, {got}", f"write {name} = [ ... ]"
        case "value_error" if "error" in ctx:  # a validator's ValueError: its text alone
            return str(ctx["error"]), ""
        case _:
            return error["msg"], ""


def _missing(loc: KeyPath, where: _Where) -> tuple[str, str]:
    name = str(loc[-1])
    message = f"missing required key {show_value(name)}"
    if where.tags:
        choices = " or ".join(f"method = {toml_string(tag)}" for tag in where.tags)
        return message, f"add a {_table_name(loc)} table with {choices}"
    what = _assignment(name, where.info) or name
    hint = f"add {what} to {_table_name(loc[:-1])}"
    description = where.info.description if where.info else None
    if description:
        if description[1:2].islower():
            description = description[0].lower() + description[1:]
        hint = f"{hint}: {description.removesuffix('.')}"
    return message, hint


def _not_one_of(name: str, value: object, choices: list[str]) -> tuple[str, str]:
    shown = [toml_string(choice) for choice in choices]
    expected = " or ".join(shown) if len(shown) <= 2 else f"one of {', '.join(shown)}"
    suggestion = _suggest(value, choices) if isinstance(value, str) else ""
    return (
        f"expected {expected}, got {show_value(value)}",
        f"{suggestion}valid values for {name}: {', '.join(choices)}",
    )


def _for_example(name: str, info: FieldInfo | None, *, quotes: bool) -> str:
    assignment = _assignment(name, info)
    if not assignment:
        return "write the value without quotes" if quotes else 'put the value in "double quotes"'
    return f"for example {assignment}" + (" (no quotes)" if quotes else "")


def _convert(
    errors: list[ErrorDetails],
    lines: KeyLines,
    source: str,
    root: type[BaseModel] = Config,
    prefix: KeyPath = (),
) -> list[ConfigError]:
    located: list[tuple[_Where, ErrorDetails]] = []
    for error in errors:
        loc = tuple(error["loc"])
        extra = error.get("ctx", {}).get("loc", ())
        if isinstance(extra, tuple):
            loc = (*loc, *extra)
        inner = _resolve(loc, root)
        where = _Where((*prefix, *inner.loc), inner.model, inner.info, inner.tags)
        if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
            discriminator = _quoted_choices(error.get("ctx", {}).get("discriminator", ""))
            if discriminator:
                where = _Where((*where.loc, discriminator[0]), where.model, where.info, where.tags)
        located.append((where, error))
    problems: list[ConfigError] = []
    for where, error in located:
        if error["type"] == "too_short" and any(
            other.loc[: len(where.loc)] == where.loc and len(other.loc) > len(where.loc)
            for other, _ in located
        ):
            continue  # "0 items after validation" only because every item failed
        message, hint = _describe(error, where)
        problems.append(
            ConfigError(source, lines.line(where.loc), format_key(where.loc), message, hint)
        )
    return problems


def nested_config_error(
    exc: ValidationError, model: type[BaseModel], prefix: KeyPath, source: str
) -> ConfigError:
    """A plugin's config table failed its own model: locate the errors in the source file."""
    text = _source_text(source)
    return ConfigError.collect(_convert(exc.errors(), KeyLines(text), source, model, prefix))


def locate_key(source: str, loc: KeyPath) -> int | None:
    """The line of ``loc`` in the configuration file ``source``."""
    return KeyLines(_source_text(source)).line(loc)


def _source_text(source: str) -> str:
    if source == EMBEDDED_SOURCE:
        return resources.files("filterd.config").joinpath("defaults.toml").read_text()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError:
        return ""
