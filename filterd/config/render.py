"""Write a ``Config`` back as TOML: plain (``filterd check-config``) or commented (``--commented``).

The commented form is generated from the schema: every table and every setting of
``config.schema`` (and of each chain entry's plugin, when its settings model is given) comes with
its description and its default as comments above it. Core settings show their effective values;
those that are unset are commented out (``#key = example``), and so are the delivery methods not
chosen. A plugin's settings show the values the file gives, the others commented out with their
default (a plugin's own types need not write back as TOML). So the output shows every setting and
loads as the same configuration. ``deploy/filterd.example.toml`` is this form of
``deploy/filterd.toml``, the configuration docs/deploy.md installs.
"""

from __future__ import annotations

import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import PydanticSerializationError

from filterd.config.schema import Config
from filterd.config.types import show_value

__all__ = [
    "describe_default",
    "format_key",
    "render_commented",
    "render_config",
    "toml_string",
    "toml_value",
    "unwrap_annotation",
]

WIDTH = 100
"""The commented form's lines are wrapped to this width."""

PluginSettings = Mapping[int, type[BaseModel]]
"""The settings model of the plugin of each chain entry, by the entry's index."""


# --- TOML values --------------------------------------------------------------------------------

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """A TOML basic string."""
    chars = (
        _ESCAPES.get(char)
        or (f"\\u{ord(char):04x}" if ord(char) < 0x20 or char == "\x7f" else char)
        for char in text
    )
    return '"' + "".join(chars) + '"'


def toml_value(value: object) -> str:
    """A JSON-like value (as ``model_dump(mode="json")`` gives) as a TOML value."""
    match value:
        case bool():
            return "true" if value else "false"
        case int():
            return str(value)
        case float():
            return repr(value)  # "nan", "inf" and "-inf" are TOML too
        case str():
            return toml_string(value)
        case list() | tuple():
            return "[" + ", ".join(toml_value(item) for item in value) + "]"
        case dict():
            items = (f"{format_key((str(k),))} = {toml_value(v)}" for k, v in value.items())
            return "{" + ", ".join(items) + "}"
        case _:
            raise TypeError(f"cannot write {type(value).__name__} as TOML")


def format_key(loc: Sequence[str | int]) -> str:
    """``("listen", 1, "address")`` → ``listen[1].address``."""
    text = ""
    for item in loc:
        if isinstance(item, int):
            text += f"[{item}]"
        else:
            name = item if item and set(item) <= _BARE else toml_string(item)
            text += f".{name}" if text else name
    return text


