"""The razor plugin: ask Vipul's Razor (``razor-check``) whether a message is listed.

``razor-check`` reads the message on stdin and answers with its exit status: 0 listed (spam),
1 not listed, anything else an error (2 when it cannot reach a Razor server, e.g. "nextserver:
Bootstrap discovery failed. Giving up."). An error raises ``RazorError``, and a check that does
not finish in time is cancelled by the chain entry's ``timeout`` (the child is killed): both
follow the entry's ``on_error`` (tempfail by default). "Error" is never taken for "not listed".
"""

from __future__ import annotations

from typing import Final

from filterd.sdk import (
    AddHeader,
    Continue,
    Field,
    Finding,
    MessageView,
    OnMessage,
    Transaction,
    Verdict,
    field_validator,
)
from filterd.sdk.listing import ListingConfig, ListingPlugin, program_on_path, when_listed
from filterd.sdk.process import run

LISTED: Final = 0
NOT_LISTED: Final = 1


class RazorError(Exception):
    """razor-check could not tell (exit status other than 0 or 1)."""


class RazorConfig(ListingConfig):
    command: str = Field(
        default="razor-check",
        description="The razor-check program (a name looked up on PATH, or a path).",
    )
    home: str | None = Field(
        default=None,
        description="Razor's home directory (razor-check -home=): identity, server lists, "
        "logs; default ~/.razor of the user filterd runs as.",
    )
    conf: str | None = Field(default=None, description="razor-agent.conf to use (-conf=).")
    args: list[str] = Field(
        default_factory=list,
        description='More razor-check arguments, e.g. ["-logfile=/dev/null"].',
    )
    tag_header: str = Field(default="X-Razor", description="Header added to listed mail.")
    tag_value: str = Field(default="listed", description="Its value.")
    reject_text: str = Field(
        default="Message content rejected (listed by Razor)",
        description="Text of the 550 5.7.1 reply when action_when_listed is reject.",
    )
    quarantine_reason: str = Field(default="listed by Razor", description="Quarantine reason.")

    @field_validator("command")
    @classmethod
    def _command_exists(cls, command: str) -> str:
        return program_on_path(command, "razor")

    @field_validator("tag_value")
    @classmethod
    def _header_value_is_valid(cls, value: str) -> str:
        AddHeader("X-Razor", value)  # no CR or NUL; "\n" only to fold
        return value


class Razor(ListingPlugin[RazorConfig], OnMessage):
    name = "razor"
    Config = RazorConfig

    def argv(self) -> list[str]:
        config = self.config
        argv = [config.command]
        if config.home is not None:
            argv.append(f"-home={config.home}")
        if config.conf is not None:
            argv.append(f"-conf={config.conf}")
        return argv + config.args

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        skipped = self.skip_if_too_large(message)
        if skipped is not None:
            return skipped
        config = self.config
        data = b"".join(message.raw_chunks())
        async with self.limiter:
            completed = await run(self.argv(), data)
        if completed.returncode == NOT_LISTED:
            return Continue(findings=(Finding("razor", "not listed"),))
        if completed.returncode != LISTED:
            raise RazorError(completed.describe(config.command))
        tag = AddHeader(config.tag_header, config.tag_value)
        return when_listed(config, tag, (Finding("razor", "listed"),))
