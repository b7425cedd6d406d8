"""The razor plugin: ask Vipul's Razor (``razor-check``) whether a message is listed.

``razor-check`` reads the message on stdin and answers with its exit status: 0 listed (spam),
1 not listed, anything else an error (2 when it cannot reach a Razor server, e.g. "nextserver:
Bootstrap discovery failed. Giving up."). An error raises ``RazorError``, and a check that does
not finish in time is cancelled by the chain entry's ``timeout`` (the child is killed): both
follow the entry's ``on_error`` (tempfail by default). "Error" is never taken for "not listed".
"""

from __future__ import annotations

import shutil
from typing import Final, Literal

import trio
from pydantic import Field, field_validator

from filterd.sdk import (
    AddHeader,
    Continue,
    Finding,
    MessageView,
    OnMessage,
    Plugin,
    PluginConfig,
    Quarantine,
    Reject,
    Reply,
    Transaction,
    Verdict,
)
from filterd.sdk.process import run

LISTED: Final = 0
NOT_LISTED: Final = 1
DEFAULT_MAX_SIZE: Final = 512_000


class RazorError(Exception):
    """razor-check could not tell (exit status other than 0 or 1)."""


class RazorConfig(PluginConfig):
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
    max_parallel: int = Field(default=4, ge=1, description="razor-check processes at a time.")
    max_size: int = Field(
        default=DEFAULT_MAX_SIZE, ge=0, description="Larger messages are not checked."
    )
    action_when_listed: Literal["tag", "quarantine", "reject"] = Field(
        default="tag",
        description='"tag": add tag_header; "quarantine": quarantine (tagged); "reject": 550.',
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
        if shutil.which(command) is None:
            raise ValueError(
                f'"{command}" is not an executable on PATH (Debian: apt-get install razor)'
            )
        return command

    @field_validator("tag_header")
    @classmethod
    def _header_name_is_valid(cls, name: str) -> str:
        AddHeader(name, "")  # printable ASCII, no colon
        return name

    @field_validator("tag_value")
    @classmethod
    def _header_value_is_valid(cls, value: str) -> str:
        AddHeader("X-Razor", value)  # no CR or NUL; "\n" only to fold
        return value

    @field_validator("reject_text")
    @classmethod
    def _reply_text_is_valid(cls, text: str) -> str:
        Reply(550, "5.7.1", text)
        return text


class Razor(Plugin[RazorConfig], OnMessage):
    name = "razor"
    Config = RazorConfig

    _limiter: trio.CapacityLimiter | None = None

    async def start(self) -> None:
        self._limiter = trio.CapacityLimiter(self.config.max_parallel)

    @property
    def limiter(self) -> trio.CapacityLimiter:
        if self._limiter is None:
            raise RuntimeError("the razor plugin was not started")
        return self._limiter

    def argv(self) -> list[str]:
        config = self.config
        argv = [config.command]
        if config.home is not None:
            argv.append(f"-home={config.home}")
        if config.conf is not None:
            argv.append(f"-conf={config.conf}")
        return argv + config.args

    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        config = self.config
        if message.size > config.max_size:
            self.env.log.info(
                "razor: not checked: message larger than max_size",
                size=message.size,
                max_size=config.max_size,
            )
            detail = f"not checked: size {message.size} > max_size {config.max_size}"
            return Continue(findings=(Finding("razor.skipped", detail),))
        data = b"".join(message.raw_chunks())
        async with self.limiter:
            completed = await run(self.argv(), data)
        if completed.returncode == NOT_LISTED:
            return Continue(findings=(Finding("razor", "not listed"),))
        if completed.returncode != LISTED:
            raise RazorError(completed.describe(config.command))
        findings = (Finding("razor", "listed"),)
        tag = AddHeader(config.tag_header, config.tag_value)
        match config.action_when_listed:
            case "reject":
                return Reject(Reply(550, "5.7.1", config.reject_text), findings)
            case "quarantine":
                return Quarantine(config.quarantine_reason, (tag,), findings)
            case _:
                return Continue((tag,), findings)
