"""Parsing of SMTP command arguments: paths (RFC 5321 §4.1.2) and ESMTP parameters.

Each parser returns data or raises ``CommandSyntaxError`` carrying the reply to give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from filterd.model import replies
from filterd.model.reply import Reply
from filterd.model.xtext import xtext_decode

MAX_PATH = 256  # RFC 5321 §4.5.3.1.3, including the angle brackets
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_ENVID = 100  # RFC 3461 §4.4
MAX_ORCPT = 500  # RFC 3461 §4.2
MAX_AUTH_PARAM = 500  # RFC 4954 §5: an xtext mailbox (or "<>")

XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")

_PARAM_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e\x80-\U0010ffff]+))?$")
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class CommandSyntaxError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class PathArgument:
    address: str
    params: tuple[str, ...]


def split_path_argument(argument: str, prefix: str, bad: Reply) -> PathArgument:
    """Split ``FROM:<path> params`` / ``TO:<path> params``.

    Postfix-compatible leniency: spaces after the colon are tolerated; brackets are required.
    """
    if argument[: len(prefix)].upper() != prefix:
        raise CommandSyntaxError(replies.SYNTAX)
    rest = argument[len(prefix) :].lstrip(" ")
    if not rest.startswith("<"):
        raise CommandSyntaxError(bad)
    end = _closing_bracket(rest)
    if end < 0:
        raise CommandSyntaxError(bad)
    path = rest[1:end]
    tail = rest[end + 1 :]
    if tail and not tail.startswith(" "):
        raise CommandSyntaxError(bad)
    params = tuple(p for p in tail.split(" ") if p)
    if len(path) + 2 > MAX_PATH:
        raise CommandSyntaxError(bad)
    return PathArgument(_strip_source_route(path, bad), params)


def _closing_bracket(text: str) -> int:
    """Index of the '>' closing the path, honouring a quoted local part."""
    if '"' not in text:
        return text.find(">", 1)
    quoted = False
    escaped = False
    for i, ch in enumerate(text[1:], start=1):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
    return -1


def _strip_source_route(path: str, bad: Reply) -> str:
    """RFC 5321 §4.1.2: "<@a,@b:user@d>" — the route is obsolete and ignored."""
    if path.startswith("@"):
        colon = path.find(":")
        if colon < 0:
            raise CommandSyntaxError(bad)
        path = path[colon + 1 :]
    return path


def validate_mailbox(address: str, bad: Reply, *, smtputf8: bool) -> None:
    """Check a non-empty mailbox: local@domain, sizes, no controls, ASCII unless SMTPUTF8."""
    if _CONTROL_RE.search(address):
        raise CommandSyntaxError(bad)
    if not smtputf8 and not address.isascii():
        raise CommandSyntaxError(replies.SMTPUTF8_REQUIRED)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise CommandSyntaxError(bad)
    if len(local.encode()) > MAX_LOCAL_PART or len(domain.encode()) > MAX_DOMAIN:
        raise CommandSyntaxError(bad)
    if " " in domain or domain.startswith(".") or ".." in domain:
        raise CommandSyntaxError(bad)
    if " " in local and not (local.startswith('"') and local.endswith('"')):
        raise CommandSyntaxError(bad)


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None
    smtputf8: bool


def check_mail_params(params: tuple[str, ...], *, max_size: int, auth: bool = False) -> MailParams:
    """Validate MAIL parameters (SIZE, BODY, SMTPUTF8, ENVID, RET, and AUTH when ``auth``:
    AUTH is offered); unknown ones → 555."""
    size: int | None = None
    smtputf8 = False
    seen: set[str] = set()
    for param in params:
        key, value = _split_param(param)
        if key in seen:
            raise CommandSyntaxError(replies.SYNTAX)
        seen.add(key)
        match key:
            case "SIZE":
                # isascii(): str.isdigit() is true for "²" and other digits int() refuses
                if value is None or not (value.isascii() and value.isdigit()) or len(value) > 20:
                    raise CommandSyntaxError(replies.SYNTAX)
                size = int(value)
                if max_size and size > max_size:
                    raise CommandSyntaxError(replies.TOO_BIG_DECLARED)
            case "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    raise CommandSyntaxError(replies.BAD_PARAMETER)
            case "SMTPUTF8":
                if value is not None:
                    raise CommandSyntaxError(replies.SYNTAX)
                smtputf8 = True
            case "ENVID":
                _check_xtext(value, MAX_ENVID)
            case "RET":
                if value is None or value.upper() not in ("FULL", "HDRS"):
                    raise CommandSyntaxError(replies.SYNTAX)
            case "AUTH" if auth:
                _check_xtext(value, MAX_AUTH_PARAM)
            case _:
                raise CommandSyntaxError(replies.BAD_PARAMETER)
    return MailParams(size, smtputf8)


def check_rcpt_params(params: tuple[str, ...]) -> None:
    """Validate RCPT parameters (NOTIFY, ORCPT); unknown ones → 555."""
    seen: set[str] = set()
    for param in params:
        key, value = _split_param(param)
        if key in seen:
            raise CommandSyntaxError(replies.SYNTAX)
        seen.add(key)
        match key:
            case "NOTIFY":
                if value is None:
                    raise CommandSyntaxError(replies.SYNTAX)
                items = value.upper().split(",")
                if items != ["NEVER"] and not (
                    set(items) <= _NOTIFY_VALUES and len(set(items)) == len(items)
                ):
                    raise CommandSyntaxError(replies.SYNTAX)
            case "ORCPT":
                if value is None or ";" not in value:
                    raise CommandSyntaxError(replies.SYNTAX)
                _check_xtext(value.partition(";")[2], MAX_ORCPT)
            case _:
                raise CommandSyntaxError(replies.BAD_PARAMETER)


def _split_param(param: str) -> tuple[str, str | None]:
    match = _PARAM_RE.match(param)
    if match is None:
        raise CommandSyntaxError(replies.SYNTAX)
    return match.group(1).upper(), match.group(2)


def _check_xtext(value: str | None, limit: int) -> None:
    if value is None or len(value) > limit:
        raise CommandSyntaxError(replies.SYNTAX)
    try:
        xtext_decode(value)
    except ValueError:
        raise CommandSyntaxError(replies.SYNTAX) from None


def parse_xforward(argument: str) -> tuple[tuple[str, str], ...]:
    """``XFORWARD 1*( SP name=value )``: names from the Postfix set, values xtext (≤255)."""
    items = [p for p in argument.split(" ") if p]
    if not items:
        raise CommandSyntaxError(replies.SYNTAX)
    out: list[tuple[str, str]] = []
    for item in items:
        name, eq, value = item.partition("=")
        name = name.upper()
        if not eq or name not in XFORWARD_ATTRIBUTES or len(value) > 255:
            raise CommandSyntaxError(replies.SYNTAX)
        try:
            xtext_decode(value)
        except ValueError:
            raise CommandSyntaxError(replies.SYNTAX) from None
        out.append((name, value))
    return tuple(out)
