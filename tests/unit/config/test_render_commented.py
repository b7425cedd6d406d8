"""The commented configuration: every setting with its description and default, generated from
the schema, loading as the same configuration; deploy/filterd.example.toml is its form of
deploy/filterd.toml, the deployment's configuration (absolute paths; the embedded default keeps
relative ones for `make run` in the checkout)."""

from __future__ import annotations

import re
import textwrap
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from filterd.chain.registry import load_plugin_class
from filterd.cli.main import main
from filterd.config import schema
from filterd.config.load import load_config, parse_config
from filterd.config.render import WIDTH, _models, render_commented
from filterd.config.schema import Config

ROOT = Path(__file__).resolve().parents[3]
DEPLOYED = "deploy/filterd.toml"
EXAMPLE = ROOT / "deploy" / "filterd.example.toml"
REGENERATE = (
    f".venv/bin/filterd check-config --commented -c {DEPLOYED} > {EXAMPLE.relative_to(ROOT)}"
)

MODELS = [
    model
    for model in vars(schema).values()
    if isinstance(model, type)
    and issubclass(model, BaseModel)
    and model.__module__ == schema.__name__
]

RELAY = """\
[log]
level = "debug"

[[listen]]
address = "127.0.0.1:10025"
protocol = "lmtp"
hostname = "mx.example.org"
xforward_hosts = ["10.0.0.0/8"]

[[listen]]
address = "unix:/run/filterd/policy.sock"
protocol = "policy"
processes = 2

[limits]
command_timeout = "1m"
max_message_size = "10MB"
spool_dir = "/var/spool/filterd"

[delivery]
method = "relay"
next_hop = "unix:/run/postfix/reinject"
protocol = "lmtp"
starttls = "opportunistic"

[[chain]]
plugin = "header_checks"
name = "first"
on_error = "continue"
[chain.config]
rules = ['/^X-Spam: yes/ REJECT no']
body_checks_size_limit = 1000

[[chain]]
plugin = "header_checks"
name = "second"

[quarantine]
root = "/var/lib/filterd/quarantine"
"""

POLICY_ONLY = '[[listen]]\naddress = "127.0.0.1:10040"\nprotocol = "policy"\n'


def plugins_of(config: Config) -> dict[int, type[BaseModel]]:
    return {i: load_plugin_class(entry.plugin).Config for i, entry in enumerate(config.chain)}


def same(a: Config, b: Config) -> bool:
    return a.model_copy(update={"text": "", "source": ""}) == b.model_copy(
        update={"text": "", "source": ""}
    )


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_every_setting_has_a_description_and_unset_ones_an_example(model: type[BaseModel]) -> None:
    for name, info in model.model_fields.items():
        assert info.description, f"{model.__name__}.{name}"
        if model is Config:
            continue  # its fields are tables
        if not info.is_required() and info.get_default(call_default_factory=True) is None:
            assert info.examples, f"{model.__name__}.{name} is unset by default: give an example"


@pytest.mark.parametrize(
    "config",
    [load_config(None), parse_config(RELAY), parse_config(POLICY_ONLY)],
    ids=["embedded default", "relay", "policy only"],
)
@pytest.mark.parametrize("with_plugins", [True, False], ids=["plugin settings", "raw"])
def test_the_commented_form_loads_as_the_same_configuration(
    config: Config, with_plugins: bool
) -> None:
    text = render_commented(config, plugins_of(config) if with_plugins else None)
    assert same(parse_config(text), config)
    assert all(len(line) <= WIDTH for line in text.splitlines()), "lines wrap at WIDTH"


def test_every_setting_is_shown_with_its_description_and_default() -> None:
    config = parse_config(POLICY_ONLY)  # no delivery, no chain: shown commented out
    text = render_commented(config)
    for model in MODELS:
        if model is Config:
            continue
        for name, info in model.model_fields.items():
            description = textwrap.wrap(info.description or "", WIDTH - 2, break_on_hyphens=False)
            default = "required" if info.is_required() else "default: "
            setting = rf"\n# {default}[^\n]*\n#?{name} ="
            if info.annotation == dict[str, object]:
                setting = r"\n#\[chain\.config\]\n"  # a table of its own
            if typing.get_origin(info.annotation) is tuple and _models(info.annotation):
                setting = rf"\n# {default}[^\n]*\n#?\[\[\w+\.{name}\]\]\n"  # an array of tables
            pattern = re.escape("\n".join(f"# {line}" for line in description)) + setting
            assert re.search(pattern, text), f"{model.__name__}.{name}"
    for table in ("[log]", "[[listen]]", "[limits]", "#[delivery]", "#[[chain]]", "[quarantine]"):
        assert f"\n{table}\n" in text


def test_values_of_the_file_are_set_and_the_rest_commented_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "filterd.toml"
    path.write_text(RELAY)
    assert main(["check-config", "--commented", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f'# filterd configuration, from "{path}".\n')
    assert '\n# Our name in EHLO/LHLO.\n# default: "localhost"\nhelo_name = "localhost"\n' in out
    assert '\n# default: "smtp"\nprotocol = "lmtp"\n' in out  # the delivery's protocol
    assert '\n# default: unset\nspool_dir = "/var/spool/filterd"\n' in out
    assert '\n# default: unset\n#tls_cert = "/etc/filterd/cert.pem"\n' in out
    assert "\n# or instead:\n#[delivery]\n" in out  # the maildir method, commented out
    assert "\n# default: 51200\nbody_checks_size_limit = 1000\n" in out  # a plugin's setting
    assert "\n# default: []\n#body_checks = []\n" in out  # and one the file leaves unset
    assert same(parse_config(out), load_config(path))


def test_the_example_configuration_is_up_to_date(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the example names its source as given: deploy/filterd.toml
    assert main(["check-config", "--commented", "-c", DEPLOYED]) == 0
    generated = capsys.readouterr().out
    assert EXAMPLE.read_text() == generated, (
        f"{EXAMPLE.relative_to(ROOT)} is out of date: regenerate it with `{REGENERATE}`"
    )
    assert same(load_config(EXAMPLE), load_config(ROOT / DEPLOYED))
