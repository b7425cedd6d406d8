"""filterd's SpamAssassin plugin: spamd scans, X-Spam-* headers, thresholds, TELL learning.

Name it in a ``[[chain]]`` entry (``plugin = "spamassassin"``); see ``SpamAssassinConfig`` for
the settings and ``README.md`` for an example.
"""

from .config import SpamAssassinConfig, parse_address
from .learn import learn
from .plugin import SpamAssassin

__all__ = ["SpamAssassin", "SpamAssassinConfig", "learn", "parse_address"]
