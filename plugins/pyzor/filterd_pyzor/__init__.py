"""filterd's Pyzor plugin: ``pyzor check`` on each message; tag, quarantine or reject listed mail.

Name it in a ``[[chain]]`` entry (``plugin = "pyzor"``); see ``PyzorConfig`` and ``README.md``.
``report()`` reports a message as spam (``pyzor report``).
"""

from .plugin import CheckResult, Pyzor, PyzorConfig, PyzorError, ServerAnswer, check_result
from .report import report

__all__ = [
    "CheckResult",
    "Pyzor",
    "PyzorConfig",
    "PyzorError",
    "ServerAnswer",
    "check_result",
    "report",
]
