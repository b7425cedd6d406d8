"""access(5) actions: what a value found in an access table does, as Postfix's smtpd does it
(``check_table_result()`` and ``generic_checks()`` in smtpd_check.c), for every plugin that
speaks access(5) (the ``access`` plugin, the ``rules`` plugin's actions).

- :func:`parse_access_action` reads a value into an :class:`AccessAction` (never raises: a
  value Postfix cannot use is kind ``UNSUPPORTED``, answered ``451 4.3.5 Server configuration
  error`` as Postfix does);
- :class:`RestrictionList` applies actions in order, as one Postfix restriction list
  (``smtpd_recipient_restrictions = check_recipient_access ..., check_recipient_access ...``):
  the first OK or refusal ends it; DEFER_IF_PERMIT / DEFER_IF_REJECT, PREPEND, BCC, HOLD,
  REDIRECT, INFO and WARN are collected; :meth:`RestrictionList.verdict` turns the result into
  a filterd verdict.

Replies are worded as smtpd words them: ``CODE X.Y.Z <name>: <Class> rejected: <text>``, with
``access_map_reject_code`` (554) or ``access_map_defer_code`` (450), default enhanced codes
5.7.1 / 4.7.1 (a code at the start of the text wins), an address status code (X.1.Y) rewritten
for the class as ``smtpd_dsn_fix()`` does, and the SMTP code's class forced onto the enhanced
code.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Literal

from filterd.model.edits import AddHeader, AddRecipient, Edit, Redirect
from filterd.model.reply import Reply
from filterd.model.verdict import (
    Accept,
    Continue,
    DeferIf,
    Discard,
    Quarantine,
    Reject,
    TempFail,
    Verdict,
)
from filterd.sdk.action_text import dsn_split, is_header, split_action

__all__ = [
    "CLIENT",
    "HELO",
    "RECIPIENT",
    "SENDER",
    "SERVER_CONFIGURATION_ERROR",
    "AccessAction",
    "AccessCodes",
    "AccessKind",
    "RestrictionList",
    "fix_status",
    "lookup_failure",
    "parse_access_action",
    "with_redirect",
    "without_postfix_prefix",
]

# The reply classes (smtpd_dsn_fix.h): what the name in a reply is.
CLIENT = "Client host"
HELO = "Helo command"
SENDER = "Sender address"
RECIPIENT = "Recipient address"

SERVER_CONFIGURATION_ERROR = Reply(451, "4.3.5", "Server configuration error")
"""Postfix's answer to a value it cannot apply: a lookup table, an unknown restriction."""

_GENERIC = "Access denied"
_GENERIC_DEFER_IF = "Service unavailable"


class AccessKind(enum.Enum):
    OK = "OK"  # also RELAY and an all-numeric value
    REJECT = "REJECT"
    DEFER = "DEFER"
    DEFER_IF_PERMIT = "DEFER_IF_PERMIT"
    DEFER_IF_REJECT = "DEFER_IF_REJECT"
    CODE = "CODE"  # 4NN text / 5NN text
    DUNNO = "DUNNO"
    HOLD = "HOLD"
    DISCARD = "DISCARD"
    PREPEND = "PREPEND"
    REDIRECT = "REDIRECT"
    BCC = "BCC"
    FILTER = "FILTER"
    INFO = "INFO"
    WARN = "WARN"
    RESTRICTIONS = "RESTRICTIONS"  # permit, reject, defer, defer_if_permit, defer_if_reject
    UNSUPPORTED = "UNSUPPORTED"  # a lookup table, or a restriction filterd does not have


_COMMANDS = {
    kind.value: kind
    for kind in AccessKind
    if kind not in (AccessKind.CODE, AccessKind.RESTRICTIONS, AccessKind.UNSUPPORTED)
}
_COMMANDS["RELAY"] = AccessKind.OK

#: The restriction names a value may list (Postfix's generic restrictions that need no
#: other state); anything else is UNSUPPORTED.
RESTRICTIONS = frozenset({"permit", "reject", "defer", "defer_if_permit", "defer_if_reject"})


