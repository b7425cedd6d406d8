"""filterd's rules plugin: a postfwd-style ordered rule list over the policy attributes of a
request, on every front door, answering with access(5) actions. Name it in a ``[[chain]]``
entry (``plugin = "rules"``); see ``RulesConfig`` for the settings and README.md for the rule
language."""

from .config import RulesConfig
from .plugin import Rules

__all__ = ["Rules", "RulesConfig"]
