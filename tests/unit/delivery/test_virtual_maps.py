"""The Maildir stage's recipients in lookup tables (inline: and texthash:): mailbox_maps paths,
uid/gid maps, mailbox and alias domains as names and tables, alias expansion as cleanup(8) does
it (one to many, catch-all, nesting, loops, limits, an address that names itself), and what
each failure answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from filterd.config.schema import MaildirDelivery
from filterd.delivery.mailboxes import BAD_MAILBOX, CONFIGURATION_ERROR, Mailbox, open_resolver
from filterd.delivery.virtual_maps import MapsResolver
from filterd.model.reply import Reply
from filterd.sdk.tables import TableFailure

SEED_PATH = "virtualdomain.tld/cactus@virtualdomain.tld/"


def maildir_config(tmp_path: Path, **settings: object) -> MaildirDelivery:
    return MaildirDelivery.model_validate({"mailbox_base": tmp_path, **settings})


async def resolve(config: MaildirDelivery, address: str) -> list[Mailbox] | Reply:
    resolver = open_resolver(config)
    assert isinstance(resolver, MapsResolver)
    try:
        return await resolver.resolve(address, smtputf8=False)
    finally:
        await resolver.aclose()


def mailboxes(found: list[Mailbox] | Reply) -> list[tuple[str, Path]]:
    assert isinstance(found, list), found
    return [(box.address, box.maildir) for box in found]


def addresses(found: list[Mailbox] | Reply) -> list[str]:
    return [address for address, _ in mailboxes(found)]


def texthash(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return f"texthash:{path}"


# --- mailbox_maps ----------------------------------------------------------------------------


async def test_the_result_is_the_maildir_under_the_base(tmp_path: Path) -> None:
    table = texthash(tmp_path, "mailboxes", f"cactus@virtualdomain.tld {SEED_PATH}\n")
    config = maildir_config(tmp_path / "mail", mailbox_maps=[table])
    found = await resolve(config, "Cactus@VirtualDomain.tld")
    assert mailboxes(found) == [
        (
            "Cactus@VirtualDomain.tld",
            tmp_path / "mail" / "virtualdomain.tld" / "cactus@virtualdomain.tld",
        )
    ]


async def test_an_unknown_user_is_refused_as_smtpd_refuses_it(tmp_path: Path) -> None:
    config = maildir_config(tmp_path, mailbox_maps=["inline:{cactus@virtualdomain.tld=v/c/}"])
    assert str(await resolve(config, "email@spam.me")) == (
        "550 5.1.1 <email@spam.me>: Recipient address rejected: User unknown in virtual "
        "mailbox table"
    )


async def test_catch_all_mailbox_and_the_address_extension(tmp_path: Path) -> None:
    config = maildir_config(
        tmp_path,
        mailbox_maps=["inline:{ joe@example.org=example.org/joe/, @example.org=example.org/all/ }"],
        recipient_delimiter="+",
    )
    found = await resolve(config, "joe+lists@example.org")
    assert isinstance(found, list)
    assert found[0].maildir == tmp_path / "example.org" / "joe"
    assert found[0].extension == "lists"
    assert found[0].address == "joe+lists@example.org"  # Delivered-To: the full recipient
    assert mailboxes(await resolve(config, "ann@example.org")) == [
        ("ann@example.org", tmp_path / "example.org" / "all")
    ]


@pytest.mark.parametrize("result", ["example.org/joe", "../outside/", "example.org/../../outside/"])
async def test_an_mbox_result_or_one_outside_the_base_is_a_configuration_error(
    tmp_path: Path, result: str
) -> None:
    config = maildir_config(tmp_path, mailbox_maps=[f"inline:{{joe@example.org={result}}}"])
    assert await resolve(config, "joe@example.org") == CONFIGURATION_ERROR
    assert str(CONFIGURATION_ERROR) == "451 4.3.5 mail system configuration error"


async def test_a_leading_slash_stays_under_the_base(tmp_path: Path) -> None:
    config = maildir_config(tmp_path, mailbox_maps=["inline:{joe@example.org=/example.org/joe/}"])
    assert mailboxes(await resolve(config, "joe@example.org")) == [
        ("joe@example.org", tmp_path / "example.org" / "joe")
    ]


# --- uid_maps, gid_maps ------------------------------------------------------------------------


async def test_uid_and_gid_maps(tmp_path: Path) -> None:
    config = maildir_config(
        tmp_path,
        mailbox_maps=["static:example.org/joe/"],
        uid_maps=["static:5000"],
        gid_maps=["inline:{joe@example.org=5001}"],
    )
    found = await resolve(config, "joe@example.org")
    assert isinstance(found, list)
    assert (found[0].uid, found[0].gid) == (5000, 5001)
    # gid not found for ann, as virtual(8): deferred
    assert await resolve(config, "ann@example.org") == CONFIGURATION_ERROR


@pytest.mark.parametrize(
    ("uid", "gid"),
    [("static:99", "static:5000"), ("static:x", "static:5000"), ("static:5000", "static:0")],
)
async def test_a_bad_uid_or_gid_defers(tmp_path: Path, uid: str, gid: str) -> None:
    config = maildir_config(
        tmp_path, mailbox_maps=["static:example.org/joe/"], uid_maps=[uid], gid_maps=[gid]
    )
    assert await resolve(config, "joe@example.org") == CONFIGURATION_ERROR


# --- mailbox_domains, alias_domains -------------------------------------------------------------


async def test_mailbox_domains_as_names_and_as_a_table(tmp_path: Path) -> None:
    maps = ["static:d/u/"]
    by_name = maildir_config(tmp_path, mailbox_domains=["example.org"], mailbox_maps=maps)
    by_table = maildir_config(
        tmp_path, mailbox_domains=["inline:{ example.org=1, .example.net=1 }"], mailbox_maps=maps
    )
    for config in (by_name, by_table):
        assert isinstance(await resolve(config, "joe@example.org"), list)
        assert str(await resolve(config, "joe@example.com")) == (
            "554 5.7.1 <joe@example.com>: Relay access denied"
        )
    # a table matches a subdomain by a ".parent" key (no parent-domain matching otherwise)
    assert isinstance(await resolve(by_table, "joe@mail.example.net"), list)
    assert not isinstance(await resolve(by_table, "joe@example.net"), list)
    assert not isinstance(await resolve(by_name, "joe@mail.example.org"), list)


async def test_an_alias_domain_user_without_alias_is_unknown(tmp_path: Path) -> None:
    config = maildir_config(
        tmp_path,
        alias_domains=["alias.example"],
        alias_maps=["inline:{sales@alias.example=joe@example.org}"],
        mailbox_maps=["inline:{joe@example.org=example.org/joe/}"],
    )
    assert mailboxes(await resolve(config, "sales@alias.example")) == [
        ("joe@example.org", tmp_path / "example.org" / "joe")
    ]
    assert str(await resolve(config, "nobody@alias.example")) == (
        "550 5.1.1 <nobody@alias.example>: Recipient address rejected: User unknown in virtual "
        "alias table"
    )


# --- alias_maps ------------------------------------------------------------------------------


def alias_config(tmp_path: Path, aliases: str, **settings: object) -> MaildirDelivery:
    return maildir_config(
        tmp_path,
        alias_maps=[texthash(tmp_path, "aliases", aliases)],
        mailbox_maps=[
            "inline:{ @example.org=example.org/all/, joe@example.org=example.org/joe/, "
            "ann@example.org=example.org/ann/ }"
        ],
        **settings,
    )


async def test_one_address_to_many_nested_and_each_once(tmp_path: Path) -> None:
    config = alias_config(
        tmp_path,
        "team@example.org joe@example.org, staff@example.org\n"
        "staff@example.org ann@example.org JOE@example.org\n",
    )
    found = await resolve(config, "team@example.org")
    assert addresses(found) == ["joe@example.org", "ann@example.org"]


async def test_catch_all_alias_and_the_address_that_names_itself(tmp_path: Path) -> None:
    config = alias_config(
        tmp_path,
        "joe@example.org joe@example.org\n"  # the mailbox listed among the aliases
        "ann@example.org ann@example.org, joe@example.org\n"  # a copy to joe as well
        "@example.org joe@example.org\n",
    )
    assert addresses(await resolve(config, "joe@example.org")) == ["joe@example.org"]
    assert addresses(await resolve(config, "ann@example.org")) == [
        "ann@example.org",
        "joe@example.org",
    ]
    assert addresses(await resolve(config, "x@example.org")) == ["joe@example.org"]


async def test_an_alias_to_an_address_in_another_domain_keeps_the_user(tmp_path: Path) -> None:
    config = alias_config(tmp_path, "@old.example @example.org\n", recipient_delimiter="+")
    found = await resolve(config, "joe+x@old.example")
    assert isinstance(found, list)
    assert (found[0].address, found[0].maildir) == (
        "joe+x@example.org",
        tmp_path / "example.org" / "joe",
    )


@pytest.mark.parametrize(
    ("aliases", "settings"),
    [
        ("a@example.org b@example.org\nb@example.org a@example.org\n", {}),  # a loop: nesting
        (
            "a@example.org b@example.org\nb@example.org c@example.org\n",
            {"alias_recursion_limit": 1},
        ),
        (
            "a@example.org joe@example.org, ann@example.org, x@example.org\n",
            {"alias_expansion_limit": 2},
        ),
        ("a@example.org joe@example.org\n", {"alias_address_length_limit": 10}),
    ],
)
async def test_over_a_limit_the_mail_is_deferred(
    tmp_path: Path, aliases: str, settings: dict[str, object]
) -> None:
    config = alias_config(tmp_path, aliases, **settings)
    assert str(await resolve(config, "a@example.org")) == (
        "451 4.6.0 <a@example.org>: Alias expansion error"
    )


async def test_an_alias_outside_the_mailbox_domains_is_not_forwarded(tmp_path: Path) -> None:
    config = alias_config(
        tmp_path, "joe@example.org joe@gmail.example\n", mailbox_domains=["example.org"]
    )
    assert await resolve(config, "joe@example.org") == CONFIGURATION_ERROR


async def test_aliases_without_mailbox_maps_go_to_domain_user(tmp_path: Path) -> None:
    config = maildir_config(tmp_path, alias_maps=["inline:{sales@example.org=joe@example.org}"])
    assert mailboxes(await resolve(config, "sales@example.org")) == [
        ("joe@example.org", tmp_path / "example.org" / "joe")
    ]


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["mailbox_maps", "alias_maps", "uid_maps", "mailbox_domains"])
async def test_a_table_that_cannot_answer_is_a_failure_never_unknown(
    tmp_path: Path, key: str
) -> None:
    settings: dict[str, object] = {"mailbox_maps": ["static:d/u/"], key: ["fail:down"]}
    with pytest.raises(TableFailure):
        await resolve(maildir_config(tmp_path, **settings), "joe@example.org")
    await trio.lowlevel.checkpoint()


async def test_the_recipient_itself_outside_the_domains_is_relay_denied_even_self_aliased(
    tmp_path: Path,
) -> None:
    config = alias_config(
        tmp_path, "joe@other.example joe@other.example\n", mailbox_domains=["example.org"]
    )
    assert str(await resolve(config, "joe@other.example")) == (
        "554 5.7.1 <joe@other.example>: Relay access denied"
    )
    assert await resolve(config, "nodomain") == BAD_MAILBOX
