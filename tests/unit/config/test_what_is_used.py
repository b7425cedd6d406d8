"""A configuration asks only for what is used: [delivery] only behind smtp and lmtp listeners,
[[listen]] only for serving (``filterd scan`` and ``filterd learn`` use only the chain)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from filterd.cli.main import main
from filterd.config.load import load_config, parse_config
from filterd.config.schema import MaildirDelivery
from filterd.errors import ConfigError

CHAIN_ONLY = """\
[[chain]]
plugin = "header_checks"
[chain.config]
rules = ['/^Subject: spam/ REJECT no spam here']
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "filterd.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.mark.parametrize("protocol", ["milter", "policy"])
def test_milter_and_policy_listeners_need_no_delivery(protocol: str) -> None:
    config = parse_config(f'[[listen]]\naddress = "127.0.0.1:8891"\nprotocol = "{protocol}"\n')
    assert config.delivery is None


def test_a_delivery_nothing_uses_is_still_accepted() -> None:
    config = parse_config(
        '[[listen]]\naddress = "127.0.0.1:10040"\nprotocol = "policy"\n'
        '[delivery]\nmethod = "maildir"\n'
    )
    assert isinstance(config.delivery, MaildirDelivery)


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
def test_a_mail_listener_without_delivery_names_file_line_key_and_fix(
    tmp_path: Path, protocol: str
) -> None:
    path = write(
        tmp_path,
        f"""\
        [[listen]]
        address = "127.0.0.1:10040"
        protocol = "policy"

        [[listen]]
        address = "127.0.0.1:10025"
        protocol = "{protocol}"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f'{path}:7: listen[1].protocol: a "{protocol}" listener needs a [delivery] table (where '
        'the mail it accepts goes) (fix: add a [delivery] table with method = "relay" and '
        'next_hop = "127.0.0.1:10026", or method = "maildir"; or make this listener protocol = '
        '"milter" or "policy")'
    )


def test_the_default_protocol_is_located_at_its_table(tmp_path: Path) -> None:
    path = write(tmp_path, '# smtp by default\n[[listen]]\naddress = "127.0.0.1:10025"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.line, info.value.key) == (2, "listen[0].protocol")
    assert info.value.message.startswith('a "smtp" listener needs a [delivery] table')


def test_the_chain_alone_is_enough_for_scanning(tmp_path: Path) -> None:
    path = write(tmp_path, CHAIN_ONLY)
    config = load_config(path, serving=False)
    assert (config.listen, config.delivery) == ((), None)
    assert [entry.plugin for entry in config.chain] == ["header_checks"]
    with pytest.raises(ConfigError) as info:
        load_config(path)  # but not for serving
    assert str(info.value) == (
        f'{path}: listen: missing required key "listen" (fix: add a [[listen]] table with '
        'address = "127.0.0.1:10025")'
    )


def test_filterd_scan_with_only_a_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, CHAIN_ONLY)
    message = tmp_path / "spam.eml"
    message.write_text("Subject: spam offer\n\nbuy\n")
    assert main(["scan", "-c", str(path), str(message)]) == 1  # a reject (spamc -c's 1)
    out = capsys.readouterr().out
    assert "# result: reject (550 5.7.1 no spam here)" in out
    assert main(["check-config", "-c", str(path)]) == 2  # serving needs a listener
    assert 'listen: missing required key "listen"' in capsys.readouterr().err


def test_filterd_learn_with_only_a_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, CHAIN_ONLY)
    message = tmp_path / "spam.eml"
    message.write_text("Subject: spam offer\n\nbuy\n")
    assert main(["learn", "-c", str(path), "--spam", str(message)]) == 1
    assert "no plugin of the chain can learn" in capsys.readouterr().err  # got past the config
