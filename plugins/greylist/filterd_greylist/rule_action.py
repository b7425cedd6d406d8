"""The ``greylist()`` rule action (filterd.sdk.rule_actions): the rules plugin's rules greylist
as the greylist plugin does (the same decision, greylisting.py, the same settings), for the
request's ``client_address``, ``client_name``, ``sender`` and ``recipient``, and answer as
postgrey answers Postfix:

- greylisted: ``<greylist_action> 4.2.0 Greylisted, see ...`` (``DEFER_IF_PERMIT`` by default);
- the first pass of a triplet: ``PREPEND X-Greylist: delayed N seconds by ...``, once per
  message (the request's ``instance``; postgrey remembers the last ten) and only where the
  door can still add a header (``protocol_state`` MAIL, RCPT or DATA); else ``DUNNO``;
- whitelisted, auto-whitelisted, passed before, no client address: ``DUNNO``;
- the state store failing: ``DUNNO`` or, with ``state.on_store_failure = "tempfail"``,
  ``451 4.3.0 Temporary policy state failure`` (logged either way).

The action takes no argument: ``greylist()``. ``greylist(ANYTHING)`` is refused when the rules
plugin starts (:meth:`GreylistAction.check_argument`); the settings are the rules plugin's
``actions.greylist`` table (the greylist plugin's keys, README.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from filterd.sdk import PluginEnv, TempFail
from filterd.sdk.rule_actions import settings_model, validated_settings

from .config import GreylistConfig
from .greylisting import Greylisting, StoreFailure

__all__ = ["HEADER_STATES", "GreylistAction", "make_greylist_action"]

HEADER_STATES = frozenset({"MAIL", "RCPT", "DATA"})
"""The protocol states at which a PREPEND still reaches the message (not CONNECT or HELO,
before the message exists at filterd's SMTP door; not END-OF-MESSAGE, where Postfix refuses
it)."""
INSTANCES = 10  # postgrey's is_new_instance(): the last ten messages given a header
DUNNO = "DUNNO"


@settings_model(GreylistConfig)
def make_greylist_action(settings: Mapping[str, object], env: PluginEnv) -> GreylistAction:
    """The entry point ``greylist`` of ``filterd.rule_actions``: ``settings`` are the greylist
    plugin's (GreylistConfig); a bad one raises ValueError naming ``actions.greylist.KEY``."""
    config = validated_settings(
        GreylistConfig,
        "greylist",
        settings,
        "the keys and values of the greylist plugin's settings, plugins/greylist/README.md",
    )
    return GreylistAction(config, env)


class GreylistAction:
    """One greylisting shared by every rule that says ``greylist()``."""

    def __init__(self, config: GreylistConfig, env: PluginEnv) -> None:
        self.config = config
        self.env = env
        self.greylisting = Greylisting(config, env)
        self._instances: deque[str] = deque(maxlen=INSTANCES)

    async def start(self) -> None:
        await self.greylisting.start()

    async def stop(self) -> None:
        await self.greylisting.stop()

    def check_argument(self, argument: str) -> str | None:
        """The rules plugin asks at start-up for each rule's argument: none is taken."""
        if argument.strip():
            return (
                "greylist() takes no argument: write greylist() and set delay, whitelists "
                "and the rest in the rules plugin's actions.greylist table"
            )
        return None

    async def __call__(self, argument: str, request: Mapping[str, str], now: float) -> str:
        problem = self.check_argument(argument)
        if problem is not None:  # refused at start-up; reached only through $$substitution
            self.env.log.warning(problem)
            return "451 4.3.5 Server configuration error"
        recipient = request.get("recipient", "")
        seconds = int(now)
        try:
            decision = await self.greylisting.decide(
                request.get("client_address", ""),
                request.get("client_name", ""),
                request.get("sender", ""),
                recipient,
                seconds,
            )
        except StoreFailure as failure:
            verdict = self.config.state.failure_verdict(failure, self.env.log, "greylist")
            if isinstance(verdict, TempFail):
                code, status, text = verdict.reply.code, verdict.reply.status, verdict.reply.text
                return " ".join(part for part in (str(code), status, text) if part)
            return DUNNO
        if decision.outcome == "greylisted":
            text = self.greylisting.greylist_text(recipient, decision.left)
            return f"{self.config.greylist_action} {text}"
        if decision.outcome == "first-pass" and self._first_header(request):
            return "PREPEND " + self.greylisting.header(decision.waited, seconds)
        return DUNNO

    def _first_header(self, request: Mapping[str, str]) -> bool:
        """Whether this request may add the header: a state where it reaches the message, and
        a message not given one yet (postgrey's ``is_new_instance``)."""
        if request.get("protocol_state", "").upper() not in HEADER_STATES:
            return False
        instance = request.get("instance", "")
        if not instance:
            return True  # postgrey: no instance sent, every pass is a new message
        if instance in self._instances:
            return False
        self._instances.appendleft(instance)
        return True