@dataclass(frozen=True, slots=True)
class AccessAction:
    """One access(5) value. ``command`` is its first word as written, ``text`` the optional text
    after it; ``code`` the SMTP code of a ``4NN``/``5NN`` value; ``restrictions`` the names of
    a RESTRICTIONS value; ``problem`` why an UNSUPPORTED value cannot be applied."""

    kind: AccessKind
    raw: str
    command: str = ""
    text: str = ""
    code: int = 0
    restrictions: tuple[str, ...] = ()
    problem: str = ""


def _is_code(command: str, text: str) -> bool:
    return (
        len(command) == 3 and bool(text) and command[0] in "45" and command[1:].isdigit()
    ) and command.isascii()


def parse_access_action(value: str) -> AccessAction:
    """Read an access(5) value as check_table_result() does: the command is compared without
    regard to case; an all-numeric value is OK; ``4NN text`` / ``5NN text`` a refusal; other
    values are restriction names (a value naming a lookup table is refused)."""
    command, text = split_action(value)
    kind = _COMMANDS.get(command.upper()) if command.isascii() else None
    if kind is not None:
        return AccessAction(kind, value, command, text)
    if value.isascii() and value.isdigit():
        return AccessAction(AccessKind.OK, value, command, text)
    if _is_code(command, text):
        return AccessAction(AccessKind.CODE, value, command, text, code=int(command))
    if ":" in value:
        problem = f"access table entry with lookup table: {value}"
        return AccessAction(AccessKind.UNSUPPORTED, value, command, text, problem=problem)
    names = tuple(name for name in value.replace(",", " ").split() if name)
    unknown = [name for name in names if name.lower() not in RESTRICTIONS]
    if not names or unknown:
        what = unknown[0] if unknown else value
        problem = f'unknown or unsupported smtpd restriction: "{what}"'
        return AccessAction(AccessKind.UNSUPPORTED, value, command, text, problem=problem)
    return AccessAction(AccessKind.RESTRICTIONS, value, command, text, restrictions=names)


@dataclass(frozen=True, slots=True)
class AccessCodes:
    """The Postfix parameters that shape access(5) replies; the defaults are Postfix's."""

    access_map_reject_code: int = 554
    access_map_defer_code: int = 450
    reject_code: int = 554  # the ``reject`` restriction
    defer_code: int = 450  # the ``defer`` restriction


# smtpd_dsn_fix(): the detail digit of an X.1.Y code -> (sender form, recipient form)
_DSN_MAP = {
    "1": ("1.7", "1.1"),
    "2": ("1.8", "1.2"),
    "3": ("1.7", "1.3"),
    "4": ("1.7", "1.4"),
    "5": ("1.0", "1.5"),
    "6": ("1.7", "1.6"),
    "7": ("1.7", "1.3"),
    "8": ("1.8", "1.2"),
}


def fix_status(status: str, what: str) -> str:
    """``smtpd_dsn_fix()``: an address status code (``X.1.Y``) made right for what is refused:
    the sender form for the sender (``5.1.1`` -> ``5.1.7``), the recipient form for the
    recipient, ``X.0.0`` for anything else; other codes unchanged."""
    if not status[2:].startswith("1."):
        return status
    if what in (SENDER, RECIPIENT):
        sender, recipient = _DSN_MAP.get(status[4:], ("1.0", "1.0"))
        return f"{status[0]}.{sender if what == SENDER else recipient}"
    return f"{status[0]}.0.0"


def _reply(code: int, status: str, text: str) -> Reply:
    """smtpd_check_reject(): a code outside 4xx/5xx is a configuration error answered
    ``450 4.7.1 Service unavailable``; the enhanced code takes the SMTP code's class; the
    reply is made printable and cut to 510 characters."""
    if not 400 <= code <= 599:
        return Reply(450, "4.7.1", "Service unavailable")
    status = f"{str(code)[0]}{status[1:]}"
    line = "".join(c if c.isprintable() else " " for c in text)
    room = 510 - len(f"{code} {status} ")
    return Reply(code, status, line[:room])


def _refusal(
    code: int, default_status: str, text: str, name: str, what: str, generic: str
) -> Reply:
    status, rest = dsn_split(default_status, text)
    return _reply(code, fix_status(status, what), f"<{name}>: {what} rejected: {rest or generic}")


def lookup_failure(name: str) -> Reply:
    """A table that cannot answer: ``451 4.3.0 <name>: Temporary lookup failure``."""
    return Reply(451, "4.3.0", f"<{name}>: Temporary lookup failure")


