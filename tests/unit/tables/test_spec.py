"""TableSpec: a table named in a plugin's config is checked at load time, and a bad one is an
error naming the config file, the line, the key and the fix."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from filterd.config.load import nested_config_error
from filterd.errors import ConfigError
from filterd.sdk import PluginConfig
from filterd.sdk.tables import SUPPORTED_TYPES, TableName, TableSpec


class AccessConfig(PluginConfig):
    access: TableSpec
    clients: tuple[TableSpec, ...] = ()


def test_a_table_name_becomes_a_table_name() -> None:
    config = AccessConfig.model_validate(
        {"access": "proxy:TextHash:/etc/postfix/access", "clients": ["cidr:/etc/c.cidr"]}
    )
    assert config.access == TableName("texthash", "/etc/postfix/access")
    assert config.clients == (TableName("cidr", "/etc/c.cidr"),)
    assert config.model_dump(mode="json") == {
        "access": "texthash:/etc/postfix/access",
        "clients": ["cidr:/etc/c.cidr"],
    }
    again = AccessConfig.model_validate(config.model_dump(mode="json"))
    assert again == config


def _error(tmp_path: Path, value: str) -> ConfigError:
    path = tmp_path / "filterd.toml"
    path.write_text(
        '[[listen]]\naddress = "127.0.0.1:10025"\n\n'
        '[[chain]]\nplugin = "access"\n[chain.config]\n'
        f'clients = ["cidr:/etc/c.cidr"]\naccess = {value}\n'
    )
    with pytest.raises(ValidationError) as caught:
        AccessConfig.model_validate({"access": tomllib.loads(f"v = {value}")["v"]})
    return nested_config_error(caught.value, AccessConfig, ("chain", 0, "config"), str(path))


@pytest.mark.parametrize(
    ("value", "message", "fix"),
    [
        ('"nosuch:/etc/x"', 'unsupported table type "nosuch"', "use one of " + SUPPORTED_TYPES[0]),
        ('"/etc/postfix/access"', "not a table name", "write type:name"),
        ('"inline:{ a=b"', "unbalanced braces", "close the list"),
        ("42", "expected a lookup table", "type:name in double quotes"),
    ],
)
def test_a_bad_table_names_file_line_key_and_fix(
    tmp_path: Path, value: str, message: str, fix: str
) -> None:
    error = _error(tmp_path, value)
    assert error.file == str(tmp_path / "filterd.toml")
    assert error.line == 8
    assert error.key == "chain[0].config.access"
    assert message in error.message
    assert fix in error.hint
    assert str(error).startswith(f"{tmp_path / 'filterd.toml'}:8: chain[0].config.access: ")
