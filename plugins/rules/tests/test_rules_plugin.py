"""The rules plugin through filterd.testing (the SMTP door's view): replies worded as Postfix
words a policy service's, the stages it decides at, time windows in a time zone with a set
clock, lookup tables, and the settings' errors."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from filterd_rules import Rules

from filterd.sdk import Accept, AddHeader, ConfigError, Continue, Reply, TempFail
from filterd.testing import run_plugin

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"

# Sunday 29 March 2026, 01:30 UTC: 03:30 in Berlin (summer time began at 01:00 UTC)
SUNDAY_0130_UTC = datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("UTC")).timestamp()


def at(moment: float) -> type[Rules]:
    class Clocked(Rules):
        clock = staticmethod(lambda: moment)

    return Clocked


async def scan(rules: list[dict[str, Any]], plugin: type[Rules] = Rules, **kwargs: Any) -> Any:
    config = {"rules": rules, **kwargs.pop("config", {})}
    return await run_plugin(plugin, config, message=MESSAGE, **kwargs)


async def test_no_rule_matches_nothing_happens() -> None:
    result = await scan([{"sender": "== nobody@example.com", "action": "REJECT"}])
    assert result.final == Continue()
    assert result.reply is None


@pytest.mark.parametrize(
    ("rule", "kwargs", "reply"),
    [
        (
            {"recipient": "== closed@example.org", "action": "REJECT mailbox closed"},
            {"rcpts": ["Closed@Example.org"]},
            Reply(554, "5.7.1", "<Closed@Example.org>: Recipient address rejected: mailbox closed"),
        ),
        (
            {"client_address": "192.0.2.0/24", "size": "> -1", "action": "450 4.7.1 later"},
            {},
            Reply(450, "4.7.1", "<rcpt@example.org>: Recipient address rejected: later"),
        ),
        (
            {"sender": "=~ /@spam\\.example$/", "action": "REJECT spam from $$sender"},
            {"mail_from": "joe@SPAM.example"},
            Reply(
                554,
                "5.7.1",
                "<rcpt@example.org>: Recipient address rejected: spam from joe@SPAM.example",
            ),
        ),
        (
            {"helo_name": ["!!(\\.example$)"], "action": "DEFER helo"},
            {"helo": "localhost"},
            Reply(450, "4.7.1", "<rcpt@example.org>: Recipient address rejected: helo"),
        ),
        (
            {"sender": "== <>", "action": "550 5.1.1 no bounces"},
            {"mail_from": ""},
            Reply(550, "5.1.1", "<rcpt@example.org>: Recipient address rejected: no bounces"),
        ),
    ],
)
async def test_refusals_are_worded_as_postfix_words_them(
    rule: dict[str, Any], kwargs: dict[str, Any], reply: Reply
) -> None:
    result = await scan([rule], **kwargs)
    assert result.reply == reply


async def test_same_item_is_or_different_items_and() -> None:
    rules = [
        {
            "sender": ["== a@example.com", "== b@example.com"],
            "client_address": "192.0.2.1",
            "action": "REJECT listed",
        }
    ]
    assert (await scan(rules, mail_from="b@example.com")).reply is not None
    assert (await scan(rules, mail_from="c@example.com")).reply is None
    assert (await scan(rules, mail_from="a@example.com", client_ip="192.0.2.2")).reply is None


async def test_first_match_wins_and_jump_set_score() -> None:
    rules = [
        {"id": "start", "recipient": "=~ ^(jump|score)@", "action": "jump(target)"},
        {"id": "skipped", "action": "REJECT not reached"},
        {"id": "target", "action": "set(helo_name=marked.example)"},
        {"helo_name": "== marked.example", "recipient": "=~ ^score@", "action": "score(+6)"},
        {"id": "last", "helo_name": "== marked.example", "action": "PREPEND X-Rules: marked"},
    ]
    result = await scan(rules, rcpts=["jump@example.org"])
    assert result.reply is None
    assert result.edits == [AddHeader("X-Rules", "marked")]
    result = await scan(rules, rcpts=["score@example.org"])
    assert result.reply == Reply(
        554, "5.7.1", "<score@example.org>: Recipient address rejected: filterd score exceeded"
    )
    assert (await scan(rules, rcpts=["other@example.org"])).reply == Reply(
        554, "5.7.1", "<other@example.org>: Recipient address rejected: not reached"
    )


async def test_a_jump_loop_ends_with_dunno() -> None:
    rules = [
        {"id": "a", "action": "jump(b)"},
        {"id": "b", "action": "jump(a)"},
    ]
    assert (await scan(rules)).final == Continue()


async def test_ok_accepts() -> None:
    result = await scan([{"client_address": "192.0.2.1", "action": "OK"}])
    assert isinstance(result.final, Accept | Continue)
    assert result.reply is None


async def test_decides_at_the_states_listed() -> None:
    rules = [{"sender": "=~ ^bad@", "action": "REJECT bad sender"}]
    result = await scan(rules, mail_from="bad@example.com", config={"states": ["MAIL"]})
    assert result.decided_at == "on_mail_from"
    assert result.reply == Reply(
        554, "5.7.1", "<bad@example.com>: Sender address rejected: bad sender"
    )
    result = await scan(
        [{"helo_name": "== evil.example", "action": "REJECT go away"}],
        helo="evil.example",
        config={"states": ["EHLO"]},
    )
    assert result.reply == Reply(554, "5.7.1", "<evil.example>: Helo command rejected: go away")


@pytest.mark.parametrize(
    ("zone", "window", "matches"),
    [
        ("Europe/Berlin", {"time": "03:00:00-04:00:00"}, True),
        ("UTC", {"time": "03:00:00-04:00:00"}, False),
        ("UTC", {"time": "01:00:00-02:00:00"}, True),
        ("Europe/Berlin", {"days": "Sun"}, True),
        ("Europe/Berlin", {"days": "Mon-Fri"}, False),
        ("Europe/Berlin", {"days": "!!(Mon-Fri)"}, True),
        ("Europe/Berlin", {"days": "0"}, True),  # postfwd: 0 is Sunday
        ("Europe/Berlin", {"months": "Mar"}, True),
        ("Europe/Berlin", {"months": "Apr-"}, False),
        ("Europe/Berlin", {"date": "29.03.2026"}, True),
        ("Europe/Berlin", {"date": "30.03.2026-"}, False),
        ("Europe/Berlin", {"date": "-28.03.2026"}, False),
        ("Europe/Berlin", {"date": "01.03.2026-31.03.2026", "time": "03:30:00-"}, True),
        ("Europe/Berlin", {"time": "-03:29:59"}, False),
    ],
)
async def test_time_windows_in_the_time_zone(
    zone: str, window: dict[str, str], matches: bool
) -> None:
    rules = [{**window, "action": "REJECT in the window"}]
    result = await scan(rules, at(SUNDAY_0130_UTC), config={"time_zone": zone})
    assert (result.reply is not None) is matches


async def test_lookup_tables_and_list_files(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("spammer@example.com anything\n")
    listed = tmp_path / "clients"
    listed.write_text("# networks\n198.51.100.0/24\n203.0.113.7\n")
    rules = [
        {"sender": f"lookup:texthash:{blocked}", "action": "REJECT in the table"},
        {"client_address": f"file:{listed}", "action": "DEFER listed client"},
    ]
    assert (await scan(rules, mail_from="spammer@example.com")).reply == Reply(
        554, "5.7.1", "<rcpt@example.org>: Recipient address rejected: in the table"
    )
    assert (await scan(rules, client_ip="203.0.113.7")).reply == Reply(
        450, "4.7.1", "<rcpt@example.org>: Recipient address rejected: listed client"
    )
    assert (await scan(rules, client_ip="198.51.100.99")).reply is not None
    assert (await scan(rules)).reply is None


async def test_a_failing_table_tempfails(tmp_path: Path) -> None:
    rules = [{"sender": "lookup:fail:broken", "action": "REJECT listed"}]
    result = await scan(rules)
    assert result.final == TempFail(
        Reply(451, "4.3.0", "<rcpt@example.org>: Temporary lookup failure")
    )


async def test_postfwd_file_in_the_list(tmp_path: Path) -> None:
    cf = tmp_path / "postfwd.cf"
    cf.write_text(
        "# postfwd's own syntax\n"
        "&&LOCAL { client_address=192.0.2.0/24 ; };\n"
        "id=LOCAL_BIG; &&LOCAL; size>=1000 \\\n"
        "   ; action=REJECT too big for $$client_address\n"
        'id=QUOTED; sender=~"^q@"\n'
        "    action=DUNNO\n"
    )
    rules = [{"postfwd_file": str(cf)}, {"action": "REJECT after the file"}]
    plugin_result = await scan(rules, mail_from="q@example.com")
    assert plugin_result.final == Continue()
    result = await run_plugin(
        Rules,
        {"rules": rules},
        message=b"Subject: x\r\n\r\n" + b"x" * 2000 + b"\r\n",
        mail_from="big@example.com",
    )
    # the harness gives no SIZE=: size is 0 at RCPT, so the first rule does not match
    assert result.reply is not None
    assert result.reply.text.endswith("after the file")


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"sender": "=~ (unclosed", "action": "REJECT"}], "is no regular expression"),
        ([{"sender": "== x@y"}], "no action"),
        ([{"action": "jump(nowhere)"}], "no rule has id 'nowhere'"),
        ([{"action": "greylistt()"}], "unknown action greylistt()"),
        ([{"rbl": "zen.spamhaus.org", "action": "REJECT"}], "not supported"),
        ([{"sender": "lookup:nosuchtype:/x", "action": "REJECT"}], "lookup:nosuchtype:/x"),
        ([{"postfwd_file": "/nonexistent/postfwd.cf"}], "cannot read postfwd rule file"),
    ],
)
async def test_bad_rules_are_config_errors(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await scan(rules)
    assert message in str(caught.value)


async def test_postfwd_file_errors_name_the_line(tmp_path: Path) -> None:
    cf = tmp_path / "postfwd.cf"
    cf.write_text("id=A; sender==a@b; action=DUNNO\n\nid=B; sender==x@y\n")
    with pytest.raises(ConfigError) as caught:
        await scan([{"postfwd_file": str(cf)}])
    assert f"{cf}:3: rule without action" in str(caught.value)
    cf.write_text("id=A; &&UNDEFINED; action=DUNNO\n")
    with pytest.raises(ConfigError, match="undefined macro &&UNDEFINED"):
        await scan([{"postfwd_file": str(cf)}])


async def test_unknown_time_zone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown time zone"):
        await scan([], config={"time_zone": "Mars/Olympus"})
