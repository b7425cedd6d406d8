"""``filterd plugins``: what is installed, which stages each plugin takes part in, its settings."""

from __future__ import annotations

from typing import TextIO

from filterd.chain.registry import PluginError, installed, load_plugin_class, stages_of


def list_plugins(out: TextIO) -> int:
    available = installed()
    if not available:
        out.write("no plugins installed (entry point group filterd.plugins)\n")
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
            if field.is_required():
                default = "required"
            else:
                default = f"default {field.get_default(call_default_factory=True)!r}"
            about = f" - {field.description}" if field.description else ""
            out.write(f"  {key} ({default}){about}\n")
        out.write("\n")
    return 0
