"""The rules plugin's ``actions.NAME`` tables (filterd.sdk.rule_actions): a bad setting of a
rule action is found when the configuration is loaded, and reported as every other plugin
setting: the configuration file, the line, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.chain.registry import resolve_chain
from filterd.config.load import load_config
from filterd.errors import ConfigError

HEAD = """\
[[chain]]
plugin = "rules"

[chain.config]
rules = [{ recipient_domain = "example.org", action = "greylist()" }]
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "filterd.toml"
    path.write_text(HEAD + text)
    config = load_config(path, serving=False)
    with pytest.raises(ConfigError) as caught:
        resolve_chain(config)
    return [str(problem) for problem in caught.value.problems]


def test_a_bad_greylist_setting_names_file_line_key_and_fix(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        '\n[chain.config.actions.greylist]\nmax_age = "35d"\ndelay = "soon"\ndealy = "5m"\n',
    )
    where = tmp_path / "filterd.toml"
    assert found == [
        f"{where}:9: chain[0].config.actions.greylist.delay: expected a duration such as "
        '"30s", got "soon" (fix: write a number with a unit ms, s, m, h, d or w ("500ms", '
        '"30s", "5m", "1h", "1h30m"), or a plain number of seconds)',
        f'{where}:10: chain[0].config.actions.greylist.dealy: unknown key "dealy" (fix: '
        "did you mean delay? valid keys here: delay, max_age, retry_window, greylist_action, "
        "greylist_text, auto_whitelist_clients, lookup_by_host, ipv4cidr, ipv6cidr, privacy, "
        "whitelist_clients, whitelist_recipients, x_greylist_header, hostname, state)",
    ]


def test_an_inline_table_and_a_nested_one_are_located_too(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "\n[chain.config.actions]\n"
        'greylist = { delay = "5m", state = { backend = "redis", url = "http://x" } }\n',
    )
    assert len(found) == 1
    assert f"{tmp_path / 'filterd.toml'}:8: chain[0].config.actions.greylist.state" in found[0]
    assert 'is not a Redis URL: write "redis://host:port/db"' in found[0]


def test_settings_of_an_action_not_installed_say_what_is(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, "\n[chain.config.actions.greylst]\ndelay = 1\n")
    assert found == (
        f"{tmp_path / 'filterd.toml'}:7: chain[0].config.actions.greylst: no rule action "
        "greylst() is installed (fix: did you mean greylist? installed rule actions: greylist, "
        "rate, rate5321, rcpt, rcpt5321, size, size5321; "
        "install the package that provides greylst() (e.g. filterd-greylst) or remove the table)"
    )


def test_good_settings_pass(tmp_path: Path) -> None:
    path = tmp_path / "filterd.toml"
    path.write_text(HEAD + '\n[chain.config.actions.greylist]\ndelay = "1s"\n')
    ((_, _, settings),) = resolve_chain(load_config(path, serving=False))
    assert settings.actions == {"greylist": {"delay": "1s"}}  # type: ignore[attr-defined]


def test_a_bad_rate_limit_setting_names_file_line_key_and_fix(tmp_path: Path) -> None:
    """rate(), size() and rcpt() (the ratelimit package) declare their settings too."""
    found = problems(tmp_path, "\n[chain.config.actions.size]\nstat = {}\n")
    assert len(found) == 1
    assert found[0].startswith(
        f'{tmp_path / "filterd.toml"}:8: chain[0].config.actions.size.stat: unknown key "stat" '
        "(fix: did you mean state?"
    ), found[0]


def test_a_rule_action_that_cannot_be_imported_is_a_problem_at_its_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib.metadata import EntryPoint

    from pydantic import ValidationError

    from filterd.sdk import rule_actions

    broken = EntryPoint("broken", "filterd_no_such_module:make", rule_actions.ENTRY_POINT_GROUP)
    monkeypatch.setattr(rule_actions, "entry_points", lambda group: [broken])
    with pytest.raises(ValidationError) as caught:
        rule_actions.check_action_settings({"broken": {}}, ("actions",))
    (error,) = caught.value.errors()
    assert error["loc"] == ("actions", "broken")
    assert "the rule action broken() (filterd_no_such_module:make) cannot be loaded" in error["msg"]
