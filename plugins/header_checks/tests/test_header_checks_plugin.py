"""The header_checks plugin through filterd.testing (the real runner and config validation)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from filterd_header_checks import plugin as plugin_module
from filterd_header_checks.plugin import HeaderChecks, _presented, _presented_bytes

from filterd.sdk import (
    Client,
    ConfigError,
    Continue,
    Discard,
    Header,
    Quarantine,
    Reject,
    RemoveHeader,
    Reply,
    Session,
    TempFail,
    Transaction,
)
from filterd.testing import make_plugin, run_plugin

MESSAGE = (
    b"Received: from a (a [192.0.2.1]) by mx\r\n"
    b"Subject: quarterly\r\n"
    b" report\r\n"
    b"User-Agent: Mutt\r\n"
    b"Content-Type: text/plain\r\n"
    b"X-Spam: yes\r\n"
    b"\r\n"
    b"line one\r\n"
    b"secret line\r\n"
    b"line three\r\n"
)


async def check(tmp_path: Path, rules: str, **config: object):  # type: ignore[no-untyped-def]
    table = tmp_path / "table"
    table.write_text(rules)
    settings = {"header_checks": [f"regexp:{table}"], **config}
    return await run_plugin(HeaderChecks, settings, message=MESSAGE, rcpts=["bob@example.org"])


def headers_of(message: bytes) -> list[bytes]:
    return message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


async def test_ignore_strip_prepend_replace_keep_order(tmp_path: Path) -> None:
    result = await check(
        tmp_path,
        "/^Received:/ IGNORE\n"
        "/^User-Agent:/ STRIP hiding the client\n"
        "/^X-Spam: (.*)/ REPLACE X-Spam-Flag: $1\n"
        "/^Content-Type:/ PREPEND X-Before-Type: here\n",
    )
    assert isinstance(result.decision("on_message"), Continue)
    assert headers_of(result.message) == [
        b"Subject: quarterly",
        b" report",
        b"X-Before-Type: here",
        b"Content-Type: text/plain",
        b"X-Spam-Flag: yes",
    ]
    assert result.message.endswith(b"\r\n\r\nline one\r\nsecret line\r\nline three\r\n")
    assert any("strip: header User-Agent: Mutt: hiding the client" in line for line in result.log)


async def test_folded_header_matches_as_one_logical_line(tmp_path: Path) -> None:
    # In regexp: tables "." matches the newline between the folded lines (glibc, no m flag).
    result = await check(tmp_path, "/^Subject: quarterly. report$/ REJECT folded match\n")
    assert result.final == Reject(Reply(550, "5.7.1", "folded match"))


async def test_reject_with_4xx_status_is_a_tempfail(tmp_path: Path) -> None:
    result = await check(tmp_path, "/^X-Spam: yes/ REJECT 4.7.1 try later\n")
    assert result.final == TempFail(Reply(451, "4.7.1", "try later"))


async def test_discard_and_hold(tmp_path: Path) -> None:
    assert (await check(tmp_path, "/^X-Spam:/ DISCARD spam\n")).final == Discard("spam")
    held = await check(tmp_path, "/^X-Spam:/ HOLD review\n")
    assert isinstance(held.final, Quarantine)
    assert held.final.reason == "review"


async def test_redirect_and_bcc_edit_the_envelope(tmp_path: Path) -> None:
    result = await check(
        tmp_path, "/^Subject:/ REDIRECT boss@example.org\n/^X-Spam/ BCC audit@example.org\n"
    )
    assert result.recipients == ["boss@example.org", "audit@example.org"]


async def test_dunno_stops_the_table_and_pass_stops_inspection(tmp_path: Path) -> None:
    result = await check(tmp_path, "/^Received:/ DUNNO\n/^Received:/ IGNORE\n")
    assert result.edits == []
    result = await check(tmp_path, "/^Received:/ PASS\n/^X-Spam:/ REJECT no\n")
    assert result.final == Continue()


async def test_mime_header_checks_take_content_headers(tmp_path: Path) -> None:
    mime = tmp_path / "mime"
    mime.write_text("/^Content-Type: text/ WARN plain text seen\n")
    result = await check(
        tmp_path,
        "/^Content-Type:/ REJECT should not apply\n",
        mime_header_checks=[f"regexp:{mime}"],
    )
    assert result.final == Continue()
    assert any(
        "warn: header Content-Type: text/plain: plain text seen" in line for line in result.log
    )


async def test_body_checks(tmp_path: Path) -> None:
    body = tmp_path / "body"
    body.write_text("/^secret/ IGNORE\n/^line three/ REPLACE line 3\n")
    result = await check(tmp_path, "/^nothing/ DUNNO\n", body_checks=[f"pcre:{body}"])
    assert result.message.endswith(b"\r\n\r\nline one\r\nline 3\r\n")


async def test_a_filter_rule_refuses_to_load(tmp_path: Path) -> None:
    table = tmp_path / "table"
    table.write_text("# a comment\n/^X-Spam:/ FILTER smtp:[127.0.0.1]:10027\n")
    with pytest.raises(ConfigError, match=rf"{table}, line 2: FILTER cannot apply"):
        await run_plugin(HeaderChecks, {"header_checks": [f"regexp:{table}"]}, message=MESSAGE)


def test_bad_table_line_refuses_start_naming_file_and_line(tmp_path: Path) -> None:
    table = tmp_path / "header_checks"
    table.write_text("/^Received:/ IGNORE\n/^Subject: (unclosed/ REJECT x\n")
    config = tmp_path / "filterd.toml"
    config.write_text(
        '[[listen]]\naddress = "127.0.0.1:0"\n[delivery]\nmethod = "maildir"\n'
        f'[[chain]]\nplugin = "header_checks"\nconfig = {{ header_checks = ["regexp:{table}"] }}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "filterd", "check-config", "-c", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{config}:7: chain[0].config.header_checks" in done.stderr
    assert f"{table}, line 2:" in done.stderr


MULTIPART = (
    b"Subject: with attachment\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"hello\r\n"
    b"--outer\r\n"
    b"Content-Type: application/x-msdownload;\r\n"
    b' name="setup.exe"\r\n'
    b"\r\n"
    b"TVqQAAMAAAAEAAAA\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: forwarded secret\r\n"
    b"From: someone@example.net\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--outer--\r\n"
)


async def test_mime_part_headers_go_to_mime_header_checks(tmp_path: Path) -> None:
    mime = tmp_path / "mime"
    mime.write_text('/^Content-Type:.*name="[^"]*\\.exe"/ REJECT 5.7.1 no executables\n')
    result = await run_plugin(
        HeaderChecks,
        {"mime_header_checks": [f"regexp:{mime}"]},
        message=MULTIPART,
    )
    assert result.final == Reject(Reply(550, "5.7.1", "no executables"))


async def test_attached_message_headers_go_to_nested_header_checks(tmp_path: Path) -> None:
    nested = tmp_path / "nested"
    nested.write_text("/^Subject: forwarded secret/ HOLD attached secret\n")
    outer = tmp_path / "outer"
    outer.write_text("/^Subject: forwarded secret/ REJECT must not match the top level\n")
    result = await run_plugin(
        HeaderChecks,
        {"header_checks": [f"regexp:{outer}"], "nested_header_checks": [f"regexp:{nested}"]},
        message=MULTIPART,
    )
    assert result.final == Quarantine("attached secret")


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: plain\r\n",
        b"Subject : spaced name\r\n",
        b"Subject:\tfolded\r\n continued\r\n",
        b"X-Odd: cr\r inside\r\n",
        b"X-Last: no line end",
        b"X-Bare: lf\n",
    ],
)
def test_headers_are_presented_to_the_tables_as_cleanup_presents_them(raw: bytes) -> None:
    """The bytes looked up: the text form, encoded (one-line headers are taken as they are)."""
    header = Header(raw.split(b":", 1)[0].rstrip(b" ").decode(), raw)
    assert _presented_bytes(header) == _presented(header).encode("utf-8", "surrogateescape")


class Headers:
    """What the header checks read of a message without MIME parts (no body tables)."""

    headers = (
        Header("Received", b"Received: by mx\r\n"),
        Header("X-Mailer", b"X-Mailer: Mutt\r\n"),
        Header("Subject", b"Subject: hi\r\n"),
        Header("X-Mailer", b"X-Mailer: Mutt\r\n"),
    )

    def header(self, name: str) -> str | None:
        return None


@pytest.mark.parametrize("remembered", [4096, 1])
async def test_a_header_line_seen_before_is_decided_alike(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    remembered: int,
) -> None:  # fmt: skip
    """Decisions are remembered per header line: the same line gets the same decision and
    its action is carried out every time (logged, edited); with room for one line only the
    memory starts over and nothing changes either."""
    monkeypatch.setattr(plugin_module, "REMEMBERED", remembered)
    table = tmp_path / "table"
    table.write_text("/^Received:/ IGNORE\n/^X-Mailer: (.*)/ WARN mailer $1\n")
    plugin = make_plugin(HeaderChecks, {"header_checks": [f"regexp:{table}"]})
    await plugin.start()
    t = Transaction("Q1", Session("S", "test", Client("192.0.2.1")), "a@b.example")
    with caplog.at_level(logging.INFO, logger="filterd"):
        verdicts = [await plugin.on_message(t, Headers()) for _ in range(3)]  # type: ignore[arg-type]
    assert verdicts == [Continue(edits=(RemoveHeader("Received", 1),))] * 3
    assert caplog.text.count("warn: header X-Mailer: Mutt: mailer Mutt") == 6


class ManyHeaders:
    """A message view whose header lines differ from one message to the next."""

    def __init__(self, n: int) -> None:
        self.headers = (
            Header("Received", b"Received: from a (a [192.0.2.1]) by mx\r\n"),
            Header("X-Mailer", f"X-Mailer: Mutt {n}\r\n".encode()),
            Header("Subject", f"Subject: number {n}\r\n".encode()),
        )

    def header(self, name: str) -> str | None:
        return None


async def test_on_message_is_inline_and_decides_alike_on_many_threads_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``on_message`` is ``@inline``: the milter door runs it on libmilter's threads at once.
    Run it so (without trio: it must end without suspending) while the memory of decisions
    is cleared all the time (room for 2 lines): every answer is still right."""
    assert getattr(HeaderChecks.on_message, "__filterd_inline__", False)
    monkeypatch.setattr(plugin_module, "REMEMBERED", 2)
    table = tmp_path / "table"
    table.write_text("/^Received:/ IGNORE\n/^Subject: number 7$/ REJECT seven\n")
    plugin = make_plugin(HeaderChecks, {"header_checks": [f"regexp:{table}"]})
    await plugin.start()
    t = Transaction("Q1", Session("S", "test", Client("192.0.2.1")), "a@b.example")
    wrong: list[object] = []

    def check_many(offset: int) -> None:
        for n in range(offset, offset + 400):
            coro = plugin.on_message(t, ManyHeaders(n % 10))  # type: ignore[arg-type]
            try:
                coro.send(None)
            except StopIteration as done:
                verdict = done.value
            else:
                coro.close()
                verdict = "suspended"
            if n % 10 == 7:
                expected: object = Reject(Reply(550, "5.7.1", "seven"))
            else:
                expected = Continue(edits=(RemoveHeader("Received", 1),))
            if verdict != expected:
                wrong.append(verdict)

    threads = [threading.Thread(target=check_many, args=(i * 1000,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == []
