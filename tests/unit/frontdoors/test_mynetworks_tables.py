"""mynetworks naming lookup tables, as Postfix's does: the settings accept ``type:name`` beside
networks, a client is trusted when a table finds its address, a table that cannot answer is a
TableFailure (never "not trusted"), and a table that cannot be opened stops the start naming
the file, the line and the key."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from pathlib import Path

import pytest

from filterd.config.load import load_config, parse_config
from filterd.config.schema import ListenConfig
from filterd.config.types import TableRef
from filterd.errors import ConfigError
from filterd.frontdoors.smtp.relay_control import RelayControl
from filterd.runtime.startup import StartupError, openable_tables
from filterd.sdk.tables import Table, TableError, TableFailure, TableSettings


class AddressTable(Table):
    """A table of client addresses; records the keys it is asked."""

    def __init__(self, name: str, addresses: set[str], *, broken: bool = False) -> None:
        super().__init__(name, TableSettings())
        self.addresses = addresses
        self.broken = broken
        self.asked: list[str] = []

    async def lookup(self, key: str) -> str | None:
        self.asked.append(key)
        if self.broken:
            raise TableFailure(self.name, "server down")
        return "anything" if key in self.addresses else None


def listener(**settings: object) -> ListenConfig:
    return ListenConfig.model_validate({"address": "127.0.0.1:10025", **settings})


def test_mynetworks_takes_networks_and_tables() -> None:
    listen = listener(mynetworks=["192.0.2.0/24", "cidr:/etc/postfix/mynetworks.cidr"])
    assert listen.mynetworks == (
        IPv4Network("192.0.2.0/24"),
        TableRef("cidr:/etc/postfix/mynetworks.cidr"),
    )
    dumped = listen.model_dump(mode="json")["mynetworks"]
    assert dumped == ["192.0.2.0/24", "cidr:/etc/postfix/mynetworks.cidr"]
    assert listen.relay_settings() == ["mynetworks"]


def test_neither_network_nor_table_says_both_forms() -> None:
    text = '[[listen]]\naddress = "127.0.0.1:0"\nmynetworks = ["here"]\n'
    text += '[delivery]\nmethod = "maildir"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value) == (
        "<string>:3: listen[0].mynetworks[0]: expected an IP network or a lookup table, got "
        '"here" (fix: write an address or network such as "192.0.2.7", "10.0.0.0/8" or '
        '"::1/128", or a table such as "cidr:/etc/postfix/mynetworks.cidr")'
    )


def opener(tables: dict[str, Table]):  # type: ignore[no-untyped-def]
    return lambda spec, settings: tables[spec]


async def test_a_client_the_table_finds_may_relay() -> None:
    table = AddressTable("hash:/m", {"198.51.100.7", "2001:db8::7"})
    listen = listener(mynetworks=["192.0.2.0/24", "hash:/m"])
    control = RelayControl.from_config(listen, opener({"hash:/m": table}))
    assert await control.trusts(IPv4Address("198.51.100.7"))
    assert await control.trusts(ip_address("2001:db8:0:0::7"))
    assert not await control.trusts(IPv4Address("198.51.100.8"))
    assert not await control.trusts(IPv6Address("2001:db8::8"))
    assert table.asked == ["198.51.100.7", "2001:db8::7", "198.51.100.8", "2001:db8::8"]
    assert await control.trusts(IPv4Address("192.0.2.1"))  # a network: no lookup
    assert await control.trusts(None)  # a unix socket
    assert len(table.asked) == 4


async def test_a_table_that_cannot_answer_is_a_failure_not_a_no() -> None:
    broken = AddressTable("mysql:/m.cf", set(), broken=True)
    control = RelayControl.from_config(
        listener(mynetworks=["192.0.2.0/24", "mysql:/m.cf"]), opener({"mysql:/m.cf": broken})
    )
    with pytest.raises(TableFailure):
        await control.trusts(IPv4Address("203.0.113.1"))
    assert await control.trusts(IPv4Address("192.0.2.9"))


def test_a_table_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "filterd.toml"
    path.write_text(
        '[[listen]]\naddress = "127.0.0.1:0"\n'
        'mynetworks = ["127.0.0.0/8", "nosuch:/etc/postfix/mynetworks"]\n'
        f'[delivery]\nmethod = "maildir"\nroot = "{tmp_path}/mail"\n'
    )
    config = load_config(path)
    with pytest.raises(StartupError) as caught:
        openable_tables(config, 0)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: listen[0].mynetworks: table nosuch:")
    assert 'unsupported table type "nosuch"' in message
    assert "(fix: use one of " in message


def test_opening_errors_propagate_from_the_relay_control() -> None:
    def refuse(spec: str, settings: TableSettings | None) -> Table:
        raise TableError(spec, "no such file", file="/etc/postfix/m.cidr", hint="create it")

    with pytest.raises(TableError, match="no such file"):
        RelayControl.from_config(listener(mynetworks=["cidr:/etc/postfix/m.cidr"]), refuse)
