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
