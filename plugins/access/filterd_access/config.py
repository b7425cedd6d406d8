"""The access plugin's settings: the tables per restriction list and the Postfix parameters
that shape the search and the replies (Postfix's defaults)."""

from __future__ import annotations

from filterd.sdk import Field, PluginConfig
from filterd.sdk.tables import TableSpec


class AccessConfig(PluginConfig):
    client: list[TableSpec] = Field(
        default=[],
        description="check_client_access tables, in order: the client's name and parent "
        'domains, then its address and parent networks, e.g. ["hash:/etc/postfix/client_access"]',
    )
    helo: list[TableSpec] = Field(
        default=[], description="check_helo_access tables, in order: the HELO name and its parents"
    )
    sender: list[TableSpec] = Field(
        default=[],
        description="check_sender_access tables, in order: the MAIL FROM address (the null "
        "sender as smtpd_null_access_lookup_key)",
    )
    recipient: list[TableSpec] = Field(
        default=[], description="check_recipient_access tables, in order: each RCPT TO address"
    )
    smtpd_delay_reject: bool = Field(
        default=True,
        description="Postfix's smtpd_delay_reject: check client, HELO and sender at RCPT TO "
        "(the reply names the recipient's command, as Postfix's default does); false: each at "
        "its own stage",
    )
    smtpd_null_access_lookup_key: str = Field(
        default="<>", min_length=1, description="How the null sender is looked up"
    )
    recipient_delimiter: str = Field(
        default="", description='Postfix\'s recipient_delimiter, e.g. "+" or "+-"'
    )
    parent_domain_matches_subdomains: bool = Field(
        default=True,
        description="true when Postfix's parent_domain_matches_subdomains lists "
        "smtpd_access_maps (its default): example.com matches sub.example.com; false: only "
        ".example.com does",
    )
    access_map_reject_code: int = Field(
        default=554, ge=400, le=599, description="The code of REJECT"
    )
    access_map_defer_code: int = Field(
        default=450,
        ge=400,
        le=599,
        description="The code of DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT",
    )
    reject_code: int = Field(
        default=554, ge=400, le=599, description="The code of a `reject` value"
    )
    defer_code: int = Field(default=450, ge=400, le=599, description="The code of a `defer` value")
