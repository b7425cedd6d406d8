"""The spamd client for plugins (SpamAssassin's protocol, as spamc speaks it)."""

from filterd.protocols.spamd import (
    Command,
    ExitCode,
    MessageClass,
    SpamdLimits,
    SpamdResponse,
    SpamStatus,
    Tell,
    TellTarget,
)
from filterd.sdk.spamd_client import SpamdClient, SpamdError

__all__ = [
    "Command",
    "ExitCode",
    "MessageClass",
    "SpamStatus",
    "SpamdClient",
    "SpamdError",
    "SpamdLimits",
    "SpamdResponse",
    "Tell",
    "TellTarget",
]
