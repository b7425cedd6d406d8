"""Build the chain from the configuration: load, validate and instantiate every plugin."""

from __future__ import annotations

import trio

from filterd.chain.registry import resolve_chain, stages_of
from filterd.chain.runner import ChainRunner, Entry
from filterd.config.schema import Config
from filterd.maillog import MailLog
from filterd.sdk.plugin import PluginEnv

THREADS_PER_PLUGIN = 8


def build_chain(config: Config) -> ChainRunner:
    """Raises ConfigError (naming file, line and key) for a bad ``[[chain]]`` entry."""
    entries = []
    for entry_config, cls, settings in resolve_chain(config):
        label = entry_config.label
        env = PluginEnv(label, MailLog(label), trio.CapacityLimiter(THREADS_PER_PLUGIN))
        plugin = cls(settings, env)
        entries.append(
            Entry(
                entry_config,
                plugin,
                trio.CapacityLimiter(entry_config.concurrency),
                frozenset(stages_of(cls)),
            )
        )
    return ChainRunner(entries)
