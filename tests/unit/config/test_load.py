"""Loading the TOML configuration, its error messages, and rendering it back."""

from __future__ import annotations

import os
import textwrap
import tomllib
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest
from pydantic import ValidationError

from filterd.config.load import EMBEDDED_SOURCE, load_config, parse_config
from filterd.config.render import render_config
from filterd.config.schema import (
    Config,
    LimitsConfig,
    ListenConfig,
    MaildirDelivery,
    RelayDelivery,
)
from filterd.config.types import Endpoint
from filterd.errors import ConfigError

MINIMAL = """\
[[listen]]
address = "127.0.0.1:10025"

[delivery]
method = "maildir"
"""


def write(tmp_path: Path, text: str, name: str = "filterd.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> tuple[Path, list[ConfigError]]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, list(info.value.problems)


def only_problem(tmp_path: Path, text: str) -> tuple[Path, ConfigError]:
    path, found = problems(tmp_path, text)
    assert len(found) == 1, [str(p) for p in found]
    return path, found[0]


# --- the embedded default and round trips -------------------------------------------------------


def test_embedded_default_loads() -> None:
    config = load_config(None)
    assert config.source == EMBEDDED_SOURCE
    (listener,) = config.listen
    assert listener.address == Endpoint("tcp", host="127.0.0.1", port=10025)
    assert listener.protocol == "smtp"
    assert not listener.tls_enabled
    assert config.delivery == MaildirDelivery(mailbox_base=Path("./var/mail"))
    assert config.limits == LimitsConfig()
    assert config.log.level == "info"


def settings(config: Config) -> Config:
    """The configuration without the TOML text it came from (that text is provenance, like
    ``source``: a rendered copy reads differently and means the same)."""
    return config.model_copy(update={"text": ""})


def test_embedded_default_round_trips() -> None:
    config = load_config(None)
    text = render_config(config)
    again = parse_config(text, source=config.source)
    assert again.text == text
    assert settings(again) == settings(config)


def test_rendered_values_are_written_as_an_admin_would() -> None:
    data = tomllib.loads(render_config(load_config(None)))
    assert data["listen"][0]["address"] == "127.0.0.1:10025"
    assert data["listen"][0]["xforward_hosts"] == ["127.0.0.0/8", "::1/128"]
    assert data["limits"]["command_timeout"] == "5m"
    assert data["limits"]["shutdown_grace"] == "30s"
    assert data["limits"]["max_message_size"] == 52_428_800
    assert "spool_dir" not in data["limits"]  # unset: TOML has no null
    assert "source" not in data


def test_full_config_round_trips_through_a_file(tmp_path: Path) -> None:
    cert = write(tmp_path, "cert", "cert.pem")
    key = write(tmp_path, "key", "key.pem")
    ca = write(tmp_path, "ca", "ca.pem")
    path = write(
        tmp_path,
        f"""\
        [log]
        level = "debug"

        [[listen]]
        address = "[::1]:10025"
        protocol = "lmtp"
        hostname = "filter.example.org"
        max_connections = 7
        xforward_hosts = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
        add_received_header = false
        tls_cert = "{cert}"
        tls_key = "{key}"

        [[listen]]
        address = "unix:{tmp_path}/filterd.sock"
        xforward_hosts = []

        [limits]
        command_timeout = "1h30m"
        data_timeout = 42
        min_data_rate = 1
        tls_handshake_timeout = "1500ms"
        max_message_size = "10MiB"
        max_recipients = 100
        bare_newline = "normalize"
        spool_memory = "64k"
        spool_dir = "{tmp_path}"
        shutdown_grace = 0.25

        [delivery]
        method = "relay"
        next_hop = "Mail.Example.org:26"
        protocol = "lmtp"
        starttls = "required"
        tls_ca_file = "{ca}"
        tls_verify = false
        pool_idle_timeout = "2d"
        """,
    )
    config = load_config(path)
    assert config.source == str(path)
    assert config.listen[0].tls_enabled
    assert config.listen[0].xforward_hosts == (
        IPv4Network("10.0.0.0/8"),
        IPv4Network("192.0.2.7/32"),
        IPv6Network("2001:db8::/32"),
    )
    assert config.listen[1].address == Endpoint("unix", path=f"{tmp_path}/filterd.sock")
    assert config.limits.command_timeout == 5400.0
    assert config.limits.tls_handshake_timeout == 1.5
    assert config.limits.max_message_size == 10 * 1024 * 1024
    assert config.limits.spool_memory == 64_000
    assert isinstance(config.delivery, RelayDelivery)
    assert str(config.delivery.next_hop) == "mail.example.org:26"
    assert config.delivery.pool_idle_timeout == 172_800.0

    rendered = write(tmp_path, render_config(config), "rendered.toml")
    again = load_config(rendered)
    assert again.source == str(rendered)
    assert settings(again.model_copy(update={"source": config.source})) == settings(config)
    assert render_config(again).splitlines()[1:] == render_config(config).splitlines()[1:]


def test_models_are_frozen() -> None:
    config = load_config(None)
    with pytest.raises(ValidationError):
        config.log.level = "debug"  # type: ignore[misc]


def test_models_accept_strings_from_python() -> None:
    listener = ListenConfig(address="127.0.0.1:0", xforward_hosts=["10.0.0.0/8"])
    assert listener.address.port == 0
    config = Config(
        listen=(listener, ListenConfig(address="127.0.0.1:0")),  # port 0 may repeat
        delivery=RelayDelivery(next_hop="127.0.0.1:10026"),
        limits=LimitsConfig(command_timeout="10s"),
    )
    assert config.limits.command_timeout == 10.0
    assert settings(parse_config(render_config(config), source=config.source)) == config


# --- error messages -----------------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path, error = only_problem(tmp_path, MINIMAL + "\n[limit]\nmax_errors = 3\n")
    assert (error.file, error.line, error.key) == (str(path), 7, "limit")
    assert error.message == 'unknown key "limit"'
    keys = "log, listen, limits, delivery, chain, quarantine, metrics, control, run, pipe"
    assert error.hint == f"did you mean limits? valid keys here: {keys}"
    assert str(error) == (
        f'{path}:7: limit: unknown key "limit" (fix: did you mean limits? valid keys here: {keys})'
    )


def test_unknown_key_in_second_listener(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        [[listen]]
        address = "127.0.0.1:10025"

        [[listen]]
        protocol = "lmtp"
        adress = "127.0.0.1:10026"

        [delivery]
        method = "maildir"
        """,
    )
    by_key = {problem.key: problem for problem in found}
    unknown = by_key["listen[1].adress"]
    assert unknown.line == 6
    assert "did you mean address?" in unknown.hint
    assert "valid keys here: address, protocol, hostname," in unknown.hint
    assert str(unknown).startswith(f'{path}:6: listen[1].adress: unknown key "adress"')
    missing = by_key["listen[1].address"]
    assert missing.line == 4  # the [[listen]] header: the key is not there
    assert missing.message == 'missing required key "address"'
    assert 'address = "127.0.0.1:10025"' in missing.hint


def test_unknown_key_in_delivery(tmp_path: Path) -> None:
    path, found = problems(
        tmp_path,
        """\
        [[listen]]
        address = "127.0.0.1:10025"

        [delivery]
        method = "relay"
        nexthop = "127.0.0.1:10026"
        """,
    )
    assert [(p.line, p.key) for p in found] == [(4, "delivery.next_hop"), (6, "delivery.nexthop")]
    missing, unknown = found
    assert missing.message == 'missing required key "next_hop"'
    assert missing.hint.startswith('add next_hop = "127.0.0.1:10026" to [delivery]: ')
    assert "did you mean next_hop?" in unknown.hint
    assert f"{path}:6: delivery.nexthop:" in str(unknown)


def test_unknown_key_in_maildir_delivery_lists_its_own_keys(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, MINIMAL + 'next_hop = "127.0.0.1:10026"\n')
    assert error.key == "delivery.next_hop"
    assert error.line == 6
    assert error.hint == (
        "valid keys here: method, mailbox_base, root, mailbox_domains, alias_domains, "
        "mailbox_maps, alias_maps, alias_expansion_limit, alias_recursion_limit, "
        "alias_address_length_limit, uid_maps, gid_maps, minimum_uid, mailbox_limit, "
        "mailbox_quota, over_quota, recipient_delimiter, extension_folders, filing"
    )


def test_bad_duration_names_line_and_shows_an_example(tmp_path: Path) -> None:
    path, error = only_problem(tmp_path, MINIMAL + '\n[limits]\ncommand_timeout = "thirty"\n')
    assert (error.line, error.key) == (8, "limits.command_timeout")
    assert str(error).startswith(
        f'{path}:8: limits.command_timeout: expected a duration such as "30s", got "thirty" (fix: '
    )
    assert '"5m"' in error.hint


def test_missing_next_hop_for_relay(tmp_path: Path) -> None:
    _, error = only_problem(
        tmp_path,
        """\
        [[listen]]
        address = "127.0.0.1:10025"
        [delivery]
        method = "relay"
        helo_name = "filter.example.org"
        """,
    )
    assert (error.line, error.key) == (3, "delivery.next_hop")
    assert error.message == 'missing required key "next_hop"'


def test_bad_toml_syntax_names_the_line(tmp_path: Path) -> None:
    path, error = only_problem(tmp_path, "[[listen]]\naddress = 127.0.0.1:10025\n")
    assert (error.file, error.line, error.key) == (str(path), 2, "")
    assert error.message.startswith("invalid TOML: ")
    assert "(column " in error.message
    assert 'quote strings: address = "127.0.0.1:10025"' in error.hint
    assert str(error).startswith(f"{path}:2: invalid TOML: ")


def test_toml_error_at_end_of_file(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, '[log]\nlevel = "info')
    assert error.line == 2
    assert error.message.startswith("invalid TOML: ")


def test_wrong_delivery_method_lists_valid_ones(tmp_path: Path) -> None:
    _, error = only_problem(
        tmp_path, '[[listen]]\naddress = "127.0.0.1:10025"\n[delivery]\nmethod = "mbox"\n'
    )
    assert (error.line, error.key) == (4, "delivery.method")
    assert error.message == 'expected "relay" or "maildir", got "mbox"'
    assert error.hint == "valid values for method: relay, maildir"


def test_missing_delivery_method(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, '[[listen]]\naddress = "127.0.0.1:10025"\n[delivery]\n')
    assert (error.line, error.key) == (3, "delivery.method")
    assert error.message == 'missing required key "method"'
    assert error.hint == 'set method = "relay" or "maildir"'


def test_literal_typo_suggests_the_value(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, MINIMAL.replace('10025"', '10025"\nprotocol = "smpt"'))
    assert (error.line, error.key) == (3, "listen[0].protocol")
    assert error.message == 'expected one of "smtp", "lmtp", "policy", "milter", got "smpt"'
    assert error.hint == "did you mean smtp? valid values for protocol: smtp, lmtp, policy, milter"


def test_source_cannot_be_set_from_toml(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, 'source = "/etc/elsewhere.toml"\n' + MINIMAL)
    assert (error.line, error.key) == (1, "source")
    assert error.message == 'unknown key "source"'
    assert "source" not in error.hint


def test_every_problem_is_reported_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        [limits]
        max_recipients = 50
        max_errors = "20"

        [[listen]]
        address = "127.0.0.1"
        max_connections = true

        [delivery]
        method = "maildir"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[0:2] for line in lines] == [
        [f"{path}:2", "limits.max_recipients"],
        [f"{path}:3", "limits.max_errors"],
        [f"{path}:6", "listen[0].address"],
        [f"{path}:7", "listen[0].max_connections"],
    ]
    assert "RFC 5321" in lines[0]
    assert 'expected a whole number, got "20" (fix: for example max_errors = 20' in lines[1]
    assert info.value.key == "limits.max_recipients"  # the exception itself is the first problem


def test_missing_listen_has_no_line(tmp_path: Path) -> None:
    path, error = only_problem(tmp_path, '[delivery]\nmethod = "maildir"\n')
    assert (error.line, error.key) == (None, "listen")
    assert str(error).startswith(f'{path}: listen: missing required key "listen" (fix: add a')


def test_empty_listen_array(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, 'listen = []\n[delivery]\nmethod = "maildir"\n')
    assert (error.line, error.key) == (1, "listen")
    assert error.message == "at least one [[listen]] table is required"


def test_inline_listener_tables_are_located(tmp_path: Path) -> None:
    _, error = only_problem(
        tmp_path,
        """\
        listen = [
          { address = "127.0.0.1:1" },
          { address = "127.0.0.1:2", adress = "x" },
        ]
        delivery = { method = "maildir" }
        """,
    )
    assert (error.line, error.key) == (3, "listen[1].adress")


def test_duplicate_listener_addresses(tmp_path: Path) -> None:
    _, error = only_problem(
        tmp_path,
        MINIMAL.replace("[delivery]", '[[listen]]\naddress = "127.0.0.1:10025"\n[delivery]'),
    )
    assert (error.line, error.key) == (5, "listen[1].address")
    assert error.message == '"127.0.0.1:10025" is already used by listen[0]'


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert = write(tmp_path, "cert", "cert.pem")
    _, error = only_problem(tmp_path, MINIMAL.replace('10025"', f'10025"\ntls_cert = "{cert}"'))
    assert (error.line, error.key) == (3, "listen[0].tls_cert")
    assert error.message == "tls_cert is set but tls_key is not"


@pytest.mark.parametrize("protocol", ["smtp", "lmtp", "policy", "milter"])
def test_processes_on_every_listener_kind(tmp_path: Path, protocol: str) -> None:
    for processes, count in (("2", 2), ('"auto"', len(os.sched_getaffinity(0)))):
        text = MINIMAL.replace(
            '10025"', f'10025"\nprotocol = "{protocol}"\nprocesses = {processes}'
        )
        listen = load_config(write(tmp_path, text)).listen[0]
        assert listen.process_count == min(count, 64)
    assert load_config(write(tmp_path, MINIMAL)).listen[0].process_count == 1


@pytest.mark.parametrize("value", ["0", "65", '"many"', "true", "2.0"])
def test_processes_is_a_number_or_auto(tmp_path: Path, value: str) -> None:
    _, error = only_problem(tmp_path, MINIMAL.replace('10025"', f'10025"\nprocesses = {value}'))
    assert (error.line, error.key) == (3, "listen[0].processes")
    assert error.message == f'expected a number of processes from 1 to 64, or "auto", got {value}'
    assert 'processes = "auto"' in error.hint


def test_tls_files_must_exist(tmp_path: Path) -> None:
    text = MINIMAL.replace('10025"', '10025"\ntls_cert = "/no/cert.pem"\ntls_key = "/no/key.pem"')
    _, found = problems(tmp_path, text)
    assert [(p.line, p.key) for p in found] == [(3, "listen[0].tls_cert"), (4, "listen[0].tls_key")]
    assert found[0].message == 'certificate file "/no/cert.pem" does not exist'


def test_maildir_root_must_not_be_a_file(tmp_path: Path) -> None:
    root = write(tmp_path, "not a directory", "mail")
    _, error = only_problem(tmp_path, MINIMAL + f'root = "{root}"\n')
    assert (error.line, error.key) == (6, "delivery.root")
    assert "is not a directory" in error.message


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert (info.value.file, info.value.line, info.value.key) == (str(missing), None, "")
    assert str(info.value).startswith(f"{missing}: cannot read the configuration file: ")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[log]\nlevel = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 2
    assert "UTF-8" in info.value.message


def test_error_without_hint_or_line_formats_cleanly() -> None:
    assert str(ConfigError("f.toml", None, "", "broken")) == "f.toml: broken"
    joined = ConfigError.collect([ConfigError("a", 1, "k", "m", "h"), ConfigError("a", 2, "", "n")])
    assert str(joined) == "a:1: k: m (fix: h)\na:2: n"
    assert len(joined.problems) == 2
