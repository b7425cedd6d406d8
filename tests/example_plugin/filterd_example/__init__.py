"""An example third-party plugin: tags messages with a header, refuses some recipients.

It imports only ``filterd.sdk`` — the whole public surface for plugins.
"""

from __future__ import annotations

from filterd.sdk import (
    AddHeader,
    Continue,
    Finding,
    MessageView,
    OnMessage,
    OnRcpt,
    Plugin,
    PluginConfig,
    Recipient,
    Reject,
    Reply,
    Transaction,
    Verdict,
)


class TaggerConfig(PluginConfig):
    header: str = "X-Example-Tag"
    text: str = "tagged"
    refuse_prefix: str | None = None


class ExampleTagger(Plugin[TaggerConfig], OnRcpt, OnMessage):
    name = "example_tagger"
    Config = TaggerConfig

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        prefix = self.config.refuse_prefix
        if prefix and rcpt.address.startswith(prefix):
            return Reject(Reply(550, "5.7.1", f"<{rcpt.address}>: refused by example_tagger"))
        return Continue()

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        subject = message.header("Subject") or ""
        return Continue(
            edits=(AddHeader(self.config.header, self.config.text),),
            findings=(Finding("example.subject_length", str(len(subject))),),
        )
