"""The configuration schema: every setting, once, with its default and what it means.

Models are frozen and refuse unknown keys. ``config.load`` turns a TOML file into a ``Config`` and
pydantic's errors into ``ConfigError``s. Rules spanning several keys raise ``rule_error``: its
context names the offending key (``loc``, relative to the model) and the fix (``hint``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from filterd.config.types import (
    ByteSize,
    ClientPattern,
    DomainPattern,
    Duration,
    Endpoint,
    HostName,
    IPNetwork,
    SocketAddress,
    TableRef,
    parse_hostname,
    show_value,
)

__all__ = [
    "MAX_PROCESSES",
    "ChainEntryConfig",
    "Config",
    "ControlConfig",
    "DeliveryConfig",
    "FilingRule",
    "LimitsConfig",
    "ListenConfig",
    "LogConfig",
    "MaildirDelivery",
    "MetricsConfig",
    "PipeConfig",
    "QuarantineConfig",
    "RelayDelivery",
    "RunConfig",
    "cpu_count",
    "is_maildir_folder",
    "rule_error",
]

LISTEN_HINT = 'add a [[listen]] table with address = "127.0.0.1:10025"'
"""The fix for a configuration without listeners (``filterd run`` needs one)."""

Count = Annotated[int, Field(strict=True)]
"""An integer as TOML writes it: ``true``, ``"100"`` and ``100.0`` are refused."""
Flag = Annotated[bool, Field(strict=True)]
"""A TOML boolean: ``true`` or ``false``, nothing else."""

MAX_PROCESSES = 64
"""The most processes one listener may have (``processes = "auto"`` included)."""

LOOPBACK = (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"))
"""This machine's own addresses: the default ``xforward_hosts`` and ``mynetworks``."""

RELAY_KEYS = ("mynetworks", "relay_domains", "auth_socket", "open_relay")
"""The settings of an smtp or lmtp listener's relay control."""


def _processes(value: object) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PROCESSES:
        return value
    raise rule_error(
        (),
        f'expected a number of processes from 1 to {MAX_PROCESSES}, or "auto", got '
        f"{show_value(value)}",
        'write processes = "auto" (one per CPU this filterd may run on) or a number such as 4',
    )


Processes = Annotated[int | Literal["auto"], PlainValidator(_processes)]
"""``processes``: 1 to ``MAX_PROCESSES``, or ``"auto"``."""


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, which a container or ``taskset``
    narrows), at most ``MAX_PROCESSES``."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_PROCESSES))


def rule_error(loc: tuple[str | int, ...], reason: str, hint: str) -> PydanticCustomError:
    """An error for a rule pydantic cannot express, located at ``loc`` below the current model."""
    return PydanticCustomError(
        "config_rule", "{reason}", {"reason": reason, "hint": hint, "loc": loc}
    )


def _at_least(value: int, minimum: int, why: str) -> int:
    if value < minimum:
        raise rule_error((), f"must be at least {minimum}, got {value}", why)
    return value


def _existing_file(path: Path | None, what: str) -> Path | None:
    if path is not None and not path.is_file():
        state = "is not a regular file" if path.exists() else "does not exist"
        raise rule_error((), f'{what} "{path}" {state}', f"give the path of an existing {what}")
    return path


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SyslogFacility = Literal[
    "mail", "daemon", "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
]  # fmt: skip


