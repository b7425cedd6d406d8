"""Plugins by entry point: load only what the configuration names, and check them.

A plugin must be a ``Plugin`` subclass whose ``name`` equals its entry-point name, implement
at least one stage, and have no ``on_*`` method that is not a stage (a misspelled stage would
otherwise silently never run).
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points

from pydantic import ValidationError

from filterd.config.load import locate_key, nested_config_error
from filterd.config.schema import ChainEntryConfig, Config
from filterd.errors import ConfigError
from filterd.sdk.plugin import Plugin, PluginConfig
from filterd.sdk.stages import STAGES

GROUP = "filterd.plugins"

PluginClass = type[Plugin[PluginConfig]]


class PluginError(Exception):
    """A plugin class that cannot be used; the message says why."""


def installed() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _implemented(cls: type, name: str) -> bool:
    """True if ``cls`` defines ``name`` itself (not just the stage Protocol's empty stub)."""
    method = getattr(cls, name, None)
    return inspect.iscoroutinefunction(method) and method is not getattr(STAGES[name], name)


def stages_of(cls: type) -> list[str]:
    return [name for name in STAGES if _implemented(cls, name)]


def plugin_name(cls: type) -> str:
    """The ``name`` a plugin class declares (the harness has no entry point to go by)."""
    declared = getattr(cls, "name", None)
    if not isinstance(declared, str) or not declared:
        raise PluginError(_no_name(cls, "..."))
    return declared


def _no_name(cls: type, name: str) -> str:
    return (
        f'plugin class {cls.__qualname__} has no name: add name = "{name}" to the class '
        "(the name of its filterd.plugins entry point)"
    )


def check_plugin_class(name: str, cls: object) -> PluginClass:
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise PluginError(f"entry point {name!r} is not a filterd.sdk.Plugin subclass")
    declared = getattr(cls, "name", None)
    if declared is None:
        raise PluginError(_no_name(cls, name))
    if declared != name:
        raise PluginError(
            f"plugin class {cls.__qualname__} has name {declared!r}, entry point {name!r} "
            "(fix: make them the same)"
        )
    unknown = [attr for attr in dir(cls) if attr.startswith("on_") and attr not in STAGES]
    if unknown:
        raise PluginError(
            f"plugin {name!r} has methods that are no stage: {', '.join(unknown)} "
            f"(stages: {', '.join(STAGES)})"
        )
    for attr in STAGES:
        method = getattr(cls, attr, None)
        if method is not None and not inspect.iscoroutinefunction(method):
            raise PluginError(f"plugin {name!r}: {attr} must be an async def")
    for attr, protocol in STAGES.items():
        if issubclass(cls, protocol) and protocol in cls.__mro__ and not _implemented(cls, attr):
            raise PluginError(
                f"plugin {name!r} declares {protocol.__name__} but does not implement {attr}"
            )
    if not stages_of(cls):
        raise PluginError(f"plugin {name!r} implements no stage ({', '.join(STAGES)})")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, PluginConfig)):
        raise PluginError(f"plugin {name!r}: Config must be a filterd.sdk.PluginConfig subclass")
    return cls


def load_plugin_class(name: str, available: dict[str, EntryPoint] | None = None) -> PluginClass:
    available = installed() if available is None else available
    entry = available.get(name)
    if entry is None:
        choices = ", ".join(sorted(available)) or "none installed"
        raise PluginError(f"no plugin called {name!r} is installed (installed: {choices})")
    return check_plugin_class(name, entry.load())


def resolve_chain(config: Config) -> list[tuple[ChainEntryConfig, PluginClass, PluginConfig]]:
    """Load and validate every ``[[chain]]`` entry; ConfigError naming file and line if not."""
    available = installed()
    resolved = []
    problems: list[ConfigError] = []
    for index, entry in enumerate(config.chain):
        try:
            cls = load_plugin_class(entry.plugin, available)
        except PluginError as exc:
            problems.append(_entry_error(config, index, "plugin", str(exc)))
            continue
        try:
            settings = cls.Config.model_validate(entry.config)
        except ValidationError as exc:
            problems.extend(
                nested_config_error(
                    exc, cls.Config, ("chain", index, "config"), config.source
                ).problems
            )
            continue
        resolved.append((entry, cls, settings))
    if problems:
        raise ConfigError.collect(problems)
    return resolved


def _entry_error(config: Config, index: int, key: str, message: str) -> ConfigError:
    return ConfigError(
        config.source,
        locate_key(config.source, ("chain", index, key)),
        f"chain[{index}].{key}",
        message,
        "install the plugin's package, or fix the name (`filterd plugins` lists them)",
    )
