"""filterd's log: Postfix-style lines (``filterd/smtpd[pid]: QUEUEID: ...``) to stderr, syslog
or the journal. ``logger``: ``MailLog`` and ``setup_logging``; ``lines``: the text of the lines
that say what happened to a message; ``destinations``: where lines go."""

from filterd.maillog.lines import Peer, sanitize, smtpd_line
from filterd.maillog.logger import LineHandler, LogSettings, MailLog, queue_id_var, setup_logging

__all__ = [
    "LineHandler",
    "LogSettings",
    "MailLog",
    "Peer",
    "queue_id_var",
    "sanitize",
    "setup_logging",
    "smtpd_line",
]
