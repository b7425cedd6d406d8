"""The spamassassin plugin's settings, and spamd addresses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from filterd.sdk import Field, PluginConfig, Reply, field_validator, model_validator

DEFAULT_MAX_SIZE = 512_000  # spamc's -s default: 500 KB
_USER = re.compile(r"[!-~]{1,255}")  # what filterd's spamd codec (and spamd) accept

SpamdTarget = tuple[str, int] | str
"""``(host, port)`` for TCP, or a unix socket path."""


def parse_address(address: str) -> SpamdTarget:
    """``host:port``, ``[v6]:port`` or ``unix:/path`` → ``(host, port)`` or the socket path."""
    if address.startswith("unix:"):
        path = address.removeprefix("unix:")
        if not path:
            raise ValueError('"unix:" needs a socket path, e.g. "unix:/run/spamd.sock"')
        return path
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'expected "host:port" or "unix:/path", got "{address}"')
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f'unbalanced brackets in "{address}"')
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f'write an IPv6 address in brackets: "[{host}]:{port}"')
    return host, int(port)


class SpamAssassinConfig(PluginConfig):
    address: str = Field(
        default="127.0.0.1:783",
        description='spamd: "host:port", "[ipv6]:port" or "unix:/path/to/socket".',
    )
    max_connections: int = Field(
        default=5,
        ge=1,
        description="Requests to spamd at a time; set it to spamd's --max-children (default 5).",
    )
    user: str | None = Field(
        default=None, description="The User spamd scans for (its per-user settings), like spamc -u."
    )
    tls: bool = Field(default=False, description="Talk TLS to spamd (spamd --ssl); TCP only.")
    ca_file: str | None = Field(
        default=None, description="CA certificates for spamd's TLS certificate (default: system)."
    )
    mode: Literal["symbols", "headers", "process"] = Field(
        default="symbols",
        description='"symbols": SYMBOLS, and the plugin writes X-Spam-Flag/-Score/-Level/-Status; '
        '"headers": HEADERS, and spamd\'s own X-Spam-* headers are copied; "process": PROCESS, '
        "and the message is rewritten exactly as spamd returns it.",
    )
    max_size: int = Field(
        default=DEFAULT_MAX_SIZE,
        ge=0,
        description="Larger messages are not scanned (logged and passed on), like spamc -s.",
    )
    add_headers: bool = Field(
        default=True, description='Add the X-Spam-* headers (modes "symbols" and "headers").'
    )
    quarantine_score: float | None = Field(
        default=None, description="Quarantine messages scoring at least this (unset: never)."
    )
    reject_score: float | None = Field(
        default=None, description="Reject messages scoring at least this (unset: never)."
    )
    reject_text: str = Field(
        default="Message content rejected as spam",
        description="The text of the 550 5.7.1 reply to a message over reject_score.",
    )
    quarantine_reason: str = Field(
        default="spam", description="The reason logged (and stored) for quarantined messages."
    )

    @field_validator("address")
    @classmethod
    def _address_parses(cls, address: str) -> str:
        parse_address(address)
        return address

    @field_validator("user")
    @classmethod
    def _user_is_valid(cls, user: str | None) -> str | None:
        if user is not None and not _USER.fullmatch(user):
            raise ValueError("the spamd user must be 1-255 printable ASCII characters, no spaces")
        return user

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, ca_file: str | None) -> str | None:
        if ca_file is not None and not Path(ca_file).is_file():
            raise ValueError(f'CA file "{ca_file}" does not exist')
        return ca_file

    @field_validator("reject_text")
    @classmethod
    def _reply_text_is_valid(cls, text: str) -> str:
        Reply(550, "5.7.1", text)
        return text

    @model_validator(mode="after")
    def _consistent(self) -> SpamAssassinConfig:
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file is only used with tls = true")
        if self.tls and isinstance(parse_address(self.address), str):
            raise ValueError("spamd offers TLS on TCP listeners only, not on unix sockets")
        if (
            self.quarantine_score is not None
            and self.reject_score is not None
            and self.reject_score < self.quarantine_score
        ):
            raise ValueError("reject_score must not be below quarantine_score")
        return self