def _deny(reply: Reply) -> Reject | TempFail:
    return Reject(reply) if reply.is_permanent else TempFail(reply)


Status = Literal["dunno", "permit", "reject"]


@dataclass(slots=True)
class RestrictionList:
    """One Postfix restriction list over one ``name`` (``what``: CLIENT, HELO, SENDER or
    RECIPIENT), applied an action at a time (:meth:`apply`) until :attr:`decided`.

    ``if_permit``: a DEFER_IF_PERMIT pending from an earlier list of the same check (Postfix
    keeps it from the client to the recipient list). ``notices`` collects the log lines
    (INFO, WARN, HOLD, DISCARD, REDIRECT, BCC, FILTER and configuration problems) for the
    caller to log.
    """

    name: str
    what: str
    codes: AccessCodes = field(default_factory=AccessCodes)
    if_permit: DeferIf | None = None
    if_reject: DeferIf | None = None
    status: Status = "dunno"
    refusal: Reply | None = None
    edits: list[Edit] = field(default_factory=list)
    hold: str | None = None
    discard: str | None = None
    redirect: str | None = None
    notices: list[tuple[str, str]] = field(default_factory=list)

    @property
    def decided(self) -> bool:
        """The list is over: a permit, a refusal, a DISCARD, or both kinds of DEFER_IF pending
        (generic_checks() stops there too)."""
        return (
            self.status != "dunno"
            or self.discard is not None
            or (self.if_permit is not None and self.if_reject is not None)
        )

    def next(self, name: str, what: str) -> None:
        """End this list and start the next one of the same check (Postfix checks the client,
        HELO, sender and recipient lists in turn): a DEFER_IF_PERMIT, the edits, HOLD and
        REDIRECT carry over; the permit and a DEFER_IF_REJECT do not."""
        self.name, self.what = name, what
        self.status, self.if_reject = "dunno", None

    def refuse(self, reply: Reply) -> None:
        """A refusal ends the list; a 5xx one becomes a pending DEFER_IF_REJECT's reply."""
        if reply.is_permanent and self.if_reject is not None:
            reply, self.if_reject = self.if_reject.reply, None
        self.status, self.refusal = "reject", reply

    def apply(self, value: str | AccessAction) -> None:
        """Apply one value found in a table (check_table_result())."""
        action = parse_access_action(value) if isinstance(value, str) else value
        name, what, codes, text = self.name, self.what, self.codes, action.text
        match action.kind:
            case AccessKind.DUNNO:
                pass
            case AccessKind.OK:
                self.status = "permit"
            case AccessKind.REJECT:
                code = codes.access_map_reject_code
                self.refuse(_refusal(code, "5.7.1", text, name, what, _GENERIC))
            case AccessKind.DEFER:
                code = codes.access_map_defer_code
                self.refuse(_refusal(code, "4.7.1", text, name, what, _GENERIC))
            case AccessKind.CODE:
                default = f"{action.raw[0]}.7.1"
                self.refuse(_refusal(action.code, default, text, name, what, _GENERIC))
            case AccessKind.DEFER_IF_PERMIT | AccessKind.DEFER_IF_REJECT:
                code = codes.access_map_defer_code
                reply = _refusal(code, "4.7.1", text, name, what, _GENERIC_DEFER_IF)
                self._defer_if(action.kind is AccessKind.DEFER_IF_PERMIT, reply)
            case AccessKind.INFO | AccessKind.WARN:
                self.notices.append((action.kind.value.lower(), f"<{name}>: {what} {text}"))
            case AccessKind.HOLD:
                self.hold = self.hold or f"<{name}>: {what} {text or 'triggers HOLD action'}"
                self.notices.append(("hold", self.hold))
            case AccessKind.DISCARD:
                self.discard = f"<{name}>: {what} {text or 'triggers DISCARD action'}"
                self.notices.append(("discard", self.discard))
                self.status = "permit"
            case AccessKind.PREPEND:
                self._prepend(action)
            case AccessKind.REDIRECT | AccessKind.BCC:
                self._recipient(action)
            case AccessKind.FILTER:
                self.notices.append(
                    (
                        "warning",
                        f"<{name}>: {what} triggers FILTER {text}: filterd has no "
                        "content_filter routing; the action is ignored",
                    )
                )
            case AccessKind.RESTRICTIONS:
                self._restrictions(action.restrictions)
            case AccessKind.UNSUPPORTED:
                self.notices.append(("warning", action.problem))
                self.refuse(SERVER_CONFIGURATION_ERROR)

    def _defer_if(self, permit: bool, reply: Reply) -> None:
        if permit:
            self.if_permit = self.if_permit or DeferIf("permit", reply)
        else:
            self.if_reject = self.if_reject or DeferIf("reject", reply)

    def _prepend(self, action: AccessAction) -> None:
        if not is_header(action.text):
            self.notices.append(
                ("warning", f'access table entry "{action.raw}" requires header: text')
            )
            return
        header, _, value = action.text.partition(":")
        self.edits.append(AddHeader(header.rstrip(" \t"), value.lstrip(" \t")))

    def _recipient(self, action: AccessAction) -> None:
        target, kind = action.text, action.kind.value
        if "@" not in target:
            self.notices.append(("warning", f'{kind} "{action.raw}" requires user@domain target'))
            return
        self.notices.append((kind.lower(), f"<{self.name}>: {self.what} triggers {kind} {target}"))
        if action.kind is AccessKind.BCC:
            self.edits.append(AddRecipient(target))
        else:
            self.redirect = target

    def _restrictions(self, names: tuple[str, ...]) -> None:
        name, what, codes = self.name, self.what, self.codes
        for restriction in names:
            match restriction.lower():
                case "permit":
                    self.status = "permit"
                case "reject":
                    self.refuse(
                        _reply(codes.reject_code, "5.7.1", f"<{name}>: {what} rejected: {_GENERIC}")
                    )
                case "defer":
                    text = f"<{name}>: {what} rejected: Try again later"
                    self.refuse(_reply(codes.defer_code, "4.3.2", text))
                case "defer_if_permit" | "defer_if_reject" as word:
                    text = f"<{name}>: {what} rejected: {word} requested"
                    self._defer_if(word == "defer_if_permit", Reply(450, "4.7.0", text))
            if self.decided:
                return

    # ------------------------------------------------------------------ verdict
    def verdict(self) -> Verdict:
        """The list's result as a verdict: its refusal; else DISCARD (Discard), HOLD
        (Quarantine, with the edits); else Accept for a permit, Continue otherwise, carrying
        the edits and what is pending: DEFER_IF_PERMIT, and DEFER_IF_REJECT (it still holds
        for the plugins after this one in the chain's stage)."""
        if self.refusal is not None:
            return _deny(self.refusal)
        edits = tuple(self.edits)
        held = tuple(d for d in (self.if_permit, self.if_reject) if d)
        if self.if_permit is None:  # else the message is deferred (DISCARD is a permit too)
            if self.discard is not None:
                return Discard(self.discard)
            if self.hold is not None:
                return Quarantine(self.hold, edits)
        if self.status == "permit":
            return Accept(edits, defer_if=held)
        return Continue(edits, defer_if=held)


