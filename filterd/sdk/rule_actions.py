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

A factory may declare the model of its settings with :func:`settings_model`::

    @settings_model(GreylistConfig)
    def make_greylist_action(settings, env): ...

The rules plugin then checks its ``actions.NAME`` table against that model when the
configuration is loaded (:func:`check_action_settings`), so that a bad setting is reported as
every other plugin setting is: the configuration file, the line, the key and the fix. A factory
without one gets its table unchecked until start-up.

An action may check the arguments the rules give it: a method ``check_argument(argument)``
returning a problem (with its fix) or None. The rules plugin asks it at start-up for every rule
naming the action (:func:`argument_problem`), and refuses to start on a problem, naming the
rule.

An action that keeps its state per rule (postfwd's ``rate()``: a counter per rule, so two
rules with the same limit count apart) sets the attribute ``per_rule = True``
(:func:`takes_rule`): the rules plugin then awaits it with the keyword ``rule``, the id of the
rule that matched (its ``id``, or postfwd's ``R-<index>`` for a rule without one).

A failure the action cannot decide around (its state store is down and its policy is to
tempfail) is an answer too: ``"451 4.3.0 ..."``. An exception is a bug: the chain's
``on_error`` handles it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Protocol, TypeGuard, TypeVar

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from filterd.sdk.plugin import PluginConfig, PluginEnv

__all__ = [
    "ENTRY_POINT_GROUP",
    "PerRuleAction",
    "RuleAction",
    "RuleActionFactory",
    "argument_problem",
    "check_action_settings",
    "installed_rule_actions",
    "load_rule_action",
    "settings_model",
    "takes_rule",
    "validated_settings",
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


class PerRuleAction(RuleAction, Protocol):
    """An action with ``per_rule = True``: awaited with the matching rule's id."""

    per_rule: bool

    async def __call__(
        self, argument: str, request: Mapping[str, str], now: float, *, rule: str = ""
    ) -> str | None:
        """As :meth:`RuleAction.__call__`; ``rule``: the id of the rule that matched."""


RuleActionFactory = Callable[[Mapping[str, object], PluginEnv], RuleAction]
FactoryT = TypeVar("FactoryT", bound=Callable[..., object])
ConfigT = TypeVar("ConfigT", bound=PluginConfig)

_SETTINGS_MODEL = "filterd_settings_model"


def settings_model(model: type[PluginConfig]) -> Callable[[FactoryT], FactoryT]:
    """Declare ``model`` as the settings of the decorated factory (see the module text)."""

    def declare(factory: FactoryT) -> FactoryT:
        setattr(factory, _SETTINGS_MODEL, model)
        return factory

    return declare


def validated_settings(
    model: type[ConfigT], name: str, settings: Mapping[str, object], fix: str
) -> ConfigT:
    """A factory's ``settings`` (the rules plugin's ``actions.NAME`` table) as ``model``; a bad
    one raises ValueError naming each ``actions.NAME.KEY`` and ``fix``. (With
    :func:`settings_model` the configuration's loading already said so with its file and line.)"""
    try:
        return model.model_validate(dict(settings))
    except ValidationError as exc:
        problems = "; ".join(
            f"actions.{name}.{'.'.join(str(part) for part in error['loc']) or '?'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(f"rules plugin: {problems} (fix: {fix})") from None


def argument_problem(action: RuleAction, argument: str) -> str | None:
    """What the action's optional ``check_argument`` finds wrong with ``argument`` (None: an
    action without the method takes any argument)."""
    check = getattr(action, "check_argument", None)
    if check is None:
        return None
    problem: str | None = check(argument)
    return problem


def takes_rule(action: RuleAction) -> TypeGuard[PerRuleAction]:
    """Whether the action wants the matching rule's id (``per_rule = True``; module text)."""
    return getattr(action, "per_rule", False) is True


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


def check_action_settings(
    actions: Mapping[str, Mapping[str, object]], at: tuple[str | int, ...]
) -> None:
    """Check every ``actions.NAME`` table against the model its factory declares
    (:func:`settings_model`): an action that is not installed, or a bad setting, raises a
    pydantic ``ValidationError`` located at ``(*at, NAME, KEY, ...)``, which the configuration
    loader reports with the file, the line, the key and the fix. Call it from a settings
    model's validator; ``at`` is where the ``actions`` table is in that model."""
    installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    problems: list[InitErrorDetails] = []
    for name, settings in actions.items():
        entry = installed.get(name)
        if entry is None:
            problems.append(_not_installed(name, settings, sorted(installed), (*at, name)))
            continue
        try:
            factory = entry.load()
        except Exception as exc:  # a package that does not import: say so at its table
            reason = f"the rule action {name}() ({entry.value}) cannot be loaded: {exc!r}"
            hint = f"reinstall the package that provides {name}() or remove the table"
            problems.append(_problem(reason, hint, (*at, name), settings))
            continue
        model = getattr(factory, _SETTINGS_MODEL, None)
        if not (isinstance(model, type) and issubclass(model, PluginConfig)):
            continue
        try:
            model.model_validate(dict(settings))
        except ValidationError as exc:
            problems.extend(_located(exc, model, (*at, name)))
    if problems:
        raise ValidationError.from_exception_data("rule action settings", problems)


def _not_installed(
    name: str, settings: object, installed: list[str], loc: tuple[str | int, ...]
) -> InitErrorDetails:
    close = difflib.get_close_matches(name, installed, n=1, cutoff=0.6)
    suggestion = f"did you mean {close[0]}? " if close else ""
    hint = (
        f"{suggestion}installed rule actions: {', '.join(installed) or 'none'}; install the "
        f"package that provides {name}() (e.g. filterd-{name}) or remove the table"
    )
    reason = f"no rule action {name}() is installed"
    return _problem(reason, hint, loc, settings)


def _located(
    exc: ValidationError, model: type[PluginConfig], at: tuple[str | int, ...]
) -> list[InitErrorDetails]:
    """The model's errors, at their place below ``at``; an unknown key says the valid ones
    (the loader cannot: it does not know the model)."""
    located: list[InitErrorDetails] = []
    for error in exc.errors():
        loc = (*at, *error["loc"])
        if error["type"] == "extra_forbidden":
            key = str(error["loc"][-1])
            valid = list(model.model_fields)
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            suggestion = f"did you mean {close[0]}? " if close else ""
            located.append(
                _problem(
                    f'unknown key "{key}"',
                    f"{suggestion}valid keys here: {', '.join(valid)}",
                    loc,
                    error["input"],
                )
            )
            continue
        kind = PydanticCustomError(error["type"], error["msg"], error.get("ctx"))
        located.append(InitErrorDetails(type=kind, loc=loc, input=error["input"]))
    return located


def _problem(reason: str, hint: str, loc: tuple[str | int, ...], value: object) -> InitErrorDetails:
    kind = PydanticCustomError("rule_action_settings", "{reason}", {"reason": reason, "hint": hint})
    return InitErrorDetails(type=kind, loc=loc, input=value)