class LogConfig(_Section):
    """``[log]``: how much filterd logs, and where (``filterd.maillog``)."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level logged: debug, info, warning or error."
    )
    destination: Literal["stderr", "syslog", "journal"] = Field(
        default="stderr",
        description="Where the lines go: stderr (timestamped as rsyslog writes its files; "
        "when stderr is the systemd journal's stream, to the journal), syslog (the socket "
        "/dev/log) or journal (systemd-journald's native protocol).",
    )
    facility: SyslogFacility = Field(
        default="mail", description="syslog facility of the lines (syslog and journal)."
    )
    socket: Path | None = Field(
        default=None,
        description="The log socket, for syslog (default /dev/log) or journal (default "
        "/run/systemd/journal/socket).",
        examples=["/dev/log"],
    )
    syslog_name: str = Field(
        default="filterd",
        description='Program name of the lines, before "/component" ("filterd/smtpd"), as '
        "Postfix's syslog_name: give each filterd on a host its own (pflogsumm "
        "--syslog-name=NAME reads them).",
    )

    @model_validator(mode="after")
    def _socket_needs_a_socket_destination(self) -> LogConfig:
        if self.socket is not None and self.destination == "stderr":
            raise rule_error(
                ("socket",),
                'socket is for destination = "syslog" or "journal", and destination is "stderr"',
                'set destination = "syslog" (or "journal"), or remove socket',
            )
        return self

    @field_validator("syslog_name")
    @classmethod
    def _program_name(cls, value: str) -> str:
        if not _SYSLOG_NAME.fullmatch(value):
            raise rule_error(
                (),
                "a program name is up to 64 letters, digits, '.', '_' and '-', got "
                + show_value(value),
                'write a name such as syslog_name = "filterd-in"',
            )
        return value


_SYSLOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ListenConfig(_Section):
    """``[[listen]]``: one listening socket speaking SMTP or LMTP to Postfix."""

    address: SocketAddress = Field(
        description='Where to listen: "host:port", "[ipv6]:port" or "unix:/path".',
        examples=["127.0.0.1:10025"],
    )
    protocol: Literal["smtp", "lmtp", "policy", "milter"] = Field(
        default="smtp",
        description="Protocol spoken to clients on this socket: smtp, lmtp, policy "
        "(Postfix's check_policy_service) or milter (Postfix's smtpd_milters).",
    )
    hostname: HostName = Field(
        default="localhost",
        description='Our name in the greeting, the EHLO reply and the "by" clause of our '
        "Received header.",
    )
    max_connections: Count = Field(
        default=100,
        ge=1,
        description="Concurrent connections, in all of this listener's processes together; more "
        "are answered 421 and closed.",
    )
    xforward_hosts: tuple[IPNetwork, ...] = Field(
        default=LOOPBACK,
        description="Clients allowed to send XFORWARD (Postfix smtp_send_xforward_command).",
    )
    mynetworks: tuple[ClientPattern, ...] = Field(
        default=LOOPBACK,
        description="smtp and lmtp listeners: clients that may send to any domain (Postfix "
        "mynetworks); others may send only to relay_domains unless they authenticate "
        "(auth_socket). Networks, or lookup tables as Postfix's mynetworks takes them "
        '("cidr:/etc/postfix/mynetworks.cidr": a client whose address the table finds). The '
        "default, this machine's loopback addresses, suits a content filter that the local "
        "Postfix feeds. Decided on the connecting address, never on XFORWARD.",
        examples=[["127.0.0.0/8", "192.0.2.0/24"]],
    )
    relay_domains: tuple[DomainPattern, ...] = Field(
        default=(),
        description="smtp and lmtp listeners: domains every client may send to (Postfix "
        'relay_domains): "example.org" is example.org and its subdomains, ".example.org" only '
        "its subdomains. An address with sender-specified routing (user%host@, user@host@, "
        "host!user@) matches none of them.",
        examples=[["example.org"]],
    )
    auth_socket: SocketAddress | None = Field(
        default=None,
        description="smtp and lmtp listeners: Dovecot's auth-client socket (Postfix "
        "smtpd_sasl_type = dovecot with smtpd_sasl_path). Set, SMTP AUTH PLAIN and LOGIN are "
        "offered after STARTTLS (tls_cert, tls_key) and checked there; a client that "
        "authenticates may send to any domain.",
        examples=["unix:/run/dovecot/auth-filterd"],
    )
    open_relay: Flag = Field(
        default=False,
        description="smtp and lmtp listeners: no relay control, every client that reaches "
        "this listener may send to any domain. Only behind a firewall that lets nothing but "
        "your own mail servers in: filterd refuses to start a listener on an address other "
        "than loopback with none of mynetworks, relay_domains, auth_socket or open_relay.",
    )
    processes: Processes = Field(
        default=1,
        description="Processes that serve this listener, this one included, each with its own "
        'plugins and caches; more than one uses more CPU cores. "auto": one per CPU this '
        "filterd may run on. A new connection goes to the process with the fewest (milter: "
        "to whichever process accepts it first).",
    )
    accept_as_ok: Flag = Field(
        default=False,
        description="policy listeners: answer a plugin's Accept with OK (ends Postfix's "
        "restriction list, which can open a relay) instead of DUNNO.",
    )
    add_received_header: Flag = Field(
        default=True, description="Prepend a Received header to each message accepted here."
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate chain for STARTTLS; STARTTLS is offered iff tls_cert and "
        "tls_key are both set.",
        examples=["/etc/filterd/cert.pem"],
    )
    tls_key: Path | None = Field(
        default=None, description="PEM private key for tls_cert.", examples=["/etc/filterd/key.pem"]
    )

    @field_validator("tls_cert")
    @classmethod
    def _cert_exists(cls, value: Path | None) -> Path | None:
        return _existing_file(value, "certificate file")

    @field_validator("tls_key")
    @classmethod
    def _key_exists(cls, value: Path | None) -> Path | None:
        return _existing_file(value, "key file")

    @model_validator(mode="after")
    def _tls_pair(self) -> ListenConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            present = "tls_cert" if self.tls_key is None else "tls_key"
            raise rule_error(
                (present,),
                f"{present} is set but {missing} is not",
                "set both tls_cert and tls_key to offer STARTTLS, or neither",
            )
        return self

    @model_validator(mode="after")
    def _relay_control(self) -> ListenConfig:
        changed = self.relay_settings()
        if self.protocol in ("policy", "milter") and changed:
            raise rule_error(
                (changed[0],),
                f"{changed[0]} applies to smtp and lmtp listeners (a {self.protocol} listener "
                "relays nothing)",
                f"remove {changed[0]} from this [[listen]] table",
            )
        if self.open_relay and len(changed) > 1:
            other = next(key for key in changed if key != "open_relay")
            raise rule_error(
                ("open_relay",),
                f"open_relay = true lets every client relay: {other} would change nothing",
                f"remove open_relay to restrict relaying with {other}, or remove {other}",
            )
        everyone = next(
            (
                net
                for net in self.mynetworks
                if not isinstance(net, TableRef) and net.prefixlen == 0
            ),
            None,
        )
        if everyone is not None:
            raise rule_error(
                ("mynetworks",),
                f'mynetworks "{everyone}" lets every client relay',
                "list the networks of your own mail servers, or write open_relay = true if "
                "every client that reaches this listener may relay",
            )
        if self.auth_socket is not None and not self.tls_enabled:
            raise rule_error(
                ("auth_socket",),
                "SMTP AUTH is offered only after STARTTLS, and this listener has no TLS",
                "set tls_cert and tls_key on this [[listen]] table, or remove auth_socket",
            )
        return self

    def relay_settings(self) -> list[str]:
        """The relay control settings that differ from their defaults (``RELAY_KEYS`` order)."""
        changed = {
            "mynetworks": self.mynetworks != LOOPBACK,
            "relay_domains": bool(self.relay_domains),
            "auth_socket": self.auth_socket is not None,
            "open_relay": self.open_relay,
        }
        return [key for key in RELAY_KEYS if changed[key]]

    @property
    def tls_enabled(self) -> bool:
        """True when STARTTLS is offered (both tls_cert and tls_key set)."""
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def process_count(self) -> int:
        """``processes`` as a number: ``"auto"`` is ``cpu_count()``."""
        return cpu_count() if self.processes == "auto" else self.processes


class LimitsConfig(_Section):
    """``[limits]``: time, size and abuse limits on inbound sessions."""

    command_timeout: Duration = Field(
        default=300.0, description="Time allowed for each command (Postfix smtpd_timeout)."
    )
    data_timeout: Duration = Field(
        default=300.0,
        description="Deadline for each block of DATA, extended by the bytes received at "
        "min_data_rate.",
    )
    min_data_rate: Count = Field(
        default=500,
        ge=1,
        description="Bytes per second that extend the DATA deadline (Postfix smtpd_min_data_rate).",
    )
    tls_handshake_timeout: Duration = Field(
        default=30.0, description="Time allowed for the TLS handshake after STARTTLS."
    )
    max_message_size: ByteSize = Field(
        default=52_428_800, description="Largest message accepted, in bytes; 0 means unlimited."
    )
    max_recipients: Count = Field(
        default=1000, description="Recipients per transaction; more get 452 4.5.3."
    )
    max_command_line: Count = Field(
        default=512, description="Longest command line in bytes, CRLF included."
    )
    max_text_line: Count = Field(
        default=1000, description="Longest line of message text in bytes, CRLF included."
    )
    max_errors: Count = Field(
        default=20, ge=1, description="Bad commands tolerated before 421 and disconnect."
    )
    max_auth_failures: Count = Field(
        default=3,
        ge=1,
        description="Failed SMTP AUTH attempts on one connection before 421 and disconnect.",
    )
    auth_failure_delay: Duration = Field(
        default=1.0,
        description="Wait before answering a failed SMTP AUTH attempt (on top of Dovecot's "
        "own delay), to slow password guessing.",
    )
    bare_newline: Literal["reject", "normalize"] = Field(
        default="reject",
        description="A bare LF or CR in a command or in DATA: reject it, or normalize it to CRLF.",
    )
    spool_memory: ByteSize = Field(
        default=1_048_576,
        description="Message bytes kept in memory before spooling to a temporary file.",
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Directory for spooled messages; unset means the system temporary directory.",
        examples=["/var/spool/filterd"],
    )
    shutdown_grace: Duration = Field(
        default=30.0,
        description="On shutdown, time sessions in the middle of a message get to finish it.",
    )
    milter_command_timeout: Duration = Field(
        default=25.0,
        description="milter listeners: time the chain gets at connect, HELO, MAIL and RCPT; "
        "keep it under Postfix's milter_command_timeout (30s), which then defers the message.",
    )
    milter_content_timeout: Duration = Field(
        default=280.0,
        description="milter listeners: time the chain gets at end of message; keep it under "
        "Postfix's milter_content_timeout (300s).",
    )
    policy_request_timeout: Duration = Field(
        default=90.0,
        description="policy listeners: first byte of a request to its answer; keep it under "
        "Postfix's smtpd_policy_service_timeout (100s).",
    )
    policy_idle_timeout: Duration = Field(
        default=330.0,
        description="policy listeners: time between requests; keep it over Postfix's "
        "smtpd_policy_service_max_idle (300s) so that Postfix closes idle connections.",
    )

    @field_validator("max_recipients")
    @classmethod
    def _rfc_recipients(cls, value: int) -> int:
        return _at_least(value, 100, "RFC 5321 §4.5.3.1.8 requires accepting at least 100")

    @field_validator("max_command_line")
    @classmethod
    def _rfc_command_line(cls, value: int) -> int:
        return _at_least(value, 512, "RFC 5321 §4.5.3.1.4 allows command lines of 512 bytes")

    @field_validator("max_text_line")
    @classmethod
    def _rfc_text_line(cls, value: int) -> int:
        return _at_least(value, 1000, "RFC 5321 §4.5.3.1.6 allows text lines of 1000 bytes")


class RelayDelivery(_Section):
    """``[delivery] method = "relay"``: pass accepted mail to a next hop over SMTP or LMTP."""

    method: Literal["relay"] = Field(default="relay", description='Delivery method: "relay".')
    next_hop: SocketAddress = Field(
        description="The SMTP or LMTP server that receives filtered mail (Postfix's "
        "re-injection smtpd, usually).",
        examples=["127.0.0.1:10026"],
    )
    protocol: Literal["smtp", "lmtp"] = Field(
        default="smtp", description="Protocol spoken to the next hop: smtp or lmtp."
    )
    helo_name: HostName = Field(default="localhost", description="Our name in EHLO/LHLO.")
    connect_timeout: Duration = Field(
        default=30.0, description="Time allowed to connect and read the greeting."
    )
    command_timeout: Duration = Field(
        default=300.0, description="Time allowed for each command's reply."
    )
    data_timeout: Duration = Field(
        default=600.0, description="Time allowed for sending the message and its final reply."
    )
    pool_size: Count = Field(default=20, ge=1, description="Most connections open to the next hop.")
    pool_idle_timeout: Duration = Field(
        default=60.0, description="Idle pooled connections are closed after this long."
    )
    starttls: Literal["never", "opportunistic", "required"] = Field(
        default="never",
        description="Use STARTTLS with the next hop: never, opportunistic, required.",
    )
    tls_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle to verify the next hop; unset means the system store.",
        examples=["/etc/ssl/certs/ca-certificates.crt"],
    )
    tls_verify: Flag = Field(default=True, description="Verify the next hop's certificate.")
    send_xforward: Flag = Field(
        default=True,
        description="Forward the original client's name and address with XFORWARD when offered.",
    )
    recipient_maps: tuple[TableSpec, ...] = Field(
        default=(),
        description="relay_recipient_maps: tables of the recipients the next hop accepts; a "
        "recipient none of them finds (user+ext@domain, user@domain, @domain) is refused at "
        "RCPT (550 5.1.1 User unknown in relay recipient table), a table that cannot answer "
        "gives 451 4.3.0. Empty: every recipient goes to the next hop, which decides.",
        examples=[["mysql:/etc/postfix/mysql-relay-recipients.cf"]],
    )

    @field_validator("next_hop")
    @classmethod
    def _real_port(cls, value: SocketAddress) -> SocketAddress:
        if value.kind == "tcp" and value.port == 0:
            raise rule_error((), "port 0 cannot be connected to", "give the next hop's real port")
        return value

    @field_validator("tls_ca_file")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        return _existing_file(value, "CA file")


def _table_name(value: object) -> str:
    """A table's name as written; filterd.sdk.tables parses it when the delivery opens it
    (the configuration is below the SDK and cannot)."""
    if isinstance(value, str) and ":" in value.strip(":"):
        return value
    raise rule_error(
        (),
        f"expected a lookup table as type:name, got {show_value(value)}",
        'write a table name such as "mysql:/etc/postfix/mysql-virtual-mailbox.cf"',
    )


TableSpec = Annotated[str, PlainValidator(_table_name), WithJsonSchema({"type": "string"})]
"""A Postfix lookup table, ``type:name`` (``filterd.sdk.tables``)."""


def _mailbox_domain(value: object) -> str | TableRef:
    """A domain (lower case), or a lookup table whose keys are domains (``type:name``)."""
    if isinstance(value, TableRef):
        return value
    if isinstance(value, str) and ":" in value.strip(":"):
        return TableRef(_table_name(value.strip()))
    try:
        return parse_hostname(value).lower().rstrip(".")
    except PydanticCustomError:
        raise rule_error(
            (),
            f"expected a domain or a lookup table, got {show_value(value)}",
            'write a domain such as "example.org", or a table such as '
            '"mysql:/etc/postfix/mysql-virtual-mailbox-domains.cf"',
        ) from None


MailboxDomain = Annotated[
    str | TableRef,
    PlainValidator(_mailbox_domain),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "examples": ["example.org", "mysql:/etc/postfix/d.cf"]}),
]
"""A domain, or a table of domains (Postfix's virtual_mailbox_domains entries)."""

_MAILDIR_FOLDER = re.compile(r"\.[^./\x00-\x1f\x7f][^/\x00-\x1f\x7f]*")


def is_maildir_folder(name: str) -> bool:
    """A Maildir++ folder name: a dot, then a name without slash, control character, empty
    part or final dot (``.Junk``, ``.Lists.filterd``)."""
    return bool(_MAILDIR_FOLDER.fullmatch(name)) and ".." not in name and not name.endswith(".")


class FilingRule(_Section):
    """``[[delivery.filing]]``: one rule that files a message into a Maildir++ folder."""

    header: str | None = Field(
        default=None,
        description='A header of the message as delivered: "Name: value" matches a header of '
        "that name whose value is that text (case and surrounding white space ignored), "
        '"Name" alone any header of that name.',
        examples=["X-Spam-Flag: YES"],
    )
    finding: str | None = Field(
        default=None,
        description="A finding of the plugin chain by name (the spamassassin plugin reports "
        '"spamassassin" with the spam score); matches when the message has it, and its score '
        "is at least score when that is set.",
        examples=["spamassassin"],
    )
    score: float | None = Field(
        default=None,
        description="With finding: the least score of the finding that matches.",
        examples=[5.0],
    )
    folder: str = Field(
        description='The Maildir++ folder the message goes to, such as ".Junk"; created with '
        "tmp, new and cur when it does not exist.",
        examples=[".Junk"],
    )

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        if not is_maildir_folder(value):
            raise rule_error(
                (),
                f"{show_value(value)} is not a Maildir++ folder name",
                'write a dot and a name, such as ".Junk" (subfolders: ".Lists.filterd")',
            )
        return value

    @model_validator(mode="after")
    def _one_condition(self) -> FilingRule:
        if (self.header is None) == (self.finding is None):
            raise rule_error(
                ("header",),
                "a filing rule needs exactly one of header and finding",
                'write header = "X-Spam-Flag: YES", or finding = "spamassassin" with score = 5.0',
            )
        if self.score is not None and self.finding is None:
            raise rule_error(
                ("score",),
                "score is the least score of a finding, and this rule has none",
                'add finding = "spamassassin" (the plugin whose score counts), or remove score',
            )
        if self.header is not None and not _HEADER_NAME.fullmatch(self.header.partition(":")[0]):
            raise rule_error(
                ("header",),
                f"{show_value(self.header)} does not start with a header name",
                'write "Name: value" or "Name", such as "X-Spam-Flag: YES"',
            )
        return self


_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")


class MaildirDelivery(_Section):
    """``[delivery] method = "maildir"``: deliver accepted mail into Maildirs as Postfix's
    virtual(8) does (its settings, without the virtual_ prefix)."""

    method: Literal["maildir"] = Field(default="maildir", description='Delivery method: "maildir".')
    mailbox_base: Path = Field(
        default=Path("./var/mail"),
        description="virtual_mailbox_base: the directory every Maildir is under. Without "
        "mailbox_maps, mail for user@domain goes to mailbox_base/domain/user/ (tmp, new, cur); "
        "a local part in UTF-8 (SMTPUTF8) is stored under a reversible ASCII name: every byte "
        'of its UTF-8 form that is not ASCII, and every "%", as %XX (upper-case hex), so '
        '"ünï" is "%C3%BCn%C3%AF"; a domain in UTF-8 under its IDNA (xn--) form. A relative '
        "path is relative to the directory filterd starts in.",
        examples=["/var/mail/vhosts"],
    )
    root: Path | None = Field(
        default=None,
        description="Deprecated: the former name of mailbox_base (write one of them).",
        examples=["/var/lib/filterd/mail"],
    )
    mailbox_domains: tuple[MailboxDomain, ...] = Field(
        default=(),
        description="virtual_mailbox_domains: the domains whose users have Maildirs here, "
        'as names or lookup tables whose keys are domains ("mysql:/etc/postfix/'
        'mysql-virtual-mailbox-domains.cf": the domain itself is looked up); mail for other '
        "domains is refused at RCPT (554 5.7.1 Relay access denied). Empty: every domain.",
        examples=[["example.org", "example.net"]],
    )
    alias_domains: tuple[MailboxDomain, ...] = Field(
        default=(),
        description="virtual_alias_domains: domains whose every address is an alias "
        "(alias_maps); an address there that no alias names is refused at RCPT (550 5.1.1 "
        "User unknown in virtual alias table). Names or tables, as mailbox_domains. Empty: "
        "none (Postfix's default, $virtual_alias_maps, is written alias_domains = the same "
        "tables as alias_maps).",
        examples=[["alias.example.org"]],
    )
    mailbox_maps: tuple[TableSpec, ...] = Field(
        default=(),
        description="virtual_mailbox_maps: tables from the recipient address to its mailbox "
        'path under mailbox_base (a trailing "/" means Maildir). Empty: every user of '
        "mailbox_domains has a Maildir at mailbox_base/domain/user/.",
        examples=[["mysql:/etc/postfix/mysql-virtual-mailbox-maps.cf"]],
    )
    alias_maps: tuple[TableSpec, ...] = Field(
        default=(),
        description="virtual_alias_maps: tables from an address to the addresses it is "
        "delivered to (one to many, catch-all @domain).",
        examples=[["mysql:/etc/postfix/mysql-virtual-alias-maps.cf"]],
    )
    alias_expansion_limit: Count = Field(
        default=1000,
        ge=1,
        description="virtual_alias_expansion_limit: most addresses one recipient may expand "
        "into through alias_maps; more defers its mail (451 4.6.0 Alias expansion error).",
    )
    alias_recursion_limit: Count = Field(
        default=1000,
        ge=1,
        description="virtual_alias_recursion_limit: deepest nesting of alias_maps expansion "
        "(an alias loop reaches it); deeper defers the mail (451 4.6.0).",
    )
    alias_address_length_limit: Count = Field(
        default=1000,
        ge=1,
        description="virtual_alias_address_length_limit: longest address an alias may give; "
        "longer defers the mail (451 4.6.0).",
    )
    uid_maps: tuple[TableSpec, ...] = Field(
        default=(),
        description="virtual_uid_maps: tables from the recipient to the numeric user id that "
        "owns its Maildir files (filterd running as root). Empty: filterd's own user.",
        examples=[["static:5000"]],
    )
    gid_maps: tuple[TableSpec, ...] = Field(
        default=(),
        description="virtual_gid_maps: as uid_maps, for the numeric group id.",
        examples=[["static:5000"]],
    )
    minimum_uid: Count = Field(
        default=100,
        ge=0,
        description="virtual_minimum_uid: a mapped user id below this is a configuration "
        "error (mail is deferred, 451 4.3.5), never a file owned by a system account.",
    )
    mailbox_limit: ByteSize = Field(
        default=0,
        description="virtual_mailbox_limit: the largest Maildir file (the message with the "
        "header lines delivery adds); more is refused 552 5.2.2 (File too large). 0: no "
        "limit beyond limits.max_message_size.",
    )
    mailbox_quota: ByteSize = Field(
        default=0,
        description="Most bytes one mailbox may hold (the files in new and cur of the Maildir "
        "and its folders); a message that would go over is refused 552 5.2.2 (Disk quota "
        'exceeded), or 452 4.2.2 with over_quota = "defer". 0: no quota.',
    )
    over_quota: Literal["bounce", "defer"] = Field(
        default="bounce",
        description="A mailbox over quota: bounce (552 5.2.2, as virtual(8)) or defer (452 "
        "4.2.2, as with Postfix's soft_bounce: the sender's server retries).",
    )
    recipient_delimiter: str = Field(
        default="",
        description='recipient_delimiter: characters that start an address extension ("+": '
        "user+tag@domain goes to user@domain's mailbox). Empty: no extensions.",
        examples=["+"],
    )
    extension_folders: Flag = Field(
        default=False,
        description="With recipient_delimiter: user+tag@domain goes into the folder .tag of "
        "the mailbox when that folder exists (else into the inbox).",
    )
    filing: tuple[FilingRule, ...] = Field(
        default=(),
        description="Filing rules, in order: the first that matches files the message into "
        "its folder (e.g. spam into .Junk, as a Sieve script would); none: the inbox.",
    )

    @field_validator("mailbox_base", "root")
    @classmethod
    def _base_not_a_file(cls, value: Path | None) -> Path | None:
        if value is not None and value.exists() and not value.is_dir():
            raise rule_error(
                (), f'"{value}" exists and is not a directory', "give a directory for the Maildirs"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _root_or_mailbox_base(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("root") is not None and "mailbox_base" in data:
            raise rule_error(
                ("root",),
                "root and mailbox_base are the same setting (root is its former name)",
                "remove root and keep mailbox_base",
            )
        return data

    @model_serializer(mode="wrap")
    def _write_one_base(self, write: SerializerFunctionWrapHandler) -> dict[str, object]:
        """With the deprecated root set, the effective configuration writes root alone."""
        data: dict[str, object] = write(self)
        if self.root is not None:
            data.pop("mailbox_base", None)
        return data

    @model_validator(mode="after")
    def _extension_needs_delimiter(self) -> MaildirDelivery:
        if self.extension_folders and not self.recipient_delimiter:
            raise rule_error(
                ("extension_folders",),
                "extension_folders needs a recipient_delimiter (there is no extension)",
                'set recipient_delimiter = "+", or remove extension_folders',
            )
        return self

    @property
    def base(self) -> Path:
        """Where the Maildirs are: mailbox_base, or the deprecated root when that is set."""
        return self.root if self.root is not None else self.mailbox_base

    @property
    def base_key(self) -> str:
        """The name of the setting ``base`` came from, for messages: ``delivery.root`` or
        ``delivery.mailbox_base``."""
        return "delivery.root" if self.root is not None else "delivery.mailbox_base"

    @property
    def maps(self) -> dict[str, tuple[str, ...]]:
        """The lookup tables that are set, by setting name."""
        named = {
            "mailbox_maps": self.mailbox_maps,
            "alias_maps": self.alias_maps,
            "uid_maps": self.uid_maps,
            "gid_maps": self.gid_maps,
        }
        return {name: tables for name, tables in named.items() if tables}

    @property
    def domain_tables(self) -> dict[str, tuple[str, ...]]:
        """The lookup tables in mailbox_domains and alias_domains, by setting name."""
        named = {
            "mailbox_domains": tuple(
                str(d) for d in self.mailbox_domains if isinstance(d, TableRef)
            ),
            "alias_domains": tuple(str(d) for d in self.alias_domains if isinstance(d, TableRef)),
        }
        return {name: tables for name, tables in named.items() if tables}


class ChainEntryConfig(_Section):
    """``[[chain]]``: one plugin in the chain; the chain runs in the order of these tables."""

    plugin: str = Field(
        description="The plugin's name, as its package declares it under the filterd.plugins "
        "entry point (`filterd plugins` lists them).",
        examples=["header_checks"],
    )
    name: str | None = Field(
        default=None,
        description="A label for logs, to tell two entries of the same plugin apart.",
        examples=["outbound-headers"],
    )
    timeout: Duration = Field(
        default=30.0, description="Longest time one stage of this plugin may take."
    )
    on_error: Literal["tempfail", "continue", "reject"] = Field(
        default="tempfail",
        description="What a crash or timeout of this plugin means: tempfail (451, the default), "
        "continue (log and go on), or reject (5xx).",
    )
    concurrency: Count = Field(
        default=100, description="Most messages this entry works on at the same time."
    )
    config: dict[str, object] = Field(
        default_factory=dict, description="The plugin's own settings (its schema validates them)."
    )

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, value: int) -> int:
        return _at_least(value, 1, "concurrency must allow at least one message")

    @property
    def label(self) -> str:
        return self.name or self.plugin


class QuarantineConfig(_Section):
    """``[quarantine]``: where messages with a Quarantine verdict are kept (the SMTP proxy)."""

    root: Path = Field(
        default=Path("./var/quarantine"),
        description="A Maildir (tmp, new, cur) for quarantined messages; relative to the "
        "directory filterd starts in.",
    )
    max_age: Duration | None = Field(
        default=None,
        description="Messages quarantined longer than this are removed (`filterd run` checks "
        "every tenth of it, at most hourly; `filterd quarantine expire` at once); Postfix's "
        "time units s, m, h, d, w. Unset: kept until released or deleted.",
        examples=["30d"],
    )

    @field_validator("max_age")
    @classmethod
    def _some_age(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise rule_error(
                (),
                f"must be more than zero, got {value:g}s",
                'write an age such as "30d", or leave max_age out to keep messages',
            )
        return value


class MetricsConfig(_Section):
    """``[metrics]``: the Prometheus endpoint (no ``address``: none)."""

    address: SocketAddress | None = Field(
        default=None,
        description='Where to serve Prometheus metrics over HTTP (GET /metrics), "host:port"; '
        "unset: no endpoint (filterd status still shows the figures).",
        examples=["127.0.0.1:9464"],
    )

    @field_validator("address")
    @classmethod
    def _tcp_only(cls, value: Endpoint | None) -> Endpoint | None:
        if value is not None and value.kind != "tcp":
            raise rule_error(
                (),
                f'the metrics endpoint needs a TCP address, got "{value}"',
                'give "host:port", e.g. "127.0.0.1:9464"',
            )
        return value


class ControlConfig(_Section):
    """``[control]``: the local socket ``filterd status`` talks to the running server through."""

    socket: Path = Field(
        default=Path("./var/run/filterd.sock"),
        description="Path of the unix socket `filterd status` asks (mode 0660, its directory "
        "is created); relative to the directory filterd starts in.",
    )


def _socket_mode(value: object) -> int:
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
        return int(value, 8)
    raise rule_error(
        (),
        f'expected a file mode in octal such as "0660", got {show_value(value)}',
        'write socket_mode = "0660" (owner and group may connect) or "0666" (anyone who can '
        "reach the socket's directory)",
    )


SocketMode = Annotated[
    int,
    PlainValidator(_socket_mode),
    PlainSerializer(lambda mode: f"{mode:04o}", return_type=str, when_used="json"),
    WithJsonSchema({"type": "string"}),
]
"""A unix socket's mode, written in octal as a string: ``"0660"``."""


class RunConfig(_Section):
    """``[run]``: the user filterd runs as (``filterd.runtime.privileges``)."""

    user: str | None = Field(
        default=None,
        description="The user filterd runs as. Started as root, filterd binds its sockets, then "
        "becomes this user (with group and the user's supplementary groups) before it handles "
        "any mail; its worker processes too. Unset: it stays who it was started as, and "
        "refuses to run as root unless allow_root = true.",
        examples=["filterd"],
    )
    group: str | None = Field(
        default=None,
        description="The group filterd runs as (needs user); unset: the user's login group. "
        "filterd's unix sockets belong to it.",
        examples=["filterd"],
    )
    allow_root: Flag = Field(
        default=False,
        description='Let filterd run as root (no user, or user = "root"); discouraged: a bug '
        "in a plugin would then be root's. The environment variable FILTERD_ALLOW_ROOT=1 "
        "does the same.",
    )
    socket_mode: SocketMode = Field(
        default=0o660,
        description="Mode of the unix sockets filterd listens on (smtp, lmtp, policy, milter), "
        'in octal. "0660": the user and group may connect (make Postfix a member of the '
        'group: adduser postfix filterd); "0666": anyone who can reach the directory.',
    )

    @model_validator(mode="after")
    def _group_needs_user(self) -> RunConfig:
        if self.group is not None and self.user is None:
            raise rule_error(
                ("group",),
                "group is set but user is not",
                'set user too (user = "filterd"), or remove group',
            )
        return self


class PipeConfig(_Section):
    """``[pipe]``: the pipe(8) door, ``filterd pipe``, which master.cf's pipe transport runs
    once per message (``filterd.frontdoors.pipe``)."""

    deliver_to: Literal["sendmail", "delivery"] = Field(
        default="sendmail",
        description='Where a message the chain passes goes: "sendmail" (reinjected through the '
        "sendmail command below, as Postfix's FILTER_README's simple filter does) or "
        '"delivery" (the [delivery] table: the relay next hop, or the Maildirs).',
    )
    sendmail: tuple[str, ...] = Field(
        default=("/usr/sbin/sendmail", "-G", "-i"),
        min_length=1,
        description='The reinjection command, without the envelope: filterd adds "-f SENDER -- '
        'RECIPIENT...". An absolute path: pipe(8) runs filterd with PATH=/usr/bin:/bin. Its '
        "exit status 0 means the message is queued; any other (or no end within "
        "sendmail_timeout) makes filterd pipe exit 75 (EX_TEMPFAIL, Postfix defers).",
    )
    sendmail_timeout: Duration = Field(
        default=300.0, description="Time the sendmail command gets to take the message."
    )
    time_limit: Duration = Field(
        default=900.0,
        description="Time filterd pipe gets for one message, reading it included; past it, it "
        "exits 75 (EX_TEMPFAIL). Keep it under Postfix's command time limit "
        "(<transport>_time_limit, default command_time_limit = 1000s): pipe(8) bounces a "
        "command that exceeds that.",
    )

    @field_validator("sendmail")
    @classmethod
    def _absolute_command(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value[0].startswith("/"):
            raise rule_error(
                (0,),
                f'the command "{value[0]}" is not an absolute path (pipe(8) runs filterd with '
                "PATH=/usr/bin:/bin)",
                'give its full path, e.g. sendmail = ["/usr/sbin/sendmail", "-G", "-i"]',
            )
        return value


DeliveryConfig = Annotated[RelayDelivery | MaildirDelivery, Field(discriminator="method")]


class Config(_Section):
    """The whole configuration: one TOML file."""

    log: LogConfig = Field(default=LogConfig(), description="Logging.")
    listen: tuple[ListenConfig, ...] = Field(
        default=(),
        description="Listening sockets, one [[listen]] table each; `filterd run` needs at least "
        "one (`filterd scan` and `filterd learn` use only the chain).",
    )
    limits: LimitsConfig = Field(default=LimitsConfig(), description="Inbound session limits.")
    delivery: RelayDelivery | MaildirDelivery | None = Field(
        default=None,
        discriminator="method",
        description="Where mail accepted by smtp and lmtp listeners goes; milter and policy "
        "listeners need none.",
    )
    chain: tuple[ChainEntryConfig, ...] = Field(
        default=(), description="The plugin chain, one [[chain]] table per plugin, in order."
    )
    quarantine: QuarantineConfig = Field(
        default=QuarantineConfig(), description="Where quarantined messages are kept."
    )
    metrics: MetricsConfig = Field(
        default=MetricsConfig(), description="The Prometheus metrics endpoint."
    )
    control: ControlConfig = Field(
        default=ControlConfig(), description="The control socket of `filterd status`."
    )
    run: RunConfig = Field(
        default=RunConfig(), description="The user filterd runs as, and its sockets' mode."
    )
    pipe: PipeConfig = Field(
        default=PipeConfig(), description="The pipe(8) door, filterd pipe (master.cf's pipe)."
    )
    source: str = Field(
        default="<embedded default>",
        exclude=True,
        description="The file this configuration came from (set by the loader, not from TOML).",
    )
    text: str = Field(
        default="",
        exclude=True,
        repr=False,
        description="The TOML text it was parsed from (set by the loader; worker processes "
        "parse the same text).",
    )

    @model_validator(mode="after")
    def _what_serving_needs(self, info: ValidationInfo) -> Config:
        """``filterd run`` needs listeners, and a delivery behind smtp and lmtp listeners.

        Validation context ``{"serving": False}`` (``filterd scan``, ``filterd learn``) skips this.
        """
        if isinstance(info.context, Mapping) and info.context.get("serving") is False:
            return self
        if not self.listen:
            written = "listen" in self.model_fields_set
            raise rule_error(
                ("listen",),
                "at least one [[listen]] table is required"
                if written
                else 'missing required key "listen"',
                LISTEN_HINT,
            )
        if self.delivery is None:
            for index, listener in enumerate(self.listen):
                if listener.protocol in ("smtp", "lmtp"):
                    raise rule_error(
                        ("listen", index, "protocol"),
                        f'a "{listener.protocol}" listener needs a [delivery] table (where the '
                        "mail it accepts goes)",
                        'add a [delivery] table with method = "relay" and next_hop = '
                        '"127.0.0.1:10026", or method = "maildir"; or make this listener '
                        'protocol = "milter" or "policy"',
                    )
        return self

    @model_validator(mode="after")
    def _pipe_delivery(self) -> Config:
        if self.pipe.deliver_to == "delivery" and self.delivery is None:
            raise rule_error(
                ("pipe", "deliver_to"),
                'deliver_to = "delivery" hands messages to the [delivery] table, and there is none',
                'add a [delivery] table (method = "relay" with next_hop, or method = "maildir"), '
                'or write deliver_to = "sendmail"',
            )
        return self

    @model_validator(mode="after")
    def _distinct_listeners(self) -> Config:
        seen: dict[str, int] = {}
        for index, listener in enumerate(self.listen):
            address = listener.address
            if listener.protocol == "milter" and address.kind == "tcp" and address.port == 0:
                raise rule_error(
                    ("listen", index, "address"),
                    "a milter listener needs a fixed port (libmilter binds it itself)",
                    'give the port Postfix\'s smtpd_milters names, e.g. "127.0.0.1:10029"',
                )
            if address.kind == "tcp" and address.port == 0:
                continue  # each port-0 listener gets its own ephemeral port
            first = seen.setdefault(str(address), index)
            if first != index:
                raise rule_error(
                    ("listen", index, "address"),
                    f'"{address}" is already used by listen[{first}]',
                    "give each [[listen]] table its own address",
                )
        return self

    @model_validator(mode="after")
    def _one_milter(self) -> Config:
        milters = [i for i, listener in enumerate(self.listen) if listener.protocol == "milter"]
        if len(milters) > 1:
            raise rule_error(
                ("listen", milters[1], "protocol"),
                f"only one milter listener per process (listen[{milters[0]}] is one)",
                "libmilter runs once per process: run a second filterd for a second socket",
            )
        return self
