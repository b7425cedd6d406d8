"""filterd.sdk.metrics: a plugin's own counters reach this process's recorder and come out as
``filterd_plugin_events_total{plugin, event}``; with no recorder installed they go nowhere."""

from __future__ import annotations

from filterd.model import metrics
from filterd.runtime.recording import Recording
from filterd.sdk.metrics import count_event


def test_count_event_is_recorded_and_sampled() -> None:
    recording = Recording()
    old = metrics.install(recording)
    try:
        count_event("ratelimit", "sender.counted", 3)
        count_event("ratelimit", "sender.counted")
        count_event("ratelimit", "sender.exceeded")
    finally:
        metrics.install(old)
    count_event("ratelimit", "sender.exceeded")  # not recording any more
    assert recording.plugin_events == {
        ("ratelimit", "sender.counted"): 4,
        ("ratelimit", "sender.exceeded"): 1,
    }
    samples = {(name, labels): value for _, name, labels, value in recording.samples()}
    assert samples[("filterd_plugin_events_total", ("ratelimit", "sender.counted"))] == 4
