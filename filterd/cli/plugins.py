"""``filterd plugins``: what is installed, which stages each plugin takes part in, its settings;
and, for the other commands, a chain naming a plugin that is not installed: how to install it."""

from __future__ import annotations

import difflib
from typing import TextIO

from filterd.chain.registry import PluginError, installed, load_plugin_class, stages_of
from filterd.config.load import locate_key
from filterd.config.render import describe_default
from filterd.config.schema import Config
from filterd.errors import ConfigError

BUILT_IN = {
    "header_checks": "filterd-header-checks",
    "spamassassin": "filterd-spamassassin",
    "razor": "filterd-razor",
    "pyzor": "filterd-pyzor",
    "spf": "filterd-spf",
    "access": "filterd-access",
    "greylist": "filterd-greylist",
    "rules": "filterd-rules",
    "ratelimit": "filterd-ratelimit",
}
"""The built-in plugins (plugins/*/) and their distributions: the ``plugins`` extra."""

INSTALL_WITH_PLUGINS = (
    "install filterd with its plugins: pip install '.[plugins]' ./plugins/*/ in a source "
    "checkout, or pip install --no-index --find-links DIR 'filterd[plugins]' from a directory "
    "of wheels (docs/deploy.md)"
)


def check_installed(config: Config) -> None:
    """Every plugin the chain names is installed; else a ConfigError saying how to install it."""
    available = sorted(installed())
    problems = []
    for index, entry in enumerate(config.chain):
        if entry.plugin in available:
            continue
        where = ("chain", index, "plugin")
        listed = ", ".join(available) or "none"
        problems.append(
            ConfigError(
                config.source,
                locate_key(config.source, where),
                f"chain[{index}].plugin",
                f"no plugin called {entry.plugin!r} is installed (installed: {listed})",
                _how_to_install(entry.plugin, available),
            )
        )
    if problems:
        raise ConfigError.collect(problems)


def _how_to_install(name: str, available: list[str]) -> str:
    distribution = BUILT_IN.get(name)
    if distribution is not None:
        return f"{name} is a built-in plugin ({distribution}): {INSTALL_WITH_PLUGINS}"
    close = difflib.get_close_matches(name, [*available, *BUILT_IN], n=1, cutoff=0.6)
    guess = f"did you mean {close[0]}? " if close else ""
    return (
        f"{guess}install the package that provides {name!r} (an entry point in the group "
        "filterd.plugins), or fix the name: `filterd plugins` lists the installed ones"
    )


def list_plugins(out: TextIO) -> int:
    available = installed()
    if not available:
        out.write(
            "no plugins installed (entry point group filterd.plugins); for the built-in ones, "
            f"{INSTALL_WITH_PLUGINS}\n"
        )
        return 0
    for name in sorted(available):
        entry = available[name]
        try:
            cls = load_plugin_class(name, available)
        except (PluginError, ImportError) as exc:
            out.write(f"{name}  ({entry.value})  UNUSABLE: {exc}\n\n")
            continue
        out.write(f"{name}  ({entry.value})\n")
        out.write(f"  stages: {', '.join(stages_of(cls))}\n")
        fields = cls.Config.model_fields
        if not fields:
            out.write("  settings: none\n")
        for key, field in fields.items():
            about = f" - {field.description}" if field.description else ""
            out.write(f"  {key} ({describe_default(field)}){about}\n")
        out.write("\n")
    return 0
