"""The greylist plugin's settings: postgrey 1.37's options and defaults (postgrey(8)), as TOML."""

from __future__ import annotations

import socket
from pathlib import Path

from filterd.sdk import Duration, Field, PluginConfig, field_validator
from filterd.sdk.state import StateSettings

DAY = 86_400.0
POSTGREY_DIR = Path("/etc/postgrey")


def _clients_files() -> list[Path]:
    return [POSTGREY_DIR / "whitelist_clients", POSTGREY_DIR / "whitelist_clients.local"]


def _recipients_files() -> list[Path]:
    return [POSTGREY_DIR / "whitelist_recipients", POSTGREY_DIR / "whitelist_recipients.local"]


def _state() -> StateSettings:
    return StateSettings(path=Path("/var/lib/filterd/greylist.sqlite"))


class GreylistConfig(PluginConfig):
    delay: Duration = Field(
        default=300.0, ge=1, description="Greylist a new triplet this long (--delay)."
    )
    max_age: Duration = Field(
        default=35 * DAY,
        ge=1,
        description="Forget a triplet (or auto-whitelisted client) not seen this long (--max-age).",
    )
    retry_window: Duration = Field(
        default=2 * DAY,
        ge=1,
        description="A first retry later than this after the first attempt starts the delay "
        "again; a triplet never passed is forgotten after it (--retry-window).",
    )
    greylist_action: str = Field(
        default="DEFER_IF_PERMIT",
        description="The policy door's action for a greylisted triplet (--greylist-action), "
        'e.g. DEFER_IF_PERMIT, DEFER or "451".',
    )
    greylist_text: str = Field(
        default="Greylisted, see http://postgrey.schweikert.ch/help/%r.html",
        description="Reply text (--greylist-text): %s = seconds left, %r = recipient domain.",
    )
    auto_whitelist_clients: int = Field(
        default=5,
        ge=0,
        description="Whitelist a client (its IP address) after this many triplets passed "
        "greylisting, counted at most once an hour; 0: never (--auto-whitelist-clients).",
    )
    lookup_by_host: bool = Field(
        default=False,
        description="Key triplets by the client's address, not its network (--lookup-by-host).",
    )
    ipv4cidr: int = Field(default=24, ge=1, le=32, description="IPv4 network of a client.")
    ipv6cidr: int = Field(default=64, ge=1, le=128, description="IPv6 network of a client.")
    privacy: bool = Field(
        default=False, description="Store SHA-1 hashes of the keys, not addresses (--privacy)."
    )
    whitelist_clients: list[Path] = Field(
        default_factory=_clients_files,
        description="postgrey's client whitelist files, read unchanged; a missing file is "
        "logged (silently skipped when its name ends in .local).",
    )
    whitelist_recipients: list[Path] = Field(
        default_factory=_recipients_files,
        description="postgrey's recipient whitelist files, read unchanged.",
    )
    x_greylist_header: str = Field(
        default="X-Greylist: delayed %t seconds by filterd-greylist-%v at %h; %d",
        description="Header added to a message that passed greylisting (--x-greylist-header): "
        "%t = seconds delayed, %v = version, %h = host name, %d = date.",
    )
    hostname: str = Field(
        default_factory=socket.gethostname, description="%h in the header (--hostname)."
    )
    state: StateSettings = Field(
        default_factory=_state,
        description="Where triplets and auto-whitelisted clients are kept: "
        '{ backend = "sqlite", path = "/var/lib/filterd/greylist.sqlite" } or '
        '{ backend = "redis", url = "redis://127.0.0.1:6379/0" }.',
    )

    @field_validator("x_greylist_header")
    @classmethod
    def _header_line(cls, value: str) -> str:
        name, colon, _ = value.partition(":")
        if not colon or not name or any(c <= " " or c > "~" for c in name):
            raise ValueError(
                f'expected a header line "Name: value", got "{value}" '
                '(e.g. "X-Greylist: delayed %t seconds by filterd-greylist-%v at %h; %d")'
            )
        return value

    @field_validator("greylist_action")
    @classmethod
    def _action_word(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value.strip()):
            raise ValueError(
                f'expected one access(5) action word such as "DEFER_IF_PERMIT", "DEFER" or '
                f'"451", got "{value}"'
            )
        return value.strip()
