"""Recipients without maps: the Maildir of user@domain, UTF-8 local parts under a reversible
directory name, the address extension, the domains served; and which resolver tables give."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from filterd.config.schema import MaildirDelivery
from filterd.delivery.mailboxes import (
    BAD_MAILBOX,
    Mailbox,
    NoMaps,
    TableOpenError,
    directory_name,
    domain_directory,
    maps_problem,
    open_resolver,
    split_extension,
    user_of_directory,
)
from filterd.delivery.virtual_maps import MapsResolver


@pytest.mark.parametrize(
    ("local", "name"),
    [
        ("cactus", "cactus"),
        ("Cactus", "cactus"),
        ("first.last", "first.last"),
        ("ünï", "%C3%BCn%C3%AF"),
        ("ÜNÏ", "%C3%BCn%C3%AF"),  # folded first
        ("a%b", "a%25b"),  # "%" itself is escaped: the name stays reversible
        ("日本", "%E6%97%A5%E6%9C%AC"),
        ("o'hara", "o'hara"),
    ],
)
def test_directory_names_are_safe_and_reversible(local: str, name: str) -> None:
    assert directory_name(local, smtputf8=True) == name
    assert user_of_directory(name) == local.casefold()
    assert "/" not in name
    assert not name.startswith(".")


@pytest.mark.parametrize("local", ["..", ".hidden", "a..b", "a/b", "a b", "", "trail."])
def test_what_is_not_a_dot_atom_names_no_directory(local: str) -> None:
    assert directory_name(local, smtputf8=True) is None


def test_utf8_needs_smtputf8() -> None:
    assert directory_name("ünï", smtputf8=False) is None
    assert directory_name("plain", smtputf8=False) == "plain"


def test_domains_are_lower_case_and_idna() -> None:
    assert domain_directory("Example.ORG") == "example.org"
    assert domain_directory("bücher.example") == "xn--bcher-kva.example"
    assert domain_directory("..") is None
    assert domain_directory("a/b.example") is None


@pytest.mark.parametrize(
    ("local", "delimiters", "split"),
    [
        ("user+tag", "+", ("user", "tag")),
        ("user+a+b", "+", ("user", "a+b")),  # at the first delimiter
        ("user-tag", "+-", ("user", "tag")),
        ("user+tag", "", ("user+tag", None)),
        ("+tag", "+", ("+tag", None)),  # never at the first position
        ("user", "+", ("user", None)),
        ("owner-list", "-", ("owner-list", None)),
        ("list-request", "-", ("list-request", None)),
        ("postmaster+x", "+", ("postmaster", "x")),  # only the whole local part is special
        ("Postmaster", "+", ("Postmaster", None)),
    ],
)
def test_extensions_split_as_postfix_does(
    local: str, delimiters: str, split: tuple[str, str | None]
) -> None:
    assert split_extension(local, delimiters) == split


async def resolve(config: MaildirDelivery, address: str, smtputf8: bool = False) -> object:
    return await NoMaps(config).resolve(address, smtputf8=smtputf8)


async def test_every_user_of_the_listed_domains_has_a_maildir(tmp_path: Path) -> None:
    config = MaildirDelivery(
        mailbox_base=tmp_path, mailbox_domains=("example.org",), recipient_delimiter="+"
    )
    found = await resolve(config, "Cactus+Lists@Example.org")
    assert found == [
        Mailbox("Cactus+Lists@Example.org", tmp_path / "example.org" / "cactus", "Lists")
    ]
    refused = await resolve(config, "cactus@example.net")
    assert str(refused) == "554 5.7.1 <cactus@example.net>: Relay access denied"
    assert await resolve(config, "../x@example.org") == BAD_MAILBOX
    assert await resolve(config, "nodomain") == BAD_MAILBOX


async def test_no_domains_listed_means_every_domain(tmp_path: Path) -> None:
    found = await resolve(MaildirDelivery(mailbox_base=tmp_path), "u@anything.example")
    assert isinstance(found, list)
    assert found[0].maildir == tmp_path / "anything.example" / "u"


async def test_utf8_local_part_with_smtputf8(tmp_path: Path) -> None:
    config = MaildirDelivery(mailbox_base=tmp_path)
    found = await resolve(config, "ünï@example.org", smtputf8=True)
    assert isinstance(found, list)
    assert found[0].maildir == tmp_path / "example.org" / "%C3%BCn%C3%AF"
    assert await resolve(config, "ünï@example.org", smtputf8=False) == BAD_MAILBOX
    await trio.lowlevel.checkpoint()


def test_tables_open_the_maps_resolver_and_none_the_plain_one(tmp_path: Path) -> None:
    config = MaildirDelivery(
        mailbox_base=tmp_path, mailbox_maps=("inline:{a@x=x/a/}",), uid_maps=("static:5000",)
    )
    assert maps_problem(config) is None
    assert isinstance(open_resolver(config), MapsResolver)
    domains_only = MaildirDelivery(mailbox_base=tmp_path, mailbox_domains=("inline:{x=1}",))
    assert isinstance(open_resolver(domains_only), MapsResolver)
    assert maps_problem(MaildirDelivery(mailbox_base=tmp_path)) is None
    assert isinstance(open_resolver(MaildirDelivery(mailbox_base=tmp_path)), NoMaps)


def test_a_table_that_cannot_be_opened_is_named_with_its_key(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    config = MaildirDelivery(mailbox_base=tmp_path, mailbox_maps=(f"texthash:{missing}",))
    problem = maps_problem(config)
    assert problem is not None
    assert problem.startswith(f"delivery.mailbox_maps[0]: table texthash:{missing}:")
    with pytest.raises(TableOpenError, match="mailbox_maps"):
        open_resolver(config)


def test_a_bad_table_name_is_named_with_its_key(tmp_path: Path) -> None:
    config = MaildirDelivery(mailbox_base=tmp_path, gid_maps=("static:1", "a b:c"))
    problem = maps_problem(config)
    assert problem is not None
    assert problem.startswith("delivery.gid_maps[1]: table a b:c:")
