"""The header_checks plugin: Postfix header_checks(5), mime_header_checks, nested_header_checks
and body_checks tables, applied to each message with Postfix's semantics.

Headers are presented as Postfix's cleanup(8) presents them (one logical line per header,
folded lines joined with "\\n"); the first matching rule of a table decides for that header.
IGNORE/STRIP remove it, PREPEND puts a line above it, REPLACE swaps it, WARN/INFO log, REJECT
refuses the message, DISCARD drops it, HOLD quarantines it, REDIRECT/BCC change the envelope,
DUNNO/OK do nothing, PASS stops all inspection. FILTER cannot apply in filterd: a table with a
FILTER rule refuses to load.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from filterd.sdk import (
    AddRecipient,
    Continue,
    Discard,
    Edit,
    Field,
    Header,
    InsertHeader,
    MessageView,
    OnMessage,
    Plugin,
    PluginConfig,
    Quarantine,
    Reject,
    RemoveHeader,
    RemoveRecipient,
    ReplaceBody,
    Reply,
    TempFail,
    Transaction,
    Verdict,
    field_validator,
    inline,
)

from .action_table import Flavour, Table, TableError, load_table, parse_table
from .actions import Action, ActionKind
from .mime import body_headers, boundary_of

MIME_HEADER = re.compile(r"^(content-|mime-version$)", re.IGNORECASE)
FILTER_REFUSED = (
    "FILTER cannot apply in filterd (it routes Postfix's queue); "
    "use Postfix's own header_checks for it"
)
BODY_EDIT_LIMIT = 4 * 1024 * 1024  # body edits rewrite the body in memory: only below this
MIME_SCAN_LIMIT = 4 * 1024 * 1024  # part headers are looked for in this much of the body
REMEMBERED = 4096  # header lines whose decision is remembered
REMEMBERED_LINE = 512  # ... of at most this many octets
_UNSEEN: Any = object()  # not in the memory of decisions


def parse_table_ref(ref: str) -> tuple[Flavour, str]:
    """``regexp:/path`` or ``pcre:/path`` (Postfix's map syntax)."""
    flavour, sep, path = ref.partition(":")
    if not sep or flavour not in ("regexp", "pcre") or not path:
        raise ValueError(f'expected "regexp:/path/to/table" or "pcre:/path/to/table", got "{ref}"')
    return flavour, path  # type: ignore[return-value]


def open_table(ref: str) -> Table:
    flavour, path = parse_table_ref(ref)
    if not Path(path).is_file():
        raise ValueError(f'table file "{path}" does not exist')
    table = load_table(path, flavour)
    for line, action in table.static_actions():
        if action.kind is ActionKind.FILTER:
            raise TableError(path, line, FILTER_REFUSED)
    return table


class HeaderChecksConfig(PluginConfig):
    header_checks: list[str] = Field(
        default_factory=list,
        description='Tables for message headers, each "regexp:/path" or "pcre:/path".',
    )
    mime_header_checks: list[str] | None = Field(
        default=None, description="Tables for MIME headers (Content-*); default: header_checks."
    )
    nested_header_checks: list[str] | None = Field(
        default=None,
        description="Tables for headers of attached messages; default: header_checks.",
    )
    body_checks: list[str] = Field(
        default_factory=list, description="Tables applied to each body line."
    )
    rules: list[str] = Field(
        default_factory=list,
        description="Inline header_checks rules, one table line each (checked after the "
        "header_checks files).",
    )
    rules_flavour: Literal["regexp", "pcre"] = Field(
        default="regexp", description="Syntax of the inline rules: regexp or pcre."
    )
    body_checks_size_limit: int = Field(
        default=51200, ge=0, description="Bytes of each body part that body_checks inspect."
    )

    @field_validator("header_checks", "mime_header_checks", "nested_header_checks", "body_checks")
    @classmethod
    def _tables_load(cls, refs: list[str] | None) -> list[str] | None:
        for ref in refs or []:
            try:
                open_table(ref)
            except TableError as exc:
                raise ValueError(f"{exc.file}, line {exc.line}: {exc.message}") from None
        return refs

    @field_validator("rules")
    @classmethod
    def _rules_parse(cls, rules: list[str]) -> list[str]:
        try:
            _inline(rules, "regexp")
        except TableError as exc:
            raise ValueError(f"rules[{exc.line - 1}]: {exc.message}") from None
        return rules


def _inline(rules: list[str], flavour: Flavour) -> Table | None:
    if not rules:
        return None
    table = parse_table("\n".join(rules) + "\n", flavour, name="<inline rules>")
    for line, action in table.static_actions():
        if action.kind is ActionKind.FILTER:
            raise TableError("<inline rules>", line, FILTER_REFUSED)
    return table


@dataclass
class _Inspection:
    """What the tables decided for one message."""

    edits: list[Edit] = field(default_factory=list)
    stop: Verdict | None = None  # REJECT / DISCARD
    hold: str | None = None
    redirect: str | None = None
    bcc: list[str] = field(default_factory=list)
    passed: bool = False  # PASS: no further inspection


class HeaderChecks(Plugin[HeaderChecksConfig], OnMessage):
    name = "header_checks"
    Config = HeaderChecksConfig

    async def start(self) -> None:
        c = self.config
        inline = _inline(c.rules, c.rules_flavour)
        self.header_tables = [open_table(ref) for ref in c.header_checks]
        if inline is not None:
            self.header_tables.append(inline)
        self.mime_tables = (
            [open_table(ref) for ref in c.mime_header_checks]
            if c.mime_header_checks is not None
            else self.header_tables
        )
        self.nested_tables = (
            [open_table(ref) for ref in c.nested_header_checks]
            if c.nested_header_checks is not None
            else self.header_tables
        )
        self.body_tables = [open_table(ref) for ref in c.body_checks]
        # What the tables decided for a header line seen before: many repeat from message
        # to message (MIME-Version, Content-Type, From, X-Mailer...). A lookup is a function
        # of the line, unless a table has a time limit (a timeout is no answer).
        self._decided: dict[tuple[bool, bytes], tuple[Table, Action] | None] = {}
        self._remember = all(
            table.timeout is None for table in (*self.header_tables, *self.mime_tables)
        )

    @inline  # rules only compute; the tables' own time limits bound them
    async def on_message(self, t: Transaction, message: MessageView) -> Verdict:
        state = _Inspection()
        self._headers(message.headers, state)
        if state.stop is None and not state.passed:
            self._part_headers(message, state)
        if state.stop is None and not state.passed and self.body_tables:
            self._body(message, state)
        if state.stop is not None:
            return state.stop
        if state.redirect is not None:
            state.edits += [RemoveRecipient(r.address) for r in t.accepted]
            state.edits.append(AddRecipient(state.redirect))
        state.edits += [AddRecipient(address) for address in state.bcc]
        if state.hold is not None:
            return Quarantine(state.hold, edits=tuple(state.edits))
        return Continue(edits=tuple(state.edits))

    # ---------------------------------------------------------------- headers
    def _headers(self, headers: tuple[Header, ...], state: _Inspection) -> None:
        matched: list[list[Edit]] = []
        decided = self._decided
        for index, header in enumerate(headers):
            key, name, is_mime = _name_key(header.name)
            seen = (is_mime, header.raw)
            # get, not "in" then [], nor setdefault: may run on several threads at once
            found = decided.get(seen, _UNSEEN)
            if found is _UNSEEN:
                tables = self.mime_tables if is_mime else self.header_tables
                found = _first_header_match(tables, name, header)
                if self._remember and len(header.raw) <= REMEMBERED_LINE:
                    if len(decided) >= REMEMBERED:
                        decided.clear()  # start over: the common lines come back first
                    decided[seen] = found
            if found is None:
                continue
            ops: list[Edit] = []
            matched.append(ops)
            # the header's occurrence among those of its name, for the edit to name it
            occurrence = 1 + sum(1 for h in headers[:index] if _name_key(h.name)[0] == key)
            self._apply(found[1], found[0], state, ops, index, header, occurrence)
            if state.stop is not None or state.passed:
                break
        # Bottom-up, so each edit's position refers to the headers as received.
        for ops in reversed(matched):
            state.edits.extend(ops)

    def _apply(
        self,
        action: Action,
        table: Table,
        state: _Inspection,
        ops: list[Edit],
        index: int,
        header: Header,
        occurrence: int,
    ) -> None:
        log = self.env.log
        match action.kind:
            case ActionKind.IGNORE:
                ops.append(RemoveHeader(header.name, occurrence))
            case ActionKind.STRIP:
                ops.append(RemoveHeader(header.name, occurrence))
                log.info(f"strip: header {_shown(header)}: {action.text}")
            case ActionKind.PREPEND:
                name, _, value = action.text.partition(":")
                ops.append(InsertHeader(index, name.strip(), value.strip()))
            case ActionKind.REPLACE:
                name, _, value = action.text.partition(":")
                ops.append(RemoveHeader(header.name, occurrence))
                ops.append(InsertHeader(index, name.strip(), value.strip()))
                log.info(f"replace: header {_shown(header)}: {action.text}")
            case ActionKind.WARN | ActionKind.INFO:
                log.info(f"{action.kind.value.lower()}: header {_shown(header)}: {action.text}")
            case ActionKind.REJECT:
                state.stop = (
                    Reject(_reject_reply(action))
                    if _permanent(action)
                    else TempFail(_reject_reply(action))
                )
                log.info(f"reject: header {_shown(header)}: {action.reject_reason()}")
            case ActionKind.DISCARD:
                state.stop = Discard(action.text or f"header {_shown(header)}")
            case ActionKind.HOLD:
                state.hold = action.text or f"header {_shown(header)}"
            case ActionKind.REDIRECT:
                state.redirect = action.text
            case ActionKind.BCC:
                state.bcc.append(action.text)
            case ActionKind.PASS:
                state.passed = True
            case ActionKind.DUNNO | ActionKind.OK | ActionKind.FILTER:
                pass
        del table

    # ---------------------------------------------------------- part headers
    def _part_headers(self, message: MessageView, state: _Inspection) -> None:
        """Headers of MIME parts and attached messages, within the first MIME_SCAN_LIMIT
        bytes of the body. Their decisions apply (REJECT, DISCARD, HOLD, REDIRECT, BCC,
        WARN, INFO, PASS); line edits inside the body are logged, not applied."""
        top = boundary_of(message.header("Content-Type"))
        if top is None:
            return
        body = _read_body(message, MIME_SCAN_LIMIT)
        for item in body_headers(body, top):
            tables = self.mime_tables if item.kind == "mime" else self.nested_tables
            found = _first_match(tables, item.text)
            if found is None:
                continue
            action = found[1]
            if action.deletes_line or action.kind in (ActionKind.PREPEND, ActionKind.REPLACE):
                self.env.log.info(
                    f"{action.kind.value.lower()} not applied to a MIME part header: "
                    f"{item.text[:200]}"
                )
                continue
            name = item.text.partition(":")[0]
            raw = (item.text.replace("\n", "\r\n") + "\r\n").encode("utf-8", "surrogateescape")
            self._apply(action, found[0], state, [], 0, Header(name, raw), 0)
            if state.stop is not None or state.passed:
                return

    # ------------------------------------------------------------------- body
    def _body(self, message: MessageView, state: _Inspection) -> None:
        limit = self.config.body_checks_size_limit
        head = bytearray()
        for chunk in message.body_chunks():
            head += chunk
            if len(head) >= limit:
                break
        inspected = bytes(head[:limit])
        lines = inspected.split(b"\r\n")
        complete = lines[:-1] if len(lines) > 1 else []
        changed = False
        out: list[bytes] = []
        for line in complete:
            found = _first_match(self.body_tables, line, body=True)
            if found is None:
                out.append(line)
                continue
            action = found[1]
            match action.kind:
                case ActionKind.IGNORE | ActionKind.STRIP:
                    changed = True
                case ActionKind.REPLACE:
                    out.append(action.text.encode("utf-8", "surrogateescape"))
                    changed = True
                case ActionKind.PREPEND:
                    out += [action.text.encode("utf-8", "surrogateescape"), line]
                    changed = True
                case ActionKind.REJECT:
                    reply = _reject_reply(action)
                    state.stop = Reject(reply) if _permanent(action) else TempFail(reply)
                    return
                case ActionKind.DISCARD:
                    state.stop = Discard(action.text or "body")
                    return
                case ActionKind.HOLD:
                    state.hold = action.text or "body"
                    out.append(line)
                case ActionKind.REDIRECT:
                    state.redirect = action.text
                    out.append(line)
                case ActionKind.BCC:
                    state.bcc.append(action.text)
                    out.append(line)
                case ActionKind.PASS:
                    out.append(line)
                    break
                case _:
                    if action.kind in (ActionKind.WARN, ActionKind.INFO):
                        self.env.log.info(f"{action.kind.value.lower()}: body: {action.text}")
                    out.append(line)
        if not changed:
            return
        body_size = sum(len(c) for c in message.body_chunks())
        if body_size > BODY_EDIT_LIMIT:
            self.env.log.warning("body_checks edits not applied: body too large", size=body_size)
            return
        body = b"".join(message.body_chunks())
        consumed = sum(len(line) + 2 for line in complete)
        state.edits.append(ReplaceBody(b"".join(x + b"\r\n" for x in out) + body[consumed:]))


def _read_body(message: MessageView, limit: int) -> bytes:
    data = bytearray()
    for chunk in message.body_chunks():
        data += chunk
        if len(data) >= limit:
            break
    return bytes(data[:limit])


@functools.lru_cache(maxsize=1024)
def _name_key(name: str) -> tuple[str, bytes, bool]:
    """A header name's key (lower case; also as the bytes tables index), and whether it is a
    MIME header; the same few names come in every message."""
    key = name.lower()
    return key, key.encode("ascii", "surrogateescape"), MIME_HEADER.match(name) is not None


def _presented_bytes(header: Header) -> bytes:
    """As ``_presented``, as the bytes the tables match (no decode/encode round trip)."""
    raw = header.raw
    line = raw[:-2] if raw.endswith(b"\r\n") else raw
    name = header.name
    if (
        line[len(name) : len(name) + 1] == b":"
        and b"\n" not in line
        and b"\r" not in line
        and not name.endswith((" ", "\t"))
    ):
        return line  # the usual header: one line, the colon right after its name
    raw = raw.rstrip(b"\r\n").replace(b"\r\n", b"\n")
    field, _, rest = raw.partition(b":")
    return field.rstrip(b" \t") + b":" + rest


def _shown(header: Header) -> str:
    """The header in a log line or a reason: as presented, at most 200 characters."""
    return _presented(header)[:200]


def _presented(header: Header) -> str:
    """The header as cleanup(8) presents it: "Name: value", blanks before the colon removed,
    folded lines joined with "\\n"."""
    line = header.logical_line
    name, _, rest = line.partition(":")
    return name.rstrip(" \t") + ":" + rest


def _first_header_match(
    tables: list[Table], name: bytes, header: Header
) -> tuple[Table, Action] | None:
    """``_first_match`` for a message header whose name is ``name`` (lower case): a table
    with no rule for headers of that name is not asked (most headers of most messages, for
    most tables), and the header is presented only when one is."""
    key: bytes | None = None
    for table in tables:
        if not table.may_match(name):
            continue
        if key is None:
            key = _presented_bytes(header)
        found = table.lookup_header(key, name)
        if found is not None:
            return None if found.action.is_noop else (table, found.action)
    return None


def _first_match(
    tables: list[Table], key: str | bytes, *, body: bool = False
) -> tuple[Table, Action] | None:
    for table in tables:
        found = table.lookup_body(key) if body else table.lookup(key)
        if found is not None and not found.action.is_noop:
            return table, found.action
        if found is not None:
            return None  # DUNNO/OK: the first matching rule decides, and it says "nothing"
    return None


def _permanent(action: Action) -> bool:
    return action.reject_reason().startswith("5")


def _reject_reply(action: Action) -> Reply:
    reason = action.reject_reason()
    status, _, text = reason.partition(" ")
    code = 550 if status.startswith("5") else 451
    return Reply(code, status, text or "message content rejected")
