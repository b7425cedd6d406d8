"""filterd's plugin SDK: the only module a plugin imports.

See docs/plugins.md for the guide and a complete example.
"""

from filterd.config.types import ByteSize, Duration
from filterd.model.edits import (
    AddHeader,
    AddRecipient,
    ChangeHeader,
    ChangeSender,
    Edit,
    InsertHeader,
    RemoveHeader,
    RemoveRecipient,
    ReplaceBody,
)
from filterd.model.envelope import Client, Recipient, Session, Transaction
from filterd.model.findings import Finding
from filterd.model.headers import Header
from filterd.model.message import MessageView
from filterd.model.notes import NoteKey, Notes
from filterd.model.reply import Reply
from filterd.model.verdict import (
    CONTINUE,
    Accept,
    Continue,
    Discard,
    Quarantine,
    Reject,
    TempFail,
    Verdict,
)
from filterd.sdk.plugin import Plugin, PluginConfig, PluginEnv
from filterd.sdk.stages import (
    Learns,
    OnClose,
    OnConnect,
    OnHelo,
    OnMailFrom,
    OnMessage,
    OnRcpt,
)

__all__ = [
    "CONTINUE",
    "Accept",
    "AddHeader",
    "AddRecipient",
    "ByteSize",
    "ChangeHeader",
    "ChangeSender",
    "Client",
    "Continue",
    "Discard",
    "Duration",
    "Edit",
    "Finding",
    "Header",
    "InsertHeader",
    "Learns",
    "MessageView",
    "NoteKey",
    "Notes",
    "OnClose",
    "OnConnect",
    "OnHelo",
    "OnMailFrom",
    "OnMessage",
    "OnRcpt",
    "Plugin",
    "PluginConfig",
    "PluginEnv",
    "Quarantine",
    "Recipient",
    "Reject",
    "RemoveHeader",
    "RemoveRecipient",
    "ReplaceBody",
    "Reply",
    "Session",
    "TempFail",
    "Transaction",
    "Verdict",
]
