"""One MTA connection as libmilter sees it: its state, what is negotiated, and how its steps
are answered. ``FilterdMilter`` (``callbacks``) adds what each step does.

- **Per-connection state only on this object**: libmilter may run a connection's callbacks
  on different OS threads, one at a time; shared counters only in the bridge.
- **Negotiation** (``milter_map.protocol_flags``): no reply to headers and body chunks, no
  end-of-headers step, and no reply to HELO/MAIL/RCPT when no plugin implements the stage.
  Such a step never refuses (libmilter would drop the reply and lose step with the MTA): a
  failure there, or a stop that began before a MAIL without reply, is answered TEMPFAIL at
  the next step that has one — RCPT (with a plugin), DATA or end of message — and every later
  step of that message with a reply is refused too.
- **Guarded**: every callback catches its own failures and answers TEMPFAIL 451 4.3.0 with a
  log line (pymilter's default would be "untrapped exception").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import Milter
import milter

from filterd.frontdoors.milter.bridge import MilterBridge, MilterChain
from filterd.frontdoors.milter.message import MilterMessage
from filterd.maillog import MailLog, queue_id_var
from filterd.model.envelope import Session
from filterd.model.reply import Reply
from filterd.model.verdict import Disposition
from filterd.protocols.milter_map import (
    CONTINUE,
    FILTER_FAILED,
    MACRO_NAMES,
    NOREPLY,
    TEMPFAIL,
    Response,
    render_refusal,
)

__all__ = ["MilterConnection", "guarded"]

log = MailLog("milter")

P = ParamSpec("P")
C = TypeVar("C", bound="MilterConnection")


def guarded(
    stage: str, quiet: int = 0
) -> Callable[[Callable[Concatenate[C, P], int]], Callable[Concatenate[C, P], int]]:
    """A callback never lets an exception reach pymilter: log it and answer TEMPFAIL.

    ``quiet``: the step's ``SMFIP_NR_*`` bit. If filterd asks for it with this connection's
    chain (``view.protocol``), the step never refuses: a failure is kept for the next step that
    has a reply (RCPT with a plugin, DATA, end of message). The answer is NOREPLY if the bit
    was negotiated on this connection, else CONTINUE — never NOREPLY to a step the MTA waits
    for, and never a refusal libmilter would drop (it forces NOREPLY on a "no reply" step, and
    keeps a CONTINUE there in step). That holds even for a connection that skipped negotiation
    (a new SMTP session on the same milter connection, SMFIC_QUIT_NC: ``_protocol`` is 0)."""

    def decorate(callback: Callable[Concatenate[C, P], int]) -> Callable[Concatenate[C, P], int]:
        # One wrapper per kind of step, each as short as it can be: it runs on every callback.
        if not quiet:

            @functools.wraps(callback)
            def answering(self: C, /, *args: P.args, **kwargs: P.kwargs) -> int:
                try:
                    return callback(self, *args, **kwargs)
                except Exception:
                    log.exception(f"internal error in {stage}: tempfail")
                    return self._refuse(FILTER_FAILED)

            return answering

        @functools.wraps(callback)
        def wrapper(self: C, /, *args: P.args, **kwargs: P.kwargs) -> int:
            if not self.view.protocol & quiet:  # the step has a reply with this chain
                try:
                    return callback(self, *args, **kwargs)
                except Exception:
                    log.exception(f"internal error in {stage}: tempfail")
                    return self._refuse(FILTER_FAILED)
            try:
                code = callback(self, *args, **kwargs)
            except Exception:
                log.exception(f"internal error in {stage}: tempfail at the next reply")
                self._fail_quietly()
                code = CONTINUE
            if code != CONTINUE:  # a bug: this step must not refuse
                log.error(f"{stage} answered {code} without a reply: tempfail at the next reply")
                self._fail_quietly()
            return NOREPLY if self._protocol & quiet else CONTINUE

        return wrapper

    return decorate


class MilterConnection(Milter.Base):  # type: ignore[misc]  # pymilter has no type stubs
    """One MTA connection: all its state lives here."""

    def __init__(self, bridge: MilterBridge) -> None:
        self.bridge = bridge
        # The chain this connection runs to its end, even if a reload brings another; the
        # first callback (negotiate or connect) creates this object, close releases it.
        self.view: MilterChain = bridge.attach()
        self.attached = True  # until close
        self._protocol = 0  # the negotiated SMFIP_* bits (pymilter's name; set by negotiate)
        self.counted = False  # admitted at CONNECT: counted in bridge.connections
        self.broken = False  # a step without reply failed outside a message: refuse them all
        self.session: Session | None = None
        self.message: MilterMessage | None = None
        self.session_disposition: Disposition | None = None

    def negotiate(self, opts: list[int]) -> int:
        """Ask for the steps of ``milter_map.protocol_flags`` (replaces pymilter's default,
        which derives them from decorators on the class), as far as the MTA offers them; keep
        every action the MTA offers. ``opts``: [actions, protocol, reserved, reserved],
        changed in place."""
        try:
            self._actions = opts[0]
            self._protocol = opts[1] & self.view.protocol
            opts[1] = self._protocol
            opts[2] = 0
            opts[3] = 0
        except Exception:
            log.exception("internal error in NEGOTIATE: every step with a reply")
            self._protocol = 0
            return int(milter.ALL_OPTS)
        return CONTINUE

    def _macros(self, names: tuple[str, ...] = MACRO_NAMES) -> dict[str, str]:
        getsymval = self._ctx.getsymval
        found: dict[str, str] = {}
        for name in names:
            value = getsymval(name)
            if value:
                found[name] = str(value)
        return found

    def _answer(self, response: Response) -> int:
        if response.reply is not None:
            reply = response.reply
            self.setreply(reply.rcode, reply.xcode, *reply.lines)
        return response.code

    def _refuse(self, reply: Reply) -> int:
        return self._answer(render_refusal(TEMPFAIL, reply))

    def _fail_quietly(self) -> None:
        if self.message is not None:
            self.message.refusal = FILTER_FAILED
        else:
            self.broken = True

    def _pending_refusal(self) -> Reply | None:
        """What a step with a reply must answer for an earlier step without one."""
        if self.broken:
            return FILTER_FAILED
        return self.message.refusal if self.message is not None else None

    def _refuse_pending(self, stage: str, reply: Reply) -> int:
        """Refuse without ending the message: Postfix may still send more of it (another
        RCPT), and every step of it that has a reply must be refused too."""
        if reply is FILTER_FAILED:
            log.warning(f"an earlier step failed: tempfail at {stage}")
        return self._refuse(reply)

    def _detach(self) -> None:
        """The connection has closed: it no longer holds its chain."""
        if self.attached:
            self.attached = False
            self.bridge.detach(self.view)

    def _uncount_message(self) -> None:
        message = self.message
        if message is not None and message.counted:
            message.counted = False
            self.bridge.end_message()

    def _end_message(self) -> None:
        message, self.message = self.message, None
        if message is not None:
            message.close()
            if message.counted:
                self.bridge.end_message()
        queue_id_var.set("NOQUEUE")
