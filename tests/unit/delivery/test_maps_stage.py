"""The Maildir stage and the relay with lookup tables: the answer at RCPT (unknown 550 5.1.1,
a table that cannot answer 451 4.3.0), the recipients looked up again at delivery (a table
failing in between defers that recipient alone), a delivery through an alias, the tables'
lifetime (closed with the delivery, reopened by a lookup after), and the relay's
recipient_maps."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from filterd.config.load import load_config
from filterd.config.schema import MaildirDelivery, RelayDelivery
from filterd.delivery.delivery_tables import DeliveryTables, Opener
from filterd.delivery.known_recipients import RecipientMaps
from filterd.delivery.maildir import Maildir
from filterd.delivery.virtual_maps import MapsResolver
from filterd.model.envelope import Client, Recipient, Session, Transaction
from filterd.model.spool import Spool
from filterd.runtime.startup import StartupError, check_before_serving
from filterd.sdk.tables import Table, TableFailure, TableSettings, open_table


class Switchable(Table):
    """A table that answers from ``values`` until ``down`` is set; counts its closes."""

    def __init__(self, name: str, values: dict[str, str]) -> None:
        super().__init__(name, TableSettings())
        self.values = values
        self.down = False
        self.closed = 0

    async def lookup(self, key: str) -> str | None:
        await trio.lowlevel.checkpoint()
        if self.down:
            raise TableFailure(self.name, "server went away")
        return self.values.get(key.lower())

    async def aclose(self) -> None:
        self.closed += 1


def transaction() -> Transaction:
    session = Session("S", "test", Client("192.0.2.1", 25, "peer.example", "helo.example"))
    return Transaction("ABCDEF0123", session, "a@b.example", ())


def opener_of(tables: dict[str, Switchable]) -> Opener:
    def opener(spec: str, settings: TableSettings | None) -> Table:
        return tables[spec] if spec in tables else open_table(spec, settings)

    return opener


def seed_config(tmp_path: Path) -> MaildirDelivery:
    return MaildirDelivery.model_validate(
        {
            "mailbox_base": tmp_path,
            "mailbox_domains": ["test:domains"],
            "mailbox_maps": ["test:mailboxes"],
            "alias_maps": ["test:aliases"],
        }
    )


def seed_tables() -> dict[str, Switchable]:
    return {
        "test:domains": Switchable("test:domains", {"virtualdomain.tld": "1"}),
        "test:mailboxes": Switchable(
            "test:mailboxes",
            {
                "cactus@virtualdomain.tld": "virtualdomain.tld/cactus@virtualdomain.tld/",
                "lisi@virtualdomain.tld": "virtualdomain.tld/lisi@virtualdomain.tld/",
            },
        ),
        "test:aliases": Switchable(
            "test:aliases", {"postmaster@virtualdomain.tld": "cactus@virtualdomain.tld"}
        ),
    }


def stage(tmp_path: Path, tables: dict[str, Switchable]) -> Maildir:
    config = seed_config(tmp_path)
    return Maildir(config, MapsResolver(config, opener_of(tables)))


async def test_rcpt_answers_from_the_tables(tmp_path: Path) -> None:
    tables = seed_tables()
    maildir = stage(tmp_path, tables)
    t = transaction()
    open_ = maildir.open()
    answers = {}
    for address in ("cactus@virtualdomain.tld", "email@virtualdomain.tld", "x@spam.me"):
        answers[address] = str(await open_.rcpt(t, Recipient(address)))
    tables["test:mailboxes"].down = True
    answers["lisi@virtualdomain.tld"] = str(
        await open_.rcpt(t, Recipient("lisi@virtualdomain.tld"))
    )
    assert answers == {
        "cactus@virtualdomain.tld": "250 2.1.5 Ok",
        "email@virtualdomain.tld": "550 5.1.1 <email@virtualdomain.tld>: Recipient address "
        "rejected: User unknown in virtual mailbox table",
        "x@spam.me": "554 5.7.1 <x@spam.me>: Relay access denied",
        "lisi@virtualdomain.tld": "451 4.3.0 <lisi@virtualdomain.tld>: Temporary lookup failure",
    }
    await maildir.aclose()


async def test_a_table_failing_after_rcpt_defers_only_its_recipients(tmp_path: Path) -> None:
    tables = seed_tables()
    maildir = stage(tmp_path, tables)
    t = transaction()
    open_ = maildir.open()
    for address in ("postmaster@virtualdomain.tld", "lisi@virtualdomain.tld"):
        rcpt = Recipient(address)
        rcpt.reply = await open_.rcpt(t, rcpt)
        assert rcpt.reply.code == 250
        t.recipients.append(rcpt)
    tables["test:aliases"].values["lisi@virtualdomain.tld"] = "lisi@virtualdomain.tld"
    tables["test:aliases"].down = True  # only the aliases: both recipients go through them
    with Spool(1 << 20) as spool:
        spool.write(b"Subject: s\r\n\r\nbody\r\n")
        results = await open_.data(t, spool)
    assert [str(r) for r in results] == [
        "451 4.3.0 <postmaster@virtualdomain.tld>: Temporary lookup failure",
        "451 4.3.0 <lisi@virtualdomain.tld>: Temporary lookup failure",
    ]
    tables["test:aliases"].down = False
    with Spool(1 << 20) as spool:
        spool.write(b"Subject: s\r\n\r\nbody\r\n")
        results = await maildir.open().data(t, spool)
    assert [r.code for r in results] == [250, 250]
    cactus = tmp_path / "virtualdomain.tld" / "cactus@virtualdomain.tld" / "new"
    (delivered,) = cactus.iterdir()
    assert delivered.read_bytes().startswith(
        b"Return-Path: <a@b.example>\nX-Original-To: postmaster@virtualdomain.tld\n"
        b"Delivered-To: cactus@virtualdomain.tld\n"
    )
    assert (
        len(list((tmp_path / "virtualdomain.tld" / "lisi@virtualdomain.tld" / "new").iterdir()))
        == 1
    )
    await maildir.aclose()


async def test_tables_close_with_the_delivery_and_reopen_for_a_late_lookup(tmp_path: Path) -> None:
    opened: list[Switchable] = []

    def opener(spec: str, settings: TableSettings | None) -> Table:
        opened.append(Switchable(spec, {"k": "v"}))
        return opened[-1]

    tables = DeliveryTables({"mailbox_maps": ("a:1", "a:2")}, opener)
    assert len(opened) == 2
    async with tables.use() as sets:
        await tables.aclose()  # the generation retired while a lookup runs
        assert [t.closed for t in opened] == [0, 0]
        assert await sets["mailbox_maps"][0].lookup("k") == "v"
    assert [t.closed for t in opened] == [1, 1]
    async with tables.use() as sets:  # a session of the retired generation goes on
        assert len(opened) == 4
        assert await sets["mailbox_maps"][1].lookup("k") == "v"
    await tables.aclose()
    assert [t.closed for t in opened] == [1, 1, 1, 1]
    await tables.aclose()
    assert [t.closed for t in opened] == [1, 1, 1, 1]


async def test_relay_recipient_maps(tmp_path: Path) -> None:
    table = Switchable("test:relay", {"joe@example.org": "OK", "@example.net": "OK"})
    config = RelayDelivery(next_hop="127.0.0.1:10026", recipient_maps=("test:relay",))
    known = RecipientMaps(config, opener_of({"test:relay": table}))
    assert await known.check("joe@example.org") is None
    assert await known.check("any@example.net") is None
    assert str(await known.check("ann@example.org")) == (
        "550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown in relay "
        "recipient table"
    )
    table.down = True
    assert str(await known.check("joe@example.org")) == (
        "451 4.3.0 <joe@example.org>: Temporary lookup failure"
    )
    await known.aclose()
    assert table.closed == 1


def test_a_table_that_cannot_be_opened_stops_start_up_naming_file_line_and_key(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "virtual_mailboxes"
    path = tmp_path / "filterd.toml"
    path.write_text(
        '[[listen]]\naddress = "127.0.0.1:0"\n\n[delivery]\nmethod = "maildir"\n'
        f'mailbox_base = "{tmp_path}/mail"\nuid_maps = ["static:5000"]\n'
        f'mailbox_maps = ["static:x/", "texthash:{missing}"]\n'
    )
    with pytest.raises(StartupError) as caught:
        check_before_serving(load_config(path))
    assert str(caught.value).startswith(
        f"{path}:8: delivery.mailbox_maps[1]: table texthash:{missing}: "
    )
    relay = tmp_path / "relay.toml"
    relay.write_text(
        '[[listen]]\naddress = "127.0.0.1:0"\n\n[delivery]\nmethod = "relay"\n'
        'next_hop = "127.0.0.1:10026"\nrecipient_maps = ["nosuchtype:x"]\n'
    )
    with pytest.raises(StartupError, match=r"relay.toml:7: delivery.recipient_maps\[0\]: table"):
        check_before_serving(load_config(relay))
