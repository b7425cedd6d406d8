"""The pyzor plugin through filterd's chain runner, against a real pyzord on loopback."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from filterd_pyzor import Pyzor, PyzorError, check_result, report

from filterd.sdk import AddHeader, ConfigError, Quarantine, Reject, TempFail
from filterd.sdk.process import Completed
from filterd.testing import make_plugin, run_plugin, validate_config
from tests.support.pyzord import PyzordInstance

pytestmark = pytest.mark.timeout(60)


def message(tag: str) -> bytes:
    """A message whose body Pyzor digests (it drops short lines and tokens of 10 characters
    or more, so the tag goes in as short words): unique per ``tag``."""
    words = " ".join(tag[i : i + 6] for i in range(0, len(tag), 6)).encode()
    return (
        b"From: Alice <alice@example.net>\r\n"
        b"To: bob@example.org\r\n"
        b"Subject: pyzor test\r\n"
        b"\r\n"
        b"This is an entirely ordinary sentence about the weather in the hills.\r\n"
        b"Another line of plain prose so that the digest has something to chew on.\r\n"
        b"Reference words " + words + b" for the records of this test run.\r\n"
    )


def settings(pyzord: PyzordInstance, **more: object) -> dict[str, object]:
    return {"homedir": str(pyzord.homedir), "server_timeout": 2, **more}


async def test_reported_message_is_listed_and_unreported_is_not(pyzord: PyzordInstance) -> None:
    spam, ham = message(uuid.uuid4().hex), message(uuid.uuid4().hex)
    (answer,) = await report(spam, homedir=pyzord.homedir)
    assert (answer.server, answer.code, answer.text) == (pyzord.address, 200, "OK")

    listed = await run_plugin(Pyzor, settings(pyzord), message=spam)
    assert listed.reply is None
    assert [(f.name, f.detail) for f in listed.findings] == [
        ("pyzor", "listed count=1 whitelisted=0")
    ]
    assert listed.edits == [AddHeader("X-Pyzor", "Reported 1 times, whitelisted 0 times.")]
    assert listed.message.startswith(b"X-Pyzor: Reported 1 times, whitelisted 0 times.\r\n")

    clean = await run_plugin(Pyzor, settings(pyzord), message=ham)
    assert clean.reply is None
    assert clean.edits == []
    assert [(f.name, f.detail) for f in clean.findings] == [
        ("pyzor", "not listed count=0 whitelisted=0")
    ]


async def test_counts_and_actions(pyzord: PyzordInstance, tmp_path: Path) -> None:
    spam = message(uuid.uuid4().hex)
    path = tmp_path / "spam.eml"
    path.write_bytes(spam.replace(b"\r\n", b"\n"))  # a file on disk, LF: the same digest
    await report(path, servers_file=pyzord.servers_file, homedir=pyzord.homedir)
    await report(spam, homedir=pyzord.homedir)

    rejected = await run_plugin(
        Pyzor,
        settings(pyzord, action_when_listed="reject", reject_text="Pyzor says no"),
        message=spam,
    )
    assert isinstance(rejected.final, Reject)
    assert str(rejected.final.reply) == "550 5.7.1 Pyzor says no"
    assert rejected.findings[0].detail == "listed count=2 whitelisted=0"

    quarantined = await run_plugin(
        Pyzor, settings(pyzord, action_when_listed="quarantine"), message=spam
    )
    assert isinstance(quarantined.final, Quarantine)
    assert quarantined.final.edits == (
        AddHeader("X-Pyzor", "Reported 2 times, whitelisted 0 times."),
    )

    # Over the report threshold only: 2 reports are not "more than 2".
    high = await run_plugin(
        Pyzor, settings(pyzord, report_threshold=2, action_when_listed="reject"), message=spam
    )
    assert high.reply is None
    assert high.findings[0].detail == "not listed count=2 whitelisted=0"


async def test_dead_server_follows_on_error(pyzord: PyzordInstance, tmp_path: Path) -> None:
    dead = tmp_path / "servers"
    dead.write_text("127.0.0.1:9\n")  # discard port: nothing answers
    config = settings(pyzord, servers_file=str(dead), server_timeout=1)
    result = await run_plugin(Pyzor, config, message=message("dead"))
    assert isinstance(result.final, TempFail)
    assert str(result.final.reply).startswith("451 4.3.0 ")
    error = result.results[-1].error or ""
    assert error == "PyzorError: 127.0.0.1:9 answered 504 Reading response timed-out."


async def test_slow_server_is_cut_by_the_chain_timeout(
    pyzord: PyzordInstance, tmp_path: Path
) -> None:
    dead = tmp_path / "servers"
    dead.write_text("127.0.0.1:9\n")
    config = settings(pyzord, servers_file=str(dead), server_timeout=30)
    started = time.monotonic()
    result = await run_plugin(Pyzor, config, message=message("slow"), plugin_timeout=0.5)
    assert time.monotonic() - started < 3
    assert isinstance(result.final, TempFail)
    assert str(result.final.reply).startswith("451 4.4.5 ")


async def test_broken_pyzor_is_an_error_not_a_miss(pyzord: PyzordInstance) -> None:
    # pyzor cannot create its home: a Python traceback, exit status 1 (= "not listed"!).
    config = {"homedir": "/nonexistent/dir/.pyzor", "server_timeout": 1}
    result = await run_plugin(Pyzor, config, message=message("broken"))
    assert isinstance(result.final, TempFail)
    error = result.results[-1].error or ""
    assert error.startswith("PyzorError: no answer from any server: pyzor exited with 1: ")
    assert "FileNotFoundError" in error


def test_check_result_interpretation() -> None:
    line = b"127.0.0.1:24441\t(200, 'OK')\t%d\t%d\n"
    assert check_result(Completed(0, line % (3, 0), b""), "pyzor").listed
    assert not check_result(Completed(1, line % (0, 0), b""), "pyzor").listed
    whitelisted = check_result(Completed(1, line % (3, 1), b""), "pyzor")
    assert not whitelisted.listed
    assert whitelisted.whitelist_count == 1
    with pytest.raises(PyzorError, match="disagree"):
        check_result(Completed(1, line % (3, 0), b""), "pyzor")
    timed_out = b"127.0.0.1:24441\t(504, 'Reading response timed-out.')\n"
    with pytest.raises(PyzorError, match=r"answered 504 Reading response timed-out\.$"):
        check_result(Completed(1, timed_out, b""), "pyzor")
    with pytest.raises(PyzorError, match="no answer"):
        check_result(Completed(1, b"", b"Traceback ...\n"), "pyzor")


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="not an executable on PATH"):
        validate_config(Pyzor, {"command": "no-such-pyzor"})
    with pytest.raises(ConfigError, match="server_timeout"):
        validate_config(Pyzor, {"server_timeout": 0})
    with pytest.raises(ConfigError, match='unknown key "servers"'):
        validate_config(Pyzor, {"servers": ["127.0.0.1:24441"]})


async def test_learn_spam_reports_it_and_the_next_check_lists_it(pyzord: PyzordInstance) -> None:
    """`filterd learn --spam` calls Pyzor.learn: the `pyzor report` equivalent."""
    spam = message(uuid.uuid4().hex)
    plugin = make_plugin(Pyzor, settings(pyzord))
    await plugin.start()
    assert await plugin.learn(spam, spam=False) == "pyzor: nothing to do for ham"
    assert await plugin.learn(spam, spam=True) == "pyzor reported it as spam to 1 server(s)"
    listed = await run_plugin(Pyzor, settings(pyzord), message=spam)
    assert [(f.name, f.detail) for f in listed.findings] == [
        ("pyzor", "listed count=1 whitelisted=0")
    ]
