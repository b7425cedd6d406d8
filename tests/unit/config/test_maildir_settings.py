"""[delivery] method = "maildir": virtual(8)'s settings, the deprecated root, filing rules;
each mistake named with its file, line, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.load import load_config, parse_config
from filterd.config.render import render_config
from filterd.config.schema import FilingRule, MaildirDelivery
from tests.unit.config.test_load import MINIMAL, only_problem, write


def test_virtual8_settings_load(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            MINIMAL
            + 'mailbox_base = "/var/mail/vhosts"\n'
            + 'mailbox_domains = ["Example.ORG"]\n'
            + 'mailbox_maps = ["mysql:/etc/postfix/mysql-virtual-mailbox-maps.cf"]\n'
            + 'uid_maps = ["static:5000"]\n'
            + 'mailbox_quota = "1GiB"\n'
            + 'recipient_delimiter = "+"\n'
            + "extension_folders = true\n"
            + '[[delivery.filing]]\nheader = "X-Spam-Flag: YES"\nfolder = ".Junk"\n'
            + '[[delivery.filing]]\nfinding = "spamassassin"\nscore = 5\nfolder = ".Junk"\n',
        )
    )
    delivery = config.delivery
    assert isinstance(delivery, MaildirDelivery)
    assert delivery.base == Path("/var/mail/vhosts")
    assert delivery.base_key == "delivery.mailbox_base"
    assert delivery.mailbox_domains == ("example.org",)
    assert delivery.maps == {
        "mailbox_maps": ("mysql:/etc/postfix/mysql-virtual-mailbox-maps.cf",),
        "uid_maps": ("static:5000",),
    }
    assert delivery.mailbox_quota == 1 << 30
    assert delivery.filing == (
        FilingRule(header="X-Spam-Flag: YES", folder=".Junk"),
        FilingRule(finding="spamassassin", score=5.0, folder=".Junk"),
    )
    again = parse_config(render_config(config))
    assert again.delivery == delivery


def test_root_still_works_and_writes_back_as_root(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + 'root = "/srv/mail"\n'))
    assert isinstance(config.delivery, MaildirDelivery)
    assert config.delivery.base == Path("/srv/mail")
    assert config.delivery.base_key == "delivery.root"
    text = render_config(config)
    assert 'root = "/srv/mail"' in text
    assert "mailbox_base" not in text
    assert parse_config(text).delivery == config.delivery


def test_root_and_mailbox_base_together(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, MINIMAL + 'root = "/a"\nmailbox_base = "/b"\n')
    assert (error.line, error.key) == (6, "delivery.root")
    assert error.hint == "remove root and keep mailbox_base"


@pytest.mark.parametrize(
    ("rule", "key", "message"),
    [
        ('folder = ".Junk"', "delivery.filing[0].header", "exactly one of header and finding"),
        (
            'header = "X-Spam-Flag: YES"\nfinding = "spamassassin"\nfolder = ".Junk"',
            "delivery.filing[0].header",
            "exactly one of header and finding",
        ),
        (
            'header = "X-Spam-Flag"\nscore = 5.0\nfolder = ".Junk"',
            "delivery.filing[0].score",
            "this rule has none",
        ),
        ('header = ": YES"\nfolder = ".Junk"', "delivery.filing[0].header", "header name"),
        ('header = "X"\nfolder = "Junk"', "delivery.filing[0].folder", "Maildir++ folder"),
        ('header = "X"\nfolder = "../Junk"', "delivery.filing[0].folder", "Maildir++ folder"),
        ('header = "X"\nfolder = ".a..b"', "delivery.filing[0].folder", "Maildir++ folder"),
        ('header = "X"', "delivery.filing[0].folder", 'missing required key "folder"'),
    ],
)
def test_bad_filing_rules(tmp_path: Path, rule: str, key: str, message: str) -> None:
    _, error = only_problem(tmp_path, MINIMAL + f"[[delivery.filing]]\n{rule}\n")
    assert error.key == key
    assert message in error.message
    assert error.line is not None
    assert error.line >= 6


def test_extension_folders_need_a_delimiter(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, MINIMAL + "extension_folders = true\n")
    assert (error.line, error.key) == (6, "delivery.extension_folders")
    assert error.hint == 'set recipient_delimiter = "+", or remove extension_folders'


def test_a_map_must_look_like_a_table_name(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, MINIMAL + 'alias_maps = ["/etc/postfix/virtual"]\n')
    assert error.key == "delivery.alias_maps[0]"
    assert "type:name" in error.message


def test_domains_as_names_and_tables_and_the_alias_settings(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            MINIMAL
            + 'mailbox_domains = ["Example.ORG.", "mysql:/etc/postfix/mysql_virtual_domains.cf"]\n'
            + 'alias_domains = ["texthash:/etc/postfix/alias_domains"]\n'
            + "alias_recursion_limit = 10\n",
        )
    )
    delivery = config.delivery
    assert isinstance(delivery, MaildirDelivery)
    assert delivery.mailbox_domains[0] == "example.org"
    assert delivery.domain_tables == {
        "mailbox_domains": ("mysql:/etc/postfix/mysql_virtual_domains.cf",),
        "alias_domains": ("texthash:/etc/postfix/alias_domains",),
    }
    assert (delivery.alias_recursion_limit, delivery.alias_expansion_limit) == (10, 1000)
    assert parse_config(render_config(config)).delivery == delivery


def test_a_domain_that_is_neither_a_name_nor_a_table_names_its_fix(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, MINIMAL + 'mailbox_domains = ["not a domain"]\n')
    assert error.key == "delivery.mailbox_domains[0]"
    assert 'expected a domain or a lookup table, got "not a domain"' in error.message
    assert "mysql-virtual-mailbox-domains.cf" in error.hint
