"""docs/plugins.md's "Lookup tables" example works as the guide says: its settings refuse a
bad table name, it opens its table in start and closes it in stop, refuses what the table
says REJECT to (extensions and parent domains as access(5)), and answers 451 4.3.0 when the
table cannot answer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from filterd.errors import ConfigError
from filterd.model.envelope import Client, Session, Transaction
from filterd.sdk import Continue, Reject, TempFail
from filterd.sdk.tables import Table, TableFailure, TableName, TableSettings
from filterd.testing.harness import make_plugin

GUIDE = (Path(__file__).resolve().parents[3] / "docs" / "plugins.md").read_text()


class DictTable(Table):
    def __init__(self, name: str, entries: dict[str, str], *, broken: bool = False) -> None:
        super().__init__(name, TableSettings())
        self.entries = entries
        self.broken = broken
        self.closed = False

    async def lookup(self, key: str) -> str | None:
        if self.broken:
            raise TableFailure(self.name, "server down")
        return self.entries.get(key.lower())

    async def aclose(self) -> None:
        self.closed = True


def example(table: DictTable, opened: list[TableName] | None = None) -> type[Any]:
    """The guide's plugin, its open_table giving ``table`` (and noting the name in ``opened``)."""
    (block,) = [
        b
        for b in re.findall(r"```python\n(.*?)```", GUIDE, re.DOTALL)
        if "class SenderAccess(" in b
    ]
    namespace: dict[str, Any] = {"__name__": "guide_sender_access"}
    code = compile(block, "docs/plugins.md", "exec", dont_inherit=True)
    exec(code, namespace)  # the guide's own code

    def open_table(spec: TableName, settings: TableSettings | None = None) -> Table:
        if opened is not None:
            opened.append(spec)
        return table

    namespace["open_table"] = open_table
    cls: type[Any] = namespace["SenderAccess"]
    return cls


def transaction(sender: str) -> Transaction:
    return Transaction("Q1", Session("s1", "127.0.0.1:10025", Client("192.0.2.1")), sender)


async def test_the_guide_example_refuses_what_the_table_rejects() -> None:
    table = DictTable(
        "texthash:/etc/postfix/sender_access",
        {"spam.example": "REJECT no spam here", "boss@work.example": "OK", "<>": "REJECT"},
    )
    opened: list[TableName] = []
    cls = example(table, opened)
    plugin = make_plugin(
        cls, {"access": "texthash:/etc/postfix/sender_access", "recipient_delimiter": "+"}
    )
    assert opened == []
    await plugin.start()
    assert opened == [TableName("texthash", "/etc/postfix/sender_access")]
    verdict = await plugin.on_mail_from(transaction("joe+x@mx.Spam.example"))
    assert isinstance(verdict, Reject)
    assert str(verdict.reply) == (
        "554 5.7.1 <joe+x@mx.Spam.example>: Sender address rejected: no spam here"
    )
    assert isinstance(await plugin.on_mail_from(transaction("boss+y@work.example")), Continue)
    assert isinstance(await plugin.on_mail_from(transaction("a@elsewhere.example")), Continue)
    null = await plugin.on_mail_from(transaction(""))
    assert isinstance(null, Reject)
    assert str(null.reply) == "554 5.7.1 <>: Sender address rejected: Access denied"
    assert not table.closed
    await plugin.stop()
    assert table.closed


async def test_the_guide_example_tempfails_when_the_table_cannot_answer() -> None:
    table = DictTable("mysql:/etc/postfix/senders.cf", {}, broken=True)
    plugin = make_plugin(example(table), {"access": "mysql:/etc/postfix/senders.cf"})
    await plugin.start()
    verdict = await plugin.on_mail_from(transaction("joe@example.com"))
    assert isinstance(verdict, TempFail)
    assert str(verdict.reply) == "451 4.3.0 <joe@example.com>: Temporary lookup failure"
    await plugin.stop()


def test_the_guide_example_refuses_a_bad_table_name() -> None:
    with pytest.raises(ConfigError, match=r'config\.access: unsupported table type "nosuch"'):
        make_plugin(example(DictTable("x", {})), {"access": "nosuch:/etc/x"})
