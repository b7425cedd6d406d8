"""One SMTP session's AUTH (RFC 4954), checked against Dovecot as Postfix's smtpd does with
``smtpd_sasl_type = dovecot`` (``smtpd_sasl_glue.c``): the answers, the log lines, the limits.

The SMTP codec decides when AUTH may be given (after STARTTLS, outside a transaction, once);
this module runs the exchange and turns each step into the reply:

- ``334 <base64>``: Dovecot's challenge; the client's next line is its answer (``*`` aborts:
  ``501 5.7.0 Authentication aborted``).
- ``235 2.7.0 Authentication successful``: the session may relay from now on.
- ``535 5.7.8 Error: authentication failed[: reason]``: bad credentials, a mechanism other than
  PLAIN and LOGIN (or one Dovecot does not offer), a response that is not base64.
- ``454 4.7.0 Temporary authentication failure``: Dovecot is not there, too slow, broken, or
  says its own backend failed. Nothing the client did wrong; it may try again later.

Every failure is logged as Postfix logs it (``warning: host[addr]: SASL PLAIN authentication
failed: reason, sasl_username=...``), answered only after ``auth_failure_delay`` (Dovecot adds
its own penalty per client address), and counted: at ``max_auth_failures`` the session says
``421`` and closes (``too_many_failures``).
"""

from __future__ import annotations

import trio

from filterd.config.schema import LimitsConfig
from filterd.frontdoors.smtp.dovecot_auth import (
    AuthUnavailable,
    DovecotAuth,
    DovecotExchange,
    Step,
)
from filterd.maillog import MailLog
from filterd.model import replies
from filterd.model.envelope import Client
from filterd.model.reply import Reply
from filterd.protocols.dovecot_auth import Challenge, Failure, valid_base64

__all__ = ["MECHANISMS", "SmtpAuth"]

MECHANISMS = ("PLAIN", "LOGIN")
"""What filterd offers (when Dovecot offers them too): both send the password itself, which
is why AUTH comes only after STARTTLS."""

log = MailLog("smtpd")


class SmtpAuth:
    """The AUTH state of one session: the exchange in progress, who authenticated, how many
    attempts failed."""

    def __init__(
        self, dovecot: DovecotAuth, limits: LimitsConfig, peer: Client, local_ip: str | None
    ) -> None:
        self.dovecot = dovecot
        self.limits = limits
        self.peer = peer
        self.local_ip = local_ip
        self.username: str | None = None
        self.method: str | None = None
        self.failures = 0
        self._exchange: DovecotExchange | None = None
        self._mechanism = ""

    @property
    def too_many_failures(self) -> bool:
        return self.failures >= self.limits.max_auth_failures

    async def start(self, mechanism: str, initial_response: str | None, *, secured: bool) -> Reply:
        """The reply to ``AUTH mechanism [initial-response]``."""
        await self.abandon()
        self._mechanism = mechanism
        if mechanism not in MECHANISMS:
            return await self._failed("Invalid authentication mechanism")
        if initial_response == "=":  # RFC 4954 §4: an empty initial response
            initial_response = ""
        elif initial_response is not None and not valid_base64(initial_response):
            return await self._failed("Invalid base64 data in initial response")
        try:
            self._exchange = await self.dovecot.begin()
            if mechanism not in self._exchange.mechanisms:
                return await self._failed("Invalid authentication mechanism")
            step = await self._exchange.start(
                mechanism,
                initial_response,
                local_ip=self.local_ip,
                remote_ip=None if self.peer.address == "unknown" else self.peer.address,
                secured=secured,
            )
        except AuthUnavailable as exc:
            return await self._unavailable(exc)
        return await self._step(step)

    async def respond(self, data: str) -> Reply:
        """The reply to the client's line after a 334."""
        if self._exchange is None:  # the codec only gives a response after our 334
            return replies.INTERNAL_ERROR
        if data == "*":
            await self.abandon()
            self.failures += 1
            log.plain_warning(
                f"{self.peer.describe()}: SASL {self._mechanism} authentication aborted"
            )
            return replies.AUTH_ABORTED
        if not valid_base64(data):
            return await self._failed("Invalid base64 data in continued response")
        try:
            step = await self._exchange.respond(data)
        except AuthUnavailable as exc:
            return await self._unavailable(exc)
        return await self._step(step)

    async def abandon(self) -> None:
        """Drop an exchange in progress (the session ended it, or is ending)."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.aclose()

    async def _step(self, step: Step) -> Reply:
        if isinstance(step, Challenge):
            return Reply(334, "", step.data)
        if isinstance(step, Failure):
            return await self._failed(step.reason, step.user, temporary=step.temporary)
        await self.abandon()
        self.username, self.method = step.user, self._mechanism
        return replies.AUTH_OK

    async def _unavailable(self, exc: AuthUnavailable) -> Reply:
        log.plain_warning(f"SASL: {exc}")
        return await self._failed(None, temporary=True)

    async def _failed(
        self, reason: str | None, user: str | None = None, *, temporary: bool = False
    ) -> Reply:
        await self.abandon()
        self.failures += 1
        if reason:  # Dovecot's text goes into our reply: one printable line (as Postfix)
            reason = "".join(c if c.isprintable() else "?" for c in reason)
        log.plain_warning(
            f"{self.peer.describe()}: SASL {self._mechanism} authentication failed: "
            f"{reason or '(reason unavailable)'}, sasl_username={user or '(unavailable)'}"
        )
        await trio.sleep(self.limits.auth_failure_delay)
        reply = replies.AUTH_TEMPORARY if temporary else replies.AUTH_FAILED
        return reply.with_text(f"{reply.text}: {reason}") if reason else reply
