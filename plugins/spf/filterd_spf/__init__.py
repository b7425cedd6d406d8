"""filterd's SPF plugin: RFC 7208 checks with pyspf, through a DNS resolver of its own.

Name it in a ``[[chain]]`` entry (``plugin = "spf"``); see ``SpfConfig`` for the settings and
``plugin.py`` for the notes it leaves for other plugins (``SPF_RESULT``, ``SPF_OUTCOME``, ...).
"""

from .checker import SpfAnswer, SpfRequest, SpfResult, evaluate
from .config import ResolverConfig, SpfConfig
from .plugin import (
    SPF_HELO_RESULT,
    SPF_OUTCOME,
    SPF_RESULT,
    SPF_SKIPPED,
    Spf,
    SpfOutcome,
)
from .resolver import DnsTemporaryError, SpfResolver

__all__ = [
    "SPF_HELO_RESULT",
    "SPF_OUTCOME",
    "SPF_RESULT",
    "SPF_SKIPPED",
    "DnsTemporaryError",
    "ResolverConfig",
    "Spf",
    "SpfAnswer",
    "SpfConfig",
    "SpfOutcome",
    "SpfRequest",
    "SpfResolver",
    "SpfResult",
    "evaluate",
]