def with_redirect(verdict: Verdict, target: str | None) -> Verdict:
    """``verdict`` carrying a REDIRECT (``RestrictionList.redirect``) as a ``Redirect`` edit,
    which every door applies (the policy door answers ``REDIRECT target``); a refusal or
    DISCARD has no use for it."""
    if target is None or not isinstance(verdict, Continue | Accept | Quarantine):
        return verdict
    return dataclasses.replace(verdict, edits=(*verdict.edits, Redirect(target)))


def without_postfix_prefix(verdict: Verdict, name: str, what: str) -> Verdict:
    """A policy-door answer as Postfix is to read it: Postfix puts ``<name>: <Class> rejected:``
    (the context of its check_policy_service call) before a policy service's text itself, so
    a reply that begins with exactly that loses it here; other replies are kept whole."""
    prefix = f"<{name}>: {what} rejected: "

    def bare(reply: Reply) -> Reply:
        if reply.text.startswith(prefix):
            return dataclasses.replace(reply, text=reply.text[len(prefix) :])
        return reply

    match verdict:
        case Reject(reply=reply) | TempFail(reply=reply):
            return dataclasses.replace(verdict, reply=bare(reply))
        case Continue(defer_if=held) | Accept(defer_if=held) if held:
            kept = tuple(DeferIf(d.when, bare(d.reply)) for d in held)
            return dataclasses.replace(verdict, defer_if=kept)
    return verdict
