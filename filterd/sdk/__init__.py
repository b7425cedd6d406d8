"""filterd's plugin SDK: the only module a plugin imports.

See docs/plugins.md for the guide and a complete example. A plugin's settings model needs
nothing else either: ``Field`` and the validators (pydantic's own, re-exported) and the
``Duration``, ``ByteSize`` and ``IPNetwork`` value types come from here, and so does
``ConfigError``, what a bad ``[[chain]]`` ``config`` table raises.
"""

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from filterd.config.types import ByteSize, Duration, IPNetwork
from filterd.errors import ConfigError
from filterd.maillog import MailLog
from filterd.model.edits import (
    AddHeader,
    AddRecipient,
    ChangeHeader,
    ChangeSender,
    Edit,
    InsertHeader,
    Redirect,
    RemoveHeader,
    RemoveRecipient,
    ReplaceBody,
)
from filterd.model.envelope import Client, Recipient, Session, Transaction
from filterd.model.findings import Finding
from filterd.model.headers import Header
from filterd.model.message import MessageView
from filterd.model.mime import MessageText, TextPart
from filterd.model.notes import NoteKey, Notes
from filterd.model.reply import Reply
from filterd.model.verdict import (
    CONTINUE,
    Accept,
    Continue,
    DeferIf,
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
    inline,
)

__all__ = [
    "CONTINUE",
    "Accept",
    "AddHeader",
    "AddRecipient",
    "AfterValidator",
    "BeforeValidator",
    "ByteSize",
    "ChangeHeader",
    "ChangeSender",
    "Client",
    "ConfigError",
    "Continue",
    "DeferIf",
    "Discard",
    "Duration",
    "Edit",
    "Field",
    "Finding",
    "Header",
    "IPNetwork",
    "InsertHeader",
    "Learns",
    "MailLog",
    "MessageText",
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
    "Redirect",
    "Reject",
    "RemoveHeader",
    "RemoveRecipient",
    "ReplaceBody",
    "Reply",
    "Session",
    "TempFail",
    "TextPart",
    "Transaction",
    "Verdict",
    "field_validator",
    "inline",
    "model_validator",
]
