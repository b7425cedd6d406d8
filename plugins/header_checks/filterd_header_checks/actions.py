"""header_checks(5) actions as data.

An action is the value a regexp:/pcre: table returns for a matching rule, after
``$n`` substitution: a command word followed by optional text. Postfix's cleanup(8)
(``cleanup_act()`` in cleanup_message.c) splits it at the first space or tab, compares
the command case-insensitively and skips whitespace before the optional text; this
module does the same.

Only the commands that header_checks(5) lists exist: BCC, DISCARD, DUNNO, FILTER, HOLD,
IGNORE, INFO, OK, PASS, PREPEND, REDIRECT, REPLACE, REJECT, STRIP and WARN. There is no
DEFER, DEFER_IF_PERMIT or 4xx/5xx numeric action in header_checks (those belong to
access(5)); cleanup(8) logs "unknown command" for them and treats the line as not
matched, and :func:`parse_action` refuses them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from filterd.sdk.action_text import dsn_split, is_header, split_action

__all__ = [
    "Action",
    "ActionError",
    "ActionKind",
    "Context",
    "is_header",
    "parse_action",
    "split_action",
]

Context = Literal["header", "body"]

#: Default REJECT reply when the action has no text (cleanup_strerror.c, CLEANUP_STAT_CONT).
DEFAULT_REJECT_REASON = "5.7.1 message content rejected"


class ActionError(ValueError):
    """The action text names no header_checks(5) command, or misuses one."""


class ActionKind(enum.Enum):
    """The header_checks(5) commands."""

    BCC = "BCC"
    DISCARD = "DISCARD"
    DUNNO = "DUNNO"
    FILTER = "FILTER"
    HOLD = "HOLD"
    IGNORE = "IGNORE"
    INFO = "INFO"
    OK = "OK"
    PASS = "PASS"
    PREPEND = "PREPEND"
    REDIRECT = "REDIRECT"
    REPLACE = "REPLACE"
    REJECT = "REJECT"
    STRIP = "STRIP"
    WARN = "WARN"


_BY_NAME = {kind.value: kind for kind in ActionKind}

#: Actions after which cleanup(8) inspects no further header or body line.
_STOPS = frozenset({ActionKind.REJECT, ActionKind.DISCARD, ActionKind.PASS})
#: Actions that remove the inspected line from the message.
_DELETES = frozenset({ActionKind.IGNORE, ActionKind.STRIP})
#: Actions that behave as if the line had not matched at all.
_NO_OPS = frozenset({ActionKind.DUNNO, ActionKind.OK})
#: Actions that smtp(8) header/body checks (smtp_header_checks, ...) do not support.
_NOT_IN_SMTP = frozenset(
    {
        ActionKind.BCC,
        ActionKind.DISCARD,
        ActionKind.FILTER,
        ActionKind.HOLD,
        ActionKind.PASS,
        ActionKind.REDIRECT,
        ActionKind.REJECT,
    }
)


@dataclass(frozen=True, slots=True)
class Action:
    """One header_checks(5) action.

    ``raw`` is the whole table value exactly as Postfix returns it (what
    ``postmap -q`` prints); ``command`` its first word as written; ``text`` the
    optional text after it with leading whitespace removed (Postfix's
    ``optional_text``).
    """

    kind: ActionKind
    raw: str
    command: str
    text: str

    @property
    def stops_inspection(self) -> bool:
        """REJECT, DISCARD and PASS end header/body inspection of the message."""
        return self.kind in _STOPS

    @property
    def deletes_line(self) -> bool:
        """IGNORE and STRIP remove the inspected line."""
        return self.kind in _DELETES

    @property
    def is_noop(self) -> bool:
        """DUNNO and OK: as if the line had not matched."""
        return self.kind in _NO_OPS

    @property
    def supported_in_smtp_checks(self) -> bool:
        """Whether smtp(8)'s smtp_*_checks accept this action."""
        return self.kind not in _NOT_IN_SMTP

    def reject_reason(self) -> str:
        """The REJECT reply text with its enhanced status code (dsn_prepend("5.7.1", text)).

        A text that starts with a valid RFC 3463 code keeps it; otherwise "5.7.1 " is
        prepended. Without text the reply is "5.7.1 message content rejected". As in
        cleanup(8), a code whose class is neither 4 nor 5 is turned into a 4 (defer).
        """
        if not self.text:
            return DEFAULT_REJECT_REASON
        code, rest = dsn_split("5.7.1", self.text)
        reason = f"{code} {rest}"
        if reason[0] not in "45":
            reason = "4" + reason[1:]
        return reason

    def problem(self, context: Context = "header") -> str | None:
        """Why cleanup(8) would ignore this action (it logs a warning), or None.

        These checks run in cleanup(8) on the value after ``$n`` substitution, so a
        rule that is fine at load time can still produce an unusable value.
        """
        kind, text = self.kind, self.text
        if kind is ActionKind.FILTER:
            if not text:
                return "missing FILTER command argument"
            if ":" not in text:
                return f"bad FILTER command {text} -- need transport:destination"
        elif kind in (ActionKind.REDIRECT, ActionKind.BCC):
            if "@" not in text:
                what = "REDIRECT target" if kind is ActionKind.REDIRECT else "BCC address"
                return f'bad {what} "{text}" -- need user@domain'
        elif kind in (ActionKind.PREPEND, ActionKind.REPLACE):
            if not text:
                return f"{kind.value} action without text"
            if context == "header" and not is_header(text):
                return f'bad {kind.value} header text "{text}" -- need "headername: headervalue"'
        return None


def parse_action(raw: str) -> Action:
    """Parse a table value (after substitution) into an :class:`Action`.

    Raises :class:`ActionError` for a command header_checks(5) does not list.
    """
    command, text = split_action(raw)
    kind = _BY_NAME.get(command.upper())
    if kind is None or not command.isascii():
        if not command:
            raise ActionError("empty action")
        raise ActionError(f"unknown header_checks action {command!r}")
    return Action(kind=kind, raw=raw, command=command, text=text)
