"""Rule actions other packages provide: the seam between the ``rules`` plugin (postfwd-style
rule lists) and stateful actions such as ``greylist`` and ``ratelimit``.

A rule's action ``NAME(ARGUMENT)`` that is not one of the rule language's own (``jump``,
``set``, ``score``) is looked up as an entry point ``NAME`` in the group
``filterd.rule_actions``. The entry point is a :data:`RuleActionFactory`: called once at
start-up with the settings the rules plugin's ``actions.NAME`` table gives (an empty mapping
when it gives none) and the plugin's environment, it returns a :class:`RuleAction`.

When a rule matches, the rules plugin awaits the action with the rule's argument, the
request's attributes (``filterd.sdk.policy_request`` names, after the rules' ``set()``
changes) and the rule's clock. The action answers

- an access(5) action (``"DEFER_IF_PERMIT 4.2.0 Greylisted ..."``, ``"PREPEND X-Greylist:
  ..."``, ``"DUNNO"``): the rule list ends with it, as a rule's own action ends it;
- None: no decision; the rule list goes on with the next rule (postfwd's ``rate()`` counts and
  goes on).

A package registers its action in its ``pyproject.toml``::

    [project.entry-points."filterd.rule_actions"]
    greylist = "filterd_greylist.rule_action:make_greylist_action"

An action may check the arguments the rules give it: a method ``check_argument(argument)``
returning a problem (with its fix) or None. The rules plugin asks it at start-up for every rule
naming the action (:func:`argument_problem`), and refuses to start on a problem, naming the
rule.

A failure the action cannot decide around (its state store is down and its policy is to
tempfail) is an answer too: ``"451 4.3.0 ..."``. An exception is a bug: the chain's
``on_error`` handles it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Protocol

from filterd.sdk.plugin import PluginEnv

__all__ = [
    "ENTRY_POINT_GROUP",
    "RuleAction",
    "RuleActionFactory",
    "argument_problem",
    "installed_rule_actions",
    "load_rule_action",
]

ENTRY_POINT_GROUP = "filterd.rule_actions"


class RuleAction(Protocol):
    """One named action, shared by every rule that names it."""

    async def start(self) -> None:
        """Open what the action needs (its state store); runs once before the first request."""

    async def stop(self) -> None:
        """Close what ``start`` opened."""

    async def __call__(self, argument: str, request: Mapping[str, str], now: float) -> str | None:
        """An access(5) action that ends the rule list, or None to go on with the next rule.
        ``now`` is the rules' clock (Unix seconds), for tests that set the time."""


RuleActionFactory = Callable[[Mapping[str, object], PluginEnv], RuleAction]


def argument_problem(action: RuleAction, argument: str) -> str | None:
    """What the action's optional ``check_argument`` finds wrong with ``argument`` (None: an
    action without the method takes any argument)."""
    check = getattr(action, "check_argument", None)
    if check is None:
        return None
    problem: str | None = check(argument)
    return problem


def installed_rule_actions() -> dict[str, str]:
    """Name -> entry point value of every rule action installed."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_rule_action(name: str, settings: Mapping[str, object], env: PluginEnv) -> RuleAction:
    """The action ``name`` made with ``settings``; LookupError when no installed package
    provides it (a settings model checks names earlier with :func:`installed_rule_actions`)."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        available = ", ".join(sorted(installed_rule_actions())) or "none"
        raise LookupError(
            f"rule action {name}() is not installed (installed rule actions: {available}): "
            f"install the package that provides it (e.g. filterd-{name}) or remove the rules "
            "that use it"
        )
    factory: RuleActionFactory = found[0].load()
    return factory(settings, env)
