"""The greylist plugin: postgrey 1.37's greylisting at RCPT, on every front door (the decision:
greylisting.py, shared with the ``greylist()`` rule action).

Greylisted: the policy door answers postgrey's action as postgrey sends it
(``DEFER_IF_PERMIT 4.2.0 Greylisted, see ...``: postgrey prepends ``4.2.0`` when the request
has ``etrn_domain``, which Postfix 2.3 and later always sends); the SMTP, LMTP and milter doors
answer ``450 4.2.0 Greylisted, see ...`` at RCPT when the chain permits the recipient (the
chain holds DEFER_IF_PERMIT as Postfix does: a later plugin's refusal wins). Another
``greylist_action`` (DEFER, 451, ...) refuses at once, with its code (450 for DEFER).

The first pass of a triplet adds the ``X-Greylist`` header (once per message).
"""

from __future__ import annotations

import functools
import re

from filterd.sdk import (
    AddHeader,
    Continue,
    DeferIf,
    Finding,
    NoteKey,
    OnRcpt,
    Plugin,
    Recipient,
    Reply,
    TempFail,
    Transaction,
    Verdict,
)

from .config import GreylistConfig
from .greylisting import Greylisting, StoreFailure

HEADER_ADDED = NoteKey[bool]("greylist.header_added")  # transaction: X-Greylist is on it
DEFER_CODE = 450  # Postfix's access_map_defer_code, what DEFER_IF_PERMIT becomes
_STATUS = re.compile(r"([245]\.\d{1,3}\.\d{1,3})\s+(.*)", re.DOTALL)


class Greylist(Plugin[GreylistConfig], OnRcpt):
    name = "greylist"
    Config = GreylistConfig

    _greylisting: Greylisting | None = None  # set by start()
    _action: tuple[str, int] = ("DEFER_IF_PERMIT", DEFER_CODE)  # greylist_action, its code

    async def start(self) -> None:
        action = self.config.greylist_action
        code = int(action) if re.fullmatch(r"4\d\d", action) else DEFER_CODE
        self._action = (action.upper(), code)
        greylisting = Greylisting(self.config, self.env)
        await greylisting.start()
        self._greylisting = greylisting

    async def stop(self) -> None:
        if self._greylisting is not None:
            await self._greylisting.stop()
            self._greylisting = None

    async def on_rcpt(self, t: Transaction, rcpt: Recipient) -> Verdict:
        greylisting = self._greylisting
        if greylisting is None:
            raise RuntimeError("the greylist plugin was not started")
        now = int(self.env.clock())
        client = t.client
        try:
            decision = await greylisting.decide(
                client.address, client.name, t.sender, rcpt.address, now
            )
        except StoreFailure as failure:
            return self.config.state.failure_verdict(failure, self.env.log, "greylist")
        match decision.outcome:
            case "greylisted":
                text = greylisting.greylist_text(rcpt.address, decision.left)
                return self._greylisted(text, decision.left, decision.why)
            case "first-pass" if not t.notes.get(HEADER_ADDED):
                t.notes.set(HEADER_ADDED, True)
                name, _, value = greylisting.header(decision.waited, now).partition(":")
                return Continue(
                    edits=(AddHeader(name, value.strip()),),
                    findings=(Finding("greylist", decision.why),),
                )
            case "first-pass":
                return _go_on("pass")
        return _go_on(decision.why)

    def _greylisted(self, text: str, left: int, why: str) -> Continue | TempFail:
        """postgrey's answer: ``<greylist_action> <text>``. DEFER_IF_PERMIT (the default)
        and DEFER_IF_REJECT are held by the chain as Postfix holds them (450 at the end of the
        stage if it permits / if a later plugin rejects); the policy door sends them to Postfix
        as postgrey does. Any other action (DEFER, 451, ...) refuses at once."""
        action, code = self._action
        findings = (Finding("greylist", f"{why} ({left}s missing)"),)
        reply = _reply(code, text)
        match action:
            case "DEFER_IF_PERMIT":
                return Continue(findings=findings, defer_if=(DeferIf("permit", reply),))
            case "DEFER_IF_REJECT":
                return Continue(findings=findings, defer_if=(DeferIf("reject", reply),))
            case _:
                return TempFail(reply, findings)


@functools.lru_cache(maxsize=1024)
def _reply(code: int, text: str) -> Reply:
    """The reply with a greylisting text (the same for a recipient domain and the seconds
    left: made once): its enhanced status code split off when it is a 4.X.X one."""
    status, rest = "", text
    match = _STATUS.fullmatch(text)
    if match is not None and match.group(1).startswith("4"):
        status, rest = match.group(1), match.group(2)
    return Reply(code, status, rest)


def _go_on(why: str) -> Continue:
    return Continue(findings=_found(why))


@functools.lru_cache(maxsize=64)
def _found(why: str) -> tuple[Finding, ...]:
    """The findings of a going on (a handful of reasons: made once)."""
    return (Finding("greylist", why),)
