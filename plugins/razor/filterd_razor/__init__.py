"""filterd's Razor plugin: ``razor-check`` on each message; tag, quarantine or reject listed mail.

Name it in a ``[[chain]]`` entry (``plugin = "razor"``); see ``RazorConfig`` and ``README.md``.
"""

from .plugin import Razor, RazorConfig, RazorError

__all__ = ["Razor", "RazorConfig", "RazorError"]
