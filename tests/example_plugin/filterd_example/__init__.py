"""An example third-party plugin: tags messages with a header, refuses some recipients and
messages whose Subject has a refused word.

It imports only ``filterd.sdk`` — the whole public surface for plugins.
"""

from __future__ import annotations

import re

from filterd.sdk import (
    AddHeader,
    Continue,
    Field,
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
    field_validator,
)


class TaggerConfig(PluginConfig):  # a pydantic model; unknown keys are errors
    header: str = Field(default="X-Example-Tag", description="The header added to messages.")
    text: str = Field(default="tagged", description="Its value.")
    refuse_prefix: str | None = Field(
        default=None, description="Refuse recipients whose address starts with this."
    )
    refuse_words: list[str] = Field(
        default_factory=list, description="Refuse messages whose Subject has one of these words."
    )

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not re.fullmatch(r"[!-9;-~]+", value):
            raise ValueError(f'expected a header name such as "X-Example-Tag", got "{value}"')
        return value

    @field_validator("refuse_words")
    @classmethod
    def _lower_case(cls, words: list[str]) -> list[str]:
        return [word.lower() for word in words]


class ExampleTagger(Plugin[TaggerConfig], OnRcpt, OnMessage):
    name = "example_tagger"  # = the entry-point name
    Config = TaggerConfig

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        prefix = self.config.refuse_prefix
        if prefix and rcpt.address.startswith(prefix):
            return Reject(Reply(550, "5.7.1", f"<{rcpt.address}>: refused by example_tagger"))
        return Continue()

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        subject = message.decoded_header("Subject") or ""  # RFC 2047 encoded words decoded
        refused = set(re.findall(r"\w+", subject.lower())) & set(self.config.refuse_words)
        if refused:
            word = min(refused)
            return Reject(
                Reply(550, "5.7.1", "Message refused by example_tagger"),
                findings=(Finding("example.refused_word", word),),
            )
        return Continue(
            edits=(AddHeader(self.config.header, self.config.text),),
            findings=(Finding("example.subject_length", str(len(subject))),),
        )
