"""The ratelimit plugin's settings: a list of limits and where the counters live."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from filterd.sdk import ByteSize, Duration, Field, PluginConfig, field_validator, model_validator
from filterd.sdk.access_actions import AccessKind, parse_access_action
from filterd.sdk.state import StateSettings

KeyKind = Literal["sender", "client", "recipient", "sasl_username"]
Counted = Literal["messages", "recipients", "bytes"]

DEFAULT_ACTION = "DEFER 4.7.1 Rate limit exceeded: more than {limit} {count} per {window}"


def _state() -> StateSettings:
    return StateSettings(path=Path("/var/lib/filterd/ratelimit.sqlite"))


class Limit(PluginConfig):
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The limit's name: in its store keys, log lines and metrics "
        "(letters, digits, _ . -).",
    )
    key: KeyKind = Field(
        description="What is counted per: sender (the envelope sender, lower case; <> is "
        'counted as ""), client (its address, or network with client_ipv4_prefix / '
        "client_ipv6_prefix), recipient, sasl_username (mail without a login is not limited).",
    )
    count: Counted = Field(
        description="messages, recipients (RCPT commands) or bytes (message size).",
    )
    limit: ByteSize = Field(
        ge=0,
        description="Most allowed within the window; more is an excess. A number, or for "
        'bytes also "10MB", "50MiB".',
    )
    window: Duration = Field(ge=1, description='The sliding window, e.g. "1h", "10m", "1d".')
    action: str = Field(
        default=DEFAULT_ACTION,
        description="The access(5) action on excess (DEFER, 4NN/5NN text, REJECT, "
        "DEFER_IF_PERMIT, HOLD, WARN, ...); {limit}, {count}, {window} and {key} are "
        "replaced.",
    )
    client_ipv4_prefix: int = Field(default=32, ge=1, le=32)
    client_ipv6_prefix: int = Field(default=128, ge=1, le=128)

    @field_validator("action")
    @classmethod
    def _action(cls, value: str) -> str:
        parsed = parse_access_action(value.strip())
        if parsed.kind in (AccessKind.UNSUPPORTED, AccessKind.OK):
            raise ValueError(
                f'"{value}" is not an action for an excess: write an access(5) action such as '
                '"DEFER 4.7.1 Rate limit exceeded", "450 4.7.1 Slow down", "REJECT" or '
                '"WARN rate exceeded"'
            )
        return value.strip()


class RateLimitConfig(PluginConfig):
    limits: list[Limit] = Field(
        min_length=1, description="The limits, each counted on its own ([[chain.config.limits]])."
    )
    state: StateSettings = Field(
        default_factory=_state,
        description="Where the counters are kept: "
        '{ backend = "sqlite", path = "/var/lib/filterd/ratelimit.sqlite" } or '
        '{ backend = "redis", url = "redis://127.0.0.1:6379/0" } (several hosts count together).',
    )

    @model_validator(mode="after")
    def _unique_names(self) -> RateLimitConfig:
        seen: set[str] = set()
        for limit in self.limits:
            if limit.name in seen:
                raise ValueError(f'two limits are named "{limit.name}": give each its own name')
            seen.add(limit.name)
        return self
