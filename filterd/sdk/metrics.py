"""A plugin's own numbers in filterd's metrics (Prometheus, the ``[metrics]`` endpoint):
``filterd_plugin_events_total{plugin="<chain label>", event="<event>"}``.

Keep ``event`` names few and fixed (one per limit, rule or outcome, never per address): each
is one time series."""

from __future__ import annotations

from filterd.model import metrics

__all__ = ["count_event"]


def count_event(plugin: str, event: str, amount: int = 1) -> None:
    """Add ``amount`` to the plugin's counter ``event`` (cheap: no I/O)."""
    metrics.recorder.plugin_event(plugin, event, amount)
