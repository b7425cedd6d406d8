"""filterd's access plugin: Postfix access(5) maps for the client, HELO, sender and recipient,
applied as smtpd's ``check_client_access``, ``check_helo_access``, ``check_sender_access`` and
``check_recipient_access`` apply them. Name it in a ``[[chain]]`` entry (``plugin = "access"``);
see ``AccessConfig`` for the settings."""

from .config import AccessConfig
from .plugin import Access

__all__ = ["Access", "AccessConfig"]
