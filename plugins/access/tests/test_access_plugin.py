"""The access plugin through filterd.testing: each restriction list, the search orders, the
actions, smtpd_delay_reject, table failures and settings errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from filterd_access import Access

from filterd.sdk import (
    Accept,
    AddHeader,
    ConfigError,
    Continue,
    Discard,
    Quarantine,
    Reply,
    TempFail,
)
from filterd.testing import run_plugin

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


def table(path: Path, text: str) -> str:
    path.write_text(text)
    return f"texthash:{path}"


@pytest.fixture
def tables(tmp_path: Path) -> dict[str, str]:
    return {
        "client": table(
            tmp_path / "client",
            "192.0.2.66 REJECT listed client\n"
            "198.51.100 DEFER_IF_PERMIT greylisted network\n"
            "bad.example.net 550 5.7.1 bad host name\n"
            "203.0.113.5 OK\n",
        ),
        "helo": table(tmp_path / "helo", "localhost REJECT you are not me\nfriend.example OK\n"),
        "sender": table(
            tmp_path / "sender",
            "<> 550 5.1.1 no bounces here\n"
            "spammer.example REJECT\n"
            "hold@example.com HOLD inspect\n"
            "drop@example.com DISCARD\n"
            "tag@example.com PREPEND X-Tagged: sender\n"
            "maybe@example.com DEFER_IF_REJECT sender under review\n",
        ),
        "recipient": table(
            tmp_path / "recipient",
            "closed@example.org REJECT mailbox closed\n"
            "busy@example.org DEFER\n"
            "bye@example.org 421 4.7.0 go away\n"
            "broken@example.org hash:/etc/postfix/other\n"
            "odd@example.org reject_unauth_destination\n"
            "bcc@example.org BCC archive@example.net\n"
            "moved@example.org REDIRECT new@example.net\n",
        ),
    }


async def scan(tables: dict[str, str], **kwargs: object) -> object:
    config = {key: [value] for key, value in tables.items()}
    config.update(kwargs.pop("config", {}))  # type: ignore[arg-type]
    return await run_plugin(Access, config, message=MESSAGE, **kwargs)  # type: ignore[arg-type]


async def test_nothing_listed_passes(tables: dict[str, str]) -> None:
    result = await scan(tables)
    assert result.reply is None  # type: ignore[attr-defined]
    assert result.final == Continue()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "reply"),
    [
        (
            {"client_ip": "192.0.2.66"},
            Reply(554, "5.7.1", "<unknown[192.0.2.66]>: Client host rejected: listed client"),
        ),
        (
            {"client_name": "mx.bad.example.net", "client_ip": "192.0.2.7"},
            Reply(
                550, "5.7.1", "<mx.bad.example.net[192.0.2.7]>: Client host rejected: bad host name"
            ),
        ),
        (
            {"helo": "localhost"},
            Reply(554, "5.7.1", "<localhost>: Helo command rejected: you are not me"),
        ),
        (
            {"mail_from": ""},
            Reply(550, "5.1.7", "<>: Sender address rejected: no bounces here"),
        ),
        (
            {"mail_from": "joe@mx.spammer.example"},
            Reply(554, "5.7.1", "<joe@mx.spammer.example>: Sender address rejected: Access denied"),
        ),
        (
            {"rcpts": ["closed@example.org"]},
            Reply(554, "5.7.1", "<closed@example.org>: Recipient address rejected: mailbox closed"),
        ),
        (
            {"rcpts": ["busy@example.org"]},
            Reply(450, "4.7.1", "<busy@example.org>: Recipient address rejected: Access denied"),
        ),
        (
            {"rcpts": ["bye@example.org"]},
            Reply(421, "4.7.0", "<bye@example.org>: Recipient address rejected: go away"),
        ),
        ({"rcpts": ["broken@example.org"]}, Reply(451, "4.3.5", "Server configuration error")),
        ({"rcpts": ["odd@example.org"]}, Reply(451, "4.3.5", "Server configuration error")),
        (  # DEFER_IF_PERMIT and nothing refuses later: deferred
            {"client_ip": "198.51.100.9"},
            Reply(
                450, "4.7.1", "<unknown[198.51.100.9]>: Client host rejected: greylisted network"
            ),
        ),
        (  # DEFER_IF_PERMIT, then a refusal: the refusal
            {"client_ip": "198.51.100.9", "rcpts": ["closed@example.org"]},
            Reply(554, "5.7.1", "<closed@example.org>: Recipient address rejected: mailbox closed"),
        ),
        (  # a client OK ends the client list only
            {"client_ip": "203.0.113.5", "rcpts": ["closed@example.org"]},
            Reply(554, "5.7.1", "<closed@example.org>: Recipient address rejected: mailbox closed"),
        ),
        (  # DEFER_IF_REJECT holds within its (sender) list only
            {"mail_from": "maybe@example.com", "rcpts": ["closed@example.org"]},
            Reply(554, "5.7.1", "<closed@example.org>: Recipient address rejected: mailbox closed"),
        ),
    ],
)
async def test_refusals(tables: dict[str, str], kwargs: dict[str, object], reply: Reply) -> None:
    result = await scan(tables, **kwargs)
    assert result.reply == reply  # type: ignore[attr-defined]
    assert result.decided_at == "on_rcpt"  # type: ignore[attr-defined]  # smtpd_delay_reject


async def test_a_bare_postmaster_is_never_refused(tables: dict[str, str]) -> None:
    result = await scan(tables, client_ip="192.0.2.66", rcpts=["Postmaster"])
    assert result.reply is None  # type: ignore[attr-defined]


async def test_without_delay_reject_each_list_runs_at_its_stage(tables: dict[str, str]) -> None:
    result = await scan(tables, client_ip="192.0.2.66", config={"smtpd_delay_reject": False})
    assert result.decided_at == "on_connect"  # type: ignore[attr-defined]
    result = await scan(tables, helo="localhost", config={"smtpd_delay_reject": False})
    assert result.decided_at == "on_helo"  # type: ignore[attr-defined]
    result = await scan(tables, mail_from="", config={"smtpd_delay_reject": False})
    assert result.decided_at == "on_mail_from"  # type: ignore[attr-defined]
    # a client DEFER_IF_PERMIT waits for RCPT (the chain carries it)
    result = await scan(tables, client_ip="198.51.100.9", config={"smtpd_delay_reject": False})
    assert result.decided_at == "on_rcpt"  # type: ignore[attr-defined]
    assert isinstance(result.final, TempFail)  # type: ignore[attr-defined]


async def test_helo_ok_and_client_ok_are_accepts(tables: dict[str, str]) -> None:
    result = await scan(tables, helo="friend.example", config={"smtpd_delay_reject": False})
    assert result.returned("on_helo") == Accept()  # type: ignore[attr-defined]
    assert result.reply is None  # type: ignore[attr-defined]


async def test_hold_discard_prepend_bcc_redirect(tables: dict[str, str]) -> None:
    result = await scan(tables, mail_from="hold@example.com")
    assert result.decision("on_rcpt") == Quarantine("<hold@example.com>: Sender address inspect")  # type: ignore[attr-defined]
    result = await scan(tables, mail_from="drop@example.com")
    assert result.decision("on_rcpt") == Discard(
        "<drop@example.com>: Sender address triggers DISCARD action"
    )  # type: ignore[attr-defined]
    result = await scan(tables, mail_from="tag@example.com")
    assert AddHeader("X-Tagged", "sender") in result.edits  # type: ignore[attr-defined]
    assert result.message.startswith(b"X-Tagged: sender\r\n")  # type: ignore[attr-defined]
    result = await scan(tables, rcpts=["bcc@example.org", "other@example.org"])
    assert result.recipients == ["bcc@example.org", "other@example.org", "archive@example.net"]  # type: ignore[attr-defined]
    result = await scan(tables, rcpts=["moved@example.org", "other@example.org"])
    assert result.recipients == ["new@example.net"]  # type: ignore[attr-defined]


async def test_tables_are_tried_in_order_until_one_decides(tmp_path: Path) -> None:
    first = table(tmp_path / "first", "example.org DUNNO\nwho@example.org OK\n")
    second = table(tmp_path / "second", "example.org REJECT second\n")
    config = {"recipient": [first, second]}
    result = await run_plugin(Access, config, message=MESSAGE, rcpts=["who@example.org"])
    assert result.reply is None
    result = await run_plugin(Access, config, message=MESSAGE, rcpts=["x@example.org"])
    assert result.reply == Reply(
        554, "5.7.1", "<x@example.org>: Recipient address rejected: second"
    )


async def test_settings_shape_search_and_replies(tmp_path: Path) -> None:
    access = table(
        tmp_path / "a", "joe@example.org REJECT\n.example.net REJECT dot\nnull REJECT nul\n"
    )
    config = {
        "recipient": [access],
        "sender": [access],
        "recipient_delimiter": "+",
        "access_map_reject_code": 550,
        "parent_domain_matches_subdomains": False,
        "smtpd_null_access_lookup_key": "null",
    }
    result = await run_plugin(Access, config, message=MESSAGE, rcpts=["joe+x@example.org"])
    assert result.reply == Reply(
        550, "5.7.1", "<joe+x@example.org>: Recipient address rejected: Access denied"
    )
    result = await run_plugin(Access, config, message=MESSAGE, rcpts=["a@sub.example.net"])
    assert result.reply is not None
    assert result.reply.text.endswith("dot")
    result = await run_plugin(Access, config, message=MESSAGE, mail_from="")
    assert result.reply is not None
    assert result.reply.text.endswith("nul")


async def test_a_table_failure_is_a_temporary_lookup_failure(tmp_path: Path) -> None:
    config = {"recipient": ["fail:down"]}
    result = await run_plugin(Access, config, message=MESSAGE, rcpts=["joe@example.org"])
    assert result.reply == Reply(451, "4.3.0", "<joe@example.org>: Temporary lookup failure")
    assert any("fail:down" in line for line in result.log)


async def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="client"):
        await run_plugin(Access, {"client": ["nosuchtype:/x"]}, message=MESSAGE)
    with pytest.raises(ConfigError, match="access_map_reject_code"):
        await run_plugin(Access, {"access_map_reject_code": 250}, message=MESSAGE)
