"""For plugins that ask an external program whether a message is listed (razor-check, pyzor):
the settings they share, the skip of large messages, and what a listed message becomes.

A plugin subclasses ``ListingConfig`` (giving ``tag_header``, ``reject_text`` and
``quarantine_reason`` defaults of its own) and ``ListingPlugin``, then in ``on_message``::

    skipped = self.skip_if_too_large(message)
    if skipped is not None:
        return skipped
    async with self.limiter:
        ...  # run the program
    return when_listed(self.config, AddHeader(self.config.tag_header, ...), findings)
"""

from __future__ import annotations

import shutil
from typing import Final, Literal, TypeVar

import trio
from pydantic import Field, field_validator

from filterd.model.edits import AddHeader
from filterd.model.findings import Finding
from filterd.model.message import MessageView
from filterd.model.reply import Reply
from filterd.model.verdict import Continue, Quarantine, Reject, Verdict
from filterd.sdk.plugin import Plugin, PluginConfig

__all__ = ["DEFAULT_MAX_SIZE", "ListingConfig", "ListingPlugin", "program_on_path", "when_listed"]

DEFAULT_MAX_SIZE: Final = 512_000  # spamc's default: larger mail is rarely spam


def program_on_path(command: str, package: str) -> str:
    """``command`` if it is an executable (a name on PATH, or a path); else a ValueError that
    names the Debian package to install."""
    if shutil.which(command) is None:
        raise ValueError(
            f'"{command}" is not an executable on PATH (Debian: apt-get install {package})'
        )
    return command


class ListingConfig(PluginConfig):
    max_parallel: int = Field(default=4, ge=1, description="Checking processes at a time.")
    max_size: int = Field(
        default=DEFAULT_MAX_SIZE, ge=0, description="Larger messages are not checked."
    )
    action_when_listed: Literal["tag", "quarantine", "reject"] = Field(
        default="tag",
        description='"tag": add tag_header; "quarantine": quarantine (tagged); "reject": 550.',
    )
    tag_header: str = Field(description="Header added to listed mail.")
    reject_text: str = Field(
        description="Text of the 550 5.7.1 reply when action_when_listed is reject."
    )
    quarantine_reason: str = Field(description="Quarantine reason.")

    @field_validator("tag_header")
    @classmethod
    def _header_name_is_valid(cls, name: str) -> str:
        AddHeader(name, "")  # printable ASCII, no colon
        return name

    @field_validator("reject_text")
    @classmethod
    def _reply_text_is_valid(cls, text: str) -> str:
        Reply(550, "5.7.1", text)
        return text


ListingConfigT = TypeVar("ListingConfigT", bound=ListingConfig)


class ListingPlugin(Plugin[ListingConfigT]):
    """At most ``max_parallel`` checks at a time (``limiter``, made by ``start``)."""

    _limiter: trio.CapacityLimiter | None = None

    async def start(self) -> None:
        self._limiter = trio.CapacityLimiter(self.config.max_parallel)

    @property
    def limiter(self) -> trio.CapacityLimiter:
        if self._limiter is None:
            raise RuntimeError(f"the {self.name} plugin was not started")
        return self._limiter

    def skip_if_too_large(self, message: MessageView) -> Continue | None:
        """A Continue with a ``<name>.skipped`` finding (and a log line) for a message over
        ``max_size``; None for one to check."""
        max_size = self.config.max_size
        if message.size <= max_size:
            return None
        self.env.log.info(
            f"{self.name}: not checked: message larger than max_size",
            size=message.size,
            max_size=max_size,
        )
        detail = f"not checked: size {message.size} > max_size {max_size}"
        return Continue(findings=(Finding(f"{self.name}.skipped", detail),))


def when_listed(config: ListingConfig, tag: AddHeader, findings: tuple[Finding, ...]) -> Verdict:
    """The verdict for a listed message, by ``action_when_listed``."""
    match config.action_when_listed:
        case "reject":
            return Reject(Reply(550, "5.7.1", config.reject_text), findings)
        case "quarantine":
            return Quarantine(config.quarantine_reason, (tag,), findings)
        case _:
            return Continue((tag,), findings)
