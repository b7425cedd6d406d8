"""Policy state for plugins (greylisting, rate limits): a small async key-value store with
TTLs and atomic updates, kept in an embedded SQLite file (the default; survives a restart) or
in Redis (several filterd hosts share one state). See docs/plugins.md, "Policy state".

Open one with :func:`open_store` from a :class:`StateSettings` (a plugin's ``Config`` field) in
``Plugin.start``; close it in ``Plugin.stop``. Every call either answers within the settings'
``timeout`` or raises :class:`StoreFailure`; the plugin then follows ``on_store_failure``
(:meth:`StateSettings.failure_verdict`).
"""

from filterd.sdk.state.base import StateStore, StoreFailure
from filterd.sdk.state.open import open_store
from filterd.sdk.state.settings import StateSettings
from filterd.sdk.state.sighting import Maturing, Sighting, Tally

__all__ = [
    "Maturing",
    "Sighting",
    "StateSettings",
    "StateStore",
    "StoreFailure",
    "Tally",
    "open_store",
]