def unwrap_annotation(annotation: object) -> object:
    """Strip ``Annotated`` and ``| None`` from an annotation (a union of several stays)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


# --- the plain form -----------------------------------------------------------------------------


def render_config(config: Config) -> str:
    """The effective configuration as TOML that ``parse_config``/``load_config`` accept again."""
    data = config.model_dump(mode="json", exclude_none=True)
    out = [f"# filterd: effective configuration, from {show_value(config.source)}"]
    _emit_table(out, (), data)
    return "\n".join(out) + "\n"


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _emit_table(out: list[str], path: tuple[str, ...], table: Mapping[str, object]) -> None:
    for key, value in table.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            out.append(f"{format_key((key,))} = {toml_value(value)}")
    for key, value in table.items():
        sub = (*path, key)
        if isinstance(value, dict):
            out.extend(("", f"[{format_key(sub)}]"))
            _emit_table(out, sub, value)
        elif isinstance(value, list) and _is_table_array(value):
            for item in value:
                out.extend(("", f"[[{format_key(sub)}]]"))
                _emit_table(out, sub, item)


# --- the commented form -------------------------------------------------------------------------

_PREAMBLE = """\
Every setting, with its description and its default in the comments above it; a setting
commented out (#key = ...) is unset. Durations are strings such as "500ms", "30s", "5m", "1h"
(a bare number means seconds); sizes are bytes, or strings such as "10MB" (x1000) and "10MiB"
(x1024). Unknown keys are errors, so a typo never silently becomes a default.
`filterd check-config -c FILE` checks a file and prints its effective settings;
`filterd check-config --commented -c FILE` prints them in this form."""


def render_commented(config: Config, plugins: PluginSettings | None = None) -> str:
    """``config`` as TOML with every setting's description and default as comments.

    ``plugins`` gives the settings model of chain entries' plugins: their tables then show
    every setting of the plugin too. The text loads as ``config`` again.
    """
    out = [f"# filterd configuration, from {show_value(config.source)}.", "#"]
    out.extend(_comment(_PREAMBLE))
    for name, info in Config.model_fields.items():
        if info.exclude:
            continue
        out.append("")
        out.extend(_comment(info.description or ""))
        value = getattr(config, name)
        if isinstance(value, tuple):
            (model,) = _models(info.annotation)
            for index, item in enumerate(value):
                settings = (plugins or {}).get(index) if name == "chain" else None
                _table(out, f"[[{name}]]", model, item, settings)
            if not value:
                _table(out, f"[[{name}]]", model, None)
            continue
        if value is not None:
            _table(out, f"[{name}]", type(value), value)
        for other in _models(info.annotation):
            if not isinstance(value, other):
                out.append("")
                out.append("# or instead:" if value is not None else "# (unset) for example:")
                _table(out, f"[{name}]", other, None)
    return "\n".join(out) + "\n"


def _models(annotation: object) -> list[type[BaseModel]]:
    """The models of a table field: its model, its union's members, or its tuple's item."""
    annotation = unwrap_annotation(annotation)
    if typing.get_origin(annotation) is tuple:
        annotation = unwrap_annotation(typing.get_args(annotation)[0])
    members = typing.get_args(annotation) or (annotation,)
    return [
        member for member in members if isinstance(member, type) and issubclass(member, BaseModel)
    ]


def _table(
    out: list[str],
    header: str,
    model: type[BaseModel],
    instance: BaseModel | None,
    plugin: type[BaseModel] | None = None,
) -> None:
    """One table: its settings from ``instance``; all commented out without one."""
    off = "#" if instance is None else ""
    values = {} if instance is None else instance.model_dump(mode="json", exclude_none=True)
    out.append(f"{off}{header}")
    tables: list[tuple[str, FieldInfo]] = []
    arrays: list[tuple[str, FieldInfo, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        if info.annotation == dict[str, object]:  # a table of its own: [chain.config]
            tables.append((name, info))
            continue
        if typing.get_origin(unwrap_annotation(info.annotation)) is tuple and (
            items := _models(info.annotation)
        ):  # an array of tables: [[delivery.filing]]
            arrays.append((name, info, items[0]))
            continue
        value = values[name] if name in values else _example(info)
        _setting(out, name, info, value, shown=instance is not None and name in values)
    for name, info, item_model in arrays:
        out.append("")
        out.extend(_comment(info.description or ""))
        out.append(f"# {describe_default(info)}")
        header_of_item = f"[[{header.strip('[]')}.{name}]]"
        written_items = () if instance is None else getattr(instance, name)
        for item in written_items:
            _table(out, header_of_item, item_model, item)
        if not written_items:
            _table(out, header_of_item, item_model, None)
    for name, info in tables:
        written = values.get(name, {})
        assert isinstance(written, dict)
        out.append("")
        out.extend(_comment(info.description or ""))
        out.append(f"{off}[{header.strip('[]')}.{name}]")
        if plugin is None:
            out.extend(f"{off}{format_key((key,))} = {toml_value(v)}" for key, v in written.items())
            continue
        for key, setting in plugin.model_fields.items():
            shown = key in written and not off
            _setting(out, key, setting, written.get(key, _example(setting)), shown=shown)


def _setting(out: list[str], name: str, info: FieldInfo, value: object, *, shown: bool) -> None:
    out.extend(_comment(info.description or ""))
    out.append(f"# {describe_default(info)}")
    assignment = f"{format_key((name,))} ="
    if value is not None:
        assignment += f" {toml_value(value)}"
    out.append(assignment if shown else f"#{assignment}")


def describe_default(info: FieldInfo) -> str:
    """A setting's default as TOML would write it: ``default: \"30s\"``, ``required``..."""
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    if default is None:
        return "default: unset"
    return f"default: {_as_toml(info, default)}"


def _example(info: FieldInfo) -> object:
    """A value to show for a setting that is not set: an example, else the default."""
    if info.examples:
        return info.examples[0]
    if info.is_required():
        return None
    default = info.get_default(call_default_factory=True)
    return None if default is None else _json(info, default)


def _as_toml(info: FieldInfo, value: object) -> str:
    try:
        return toml_value(_json(info, value))
    except (TypeError, PydanticSerializationError):
        return repr(value)


def _json(info: FieldInfo, value: object) -> object:
    annotation: Any = info.annotation
    if info.metadata:  # what Annotated[...] carried: serializers of our types, constraints
        annotation = Annotated[(annotation, *info.metadata)]
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    return adapter.dump_python(value, mode="json")


def _comment(text: str) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        wrapped = textwrap.wrap(paragraph, WIDTH - 2, break_on_hyphens=False)
        lines.extend(f"# {line}" for line in wrapped or [""])
    return [line.rstrip() for line in lines]
