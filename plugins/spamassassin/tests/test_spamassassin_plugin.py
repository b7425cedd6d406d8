"""The spamassassin plugin through filterd's chain runner, against a real spamd (one per module)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from filterd_spamassassin import SpamAssassin, learn
from filterd_spamassassin.headers import field_value, split_message

from filterd.sdk import MessageView, Quarantine, Reject, TempFail
from filterd.sdk.spamd import Command, SpamdClient
from filterd.testing import ScanResult, load_message, run_plugin
from tests.support.data import MAIL_CORPUS
from tests.support.spamd import GTUBE, SpamdInstance, running_spamd, spamd_installed

pytestmark = [
    pytest.mark.skipif(not spamd_installed(), reason="spamd is not installed"),
    pytest.mark.timeout(120),
]

HAM = MAIL_CORPUS / "msg_01.txt"
# filterd's trace header (first in what spamd sees) names the client: run_plugin's default,
# 192.0.2.1 without a DNS name, costs about 2.6 points (RCVD_ILLEGAL_IP, RDNS_NONE), enough to
# make the 2001 ham (DATE_IN_PAST_96_XX) spam. A local client is what ham comes from here.
LOCAL_IP, LOCAL_NAME = "127.0.0.1", "localhost"
SPAM = (
    b"From: Spammer <spammer@example.net>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: cheap watches\r\n"
    b"Message-ID: <gtube-1@example.net>\r\n"
    b"\r\n"
    b"Buy now.\r\n" + GTUBE.encode() + b"\r\n"
)
Handler = Callable[[trio.SocketStream], Awaitable[object]]


def tcp(spamd: SpamdInstance) -> str:
    return f"{spamd.host}:{spamd.port}"


def header(result: ScanResult, name: str) -> str | None:
    """The value of the first header ``name`` in the message as it would be relayed, unfolded
    with its white space squeezed."""
    for f in split_message(result.message).fields:
        if f.name.lower() == name.lower():
            return re.sub(r"\s+", " ", field_value(f))
    return None


def without_spam_headers(message: bytes) -> bytes:
    """The relayed message minus the plugin's X-Spam-* headers: what spamd was sent."""
    split = split_message(message)
    kept = b"".join(f.raw for f in split.fields if not f.name.lower().startswith("x-spam-"))
    return kept + split.separator + split.body


async def spamd_process(spamd: SpamdInstance, message: bytes) -> list[tuple[str, bytes]]:
    """spamd's own PROCESS output for ``message``: the X-Spam-* fields, raw."""
    client = SpamdClient(spamd.address)
    response = await client.check(message, len(message), Command.PROCESS)
    fields = split_message(response.body).fields
    return [(f.name, f.raw) for f in fields if f.name.lower().startswith("x-spam-")]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    """A loopback TCP server running ``handler`` per connection; yields its port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def read_request(stream: trio.SocketStream) -> bytes:
    """Everything the client sends until it half-closes."""
    data = bytearray()
    async for chunk in stream:
        data += chunk
    return bytes(data)


# --- GTUBE and ham ------------------------------------------------------------------------


async def test_gtube_is_tagged(spamd: SpamdInstance) -> None:
    result = await run_plugin(SpamAssassin, {"address": tcp(spamd)}, message=SPAM)
    assert result.reply is None
    assert header(result, "X-Spam-Flag") == "YES"
    score = header(result, "X-Spam-Score")
    assert score is not None
    assert float(score) >= 1000  # GTUBE; other rules add a little
    assert header(result, "X-Spam-Level") == "*" * 50
    status = header(result, "X-Spam-Status")
    assert status is not None
    head, _, rest = status.partition(" tests=")
    tests, _, autolearn = rest.partition(" autolearn=")
    assert head == f"Yes, score={score} required=5.0"
    assert "GTUBE" in tests.replace(", ", ",").split(",")  # folded after a comma
    assert autolearn == "unavailable"
    (finding,) = result.findings
    assert finding.name == "spamassassin"
    assert finding.score == float(score)
    assert finding.detail.startswith(f"spam score={score} required=5.0 tests=")
    assert "GTUBE" in finding.detail.split("tests=")[1].split(",")
    # The headers go on top, in the conventional order, and the body is untouched.
    names = [f.name for f in split_message(result.message).fields][:4]
    assert names == ["X-Spam-Flag", "X-Spam-Score", "X-Spam-Level", "X-Spam-Status"]
    assert result.message.endswith(SPAM.split(b"\r\n\r\n", 1)[1])


async def test_gtube_over_reject_score_is_rejected(spamd: SpamdInstance) -> None:
    config = {"address": tcp(spamd), "reject_score": 20, "reject_text": "Spam refused here"}
    result = await run_plugin(SpamAssassin, config, message=SPAM)
    assert isinstance(result.final, Reject)
    assert result.reply is not None
    assert (result.reply.code, result.reply.status, result.reply.text) == (
        550,
        "5.7.1",
        "Spam refused here",
    )
    assert result.findings[0].score >= 1000


async def test_quarantine_score_quarantines_with_the_headers(spamd: SpamdInstance) -> None:
    config = {"address": tcp(spamd), "quarantine_score": 5, "reject_score": 2000}
    result = await run_plugin(SpamAssassin, config, message=SPAM)
    assert isinstance(result.final, Quarantine)
    assert re.fullmatch(r"spam \(score 10\d\d\.\d\)", result.final.reason)
    assert header(result, "X-Spam-Flag") == "YES"


async def test_ham_passes_untagged(spamd: SpamdInstance) -> None:
    config = {"address": tcp(spamd), "quarantine_score": 5, "reject_score": 10}
    result = await run_plugin(
        SpamAssassin, config, message=HAM, client_ip=LOCAL_IP, client_name=LOCAL_NAME
    )
    assert result.reply is None
    assert result.decided_at is None
    assert header(result, "X-Spam-Flag") is None
    status = header(result, "X-Spam-Status")
    assert status is not None
    assert status.startswith("No, score=")
    assert result.findings[0].detail.startswith("ham score=")
    # On top, above filterd's trace header (what spamd saw first), as SpamAssassin does.
    names = [f.name for f in split_message(result.message).fields]
    assert names[:4] == ["X-Spam-Score", "X-Spam-Level", "X-Spam-Status", "Received"]


async def test_status_header_matches_spamds_own(spamd: SpamdInstance) -> None:
    """SYMBOLS mode writes X-Spam-Status as spamd's PROCESS does for the same message, but for
    what SYMBOLS cannot tell (autolearn=, version=)."""
    for message in (SPAM, load_message(HAM)):
        result = await run_plugin(
            SpamAssassin,
            {"address": tcp(spamd)},
            message=message,
            client_ip=LOCAL_IP,
            client_name=LOCAL_NAME,
        )
        ours = dict((f.name, f.raw) for f in split_message(result.message).fields)
        theirs = dict(await spamd_process(spamd, without_spam_headers(result.message)))
        expected = theirs["X-Spam-Status"].replace(b"autolearn=disabled", b"autolearn=unavailable")
        expected = expected.replace(b" version=4.0.1", b"")
        assert ours["X-Spam-Status"] == expected
        assert ("X-Spam-Flag" in ours) == ("X-Spam-Flag" in theirs)


async def test_headers_mode_copies_spamds_headers_exactly(spamd: SpamdInstance) -> None:
    for message in (SPAM, load_message(HAM)):
        config = {"address": tcp(spamd), "mode": "headers"}
        result = await run_plugin(
            SpamAssassin, config, message=message, client_ip=LOCAL_IP, client_name=LOCAL_NAME
        )
        fields = split_message(result.message).fields
        ours = [(f.name, f.raw) for f in fields if f.name.lower().startswith("x-spam-")]
        theirs = await spamd_process(spamd, without_spam_headers(result.message))
        assert ours == theirs
        assert "GTUBE" in result.findings[0].detail or message is not SPAM


async def test_forged_spam_headers_are_replaced(spamd: SpamdInstance) -> None:
    forged = (
        b"X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100.0\r\nX-Spam-Prev-Subject: old\r\n" + SPAM
    )
    result = await run_plugin(SpamAssassin, {"address": tcp(spamd)}, message=forged)
    fields = split_message(result.message).fields
    assert [field_value(f) for f in fields if f.name == "X-Spam-Flag"] == ["YES"]
    assert len([f for f in fields if f.name == "X-Spam-Status"]) == 1
    assert [field_value(f) for f in fields if f.name == "X-Spam-Prev-Subject"] == ["old"]


# --- PROCESS: the message exactly as spamd rewrote it ---------------------------------------


@pytest.mark.parametrize("kind", ["spam", "ham"])
async def test_process_mode_relays_spamds_rewrite_byte_for_byte(
    spamd: SpamdInstance, kind: str
) -> None:
    answers: list[bytes] = []

    async def recording_proxy(client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream(*spamd.address) as upstream:
            await upstream.send_all(await read_request(client))
            await upstream.send_eof()
            answer = await read_request(upstream)
            answers.append(answer)
            await client.send_all(answer)

    message = SPAM if kind == "spam" else load_message(HAM)
    async with serving(recording_proxy) as port:
        config = {"address": f"127.0.0.1:{port}", "mode": "process"}
        result = await run_plugin(
            SpamAssassin, config, message=message, client_ip=LOCAL_IP, client_name=LOCAL_NAME
        )
    (answer,) = answers
    rewritten = answer.split(b"\r\n\r\n", 1)[1]  # spamd's response head, then the message
    assert result.message == rewritten
    assert not [f for f in result.findings if f.name == "spamassassin.rewrite_inexact"]
    if kind == "spam":  # report_safe 1: the original is attached to SpamAssassin's report
        assert b"Content analysis details:" in result.message
        assert b'Content-Type: multipart/mixed; boundary="' in result.message
        assert "GTUBE" in result.findings[0].detail
    else:
        assert header(result, "X-Spam-Flag") is None
        assert header(result, "X-Spam-Checker-Version") is not None
        assert result.message.endswith(load_message(HAM).split(b"\r\n\r\n", 1)[1])


# --- other transports -----------------------------------------------------------------------


async def test_unix_socket(spamd: SpamdInstance) -> None:
    config = {"address": f"unix:{spamd.socket_path}", "user": "filterd"}
    result = await run_plugin(SpamAssassin, config, message=SPAM)
    assert header(result, "X-Spam-Flag") == "YES"


async def test_tls(spamd: SpamdInstance) -> None:
    config = {"address": f"127.0.0.1:{spamd.tls_port}", "tls": True, "ca_file": str(spamd.ca_file)}
    result = await run_plugin(SpamAssassin, config, message=SPAM)
    assert header(result, "X-Spam-Flag") == "YES"


async def test_tls_with_an_untrusted_certificate_is_an_error(spamd: SpamdInstance) -> None:
    config = {"address": f"127.0.0.1:{spamd.tls_port}", "tls": True}  # system CAs only
    result = await run_plugin(SpamAssassin, config, message=SPAM)
    assert isinstance(result.final, TempFail)
    assert "TLS handshake failed" in (result.results[-1].error or "")


# --- failures follow on_error -----------------------------------------------------------------


async def test_spamd_stopped_mid_run_tempfails() -> None:
    with running_spamd(children=1) as own:
        address = tcp(own)
        result = await run_plugin(SpamAssassin, {"address": address}, message=SPAM)
        assert header(result, "X-Spam-Flag") == "YES"
    result = await run_plugin(SpamAssassin, {"address": address}, message=SPAM)
    assert isinstance(result.final, TempFail)
    assert result.reply is not None
    assert (result.reply.code, result.reply.status) == (451, "4.3.0")
    error = result.results[-1].error or ""
    assert error.startswith("SpamdError: ")
    assert "Connection refused" in error
    assert any("status=plugin-error" in line for line in result.log)
    assert header(result, "X-Spam-Status") is None


async def test_connection_dropped_mid_request_tempfails() -> None:
    async def dying(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some()

    async with serving(dying) as port:
        result = await run_plugin(SpamAssassin, {"address": f"127.0.0.1:{port}"}, message=SPAM)
    assert result.reply is not None
    assert (result.reply.code, result.reply.status) == (451, "4.3.0")
    assert "SpamdError" in (result.results[-1].error or "")


@pytest.mark.parametrize(
    ("on_error", "code"), [("tempfail", 451), ("reject", 554), ("continue", None)]
)
async def test_spamd_error_status_follows_on_error(on_error: str, code: int | None) -> None:
    async def broken(stream: trio.SocketStream) -> None:
        async with stream:
            await read_request(stream)
            await stream.send_all(b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n")

    async with serving(broken) as port:
        result = await run_plugin(
            SpamAssassin, {"address": f"127.0.0.1:{port}"}, message=SPAM, on_error=on_error
        )
    assert (result.reply.code if result.reply else None) == code
    assert "76 EX_PROTOCOL" in (result.results[-1].error or "")
    assert header(result, "X-Spam-Status") is None  # never a silent pass with a verdict


async def test_spamd_that_never_answers_times_out() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            await read_request(stream)
            await trio.sleep_forever()

    async with serving(silent) as port:
        started = time.monotonic()
        result = await run_plugin(
            SpamAssassin, {"address": f"127.0.0.1:{port}"}, message=SPAM, plugin_timeout=0.5
        )
        elapsed = time.monotonic() - started
    assert result.reply is not None
    assert (result.reply.code, result.reply.status) == (451, "4.4.5")
    assert result.results[-1].error == "timeout after 0.5s"
    assert elapsed < 3


# --- size limit -------------------------------------------------------------------------------


async def test_large_message_is_skipped_without_being_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_reading(self: MessageView, size: int = 0) -> None:
        raise AssertionError("the message was read")

    monkeypatch.setattr(MessageView, "raw_chunks", no_reading)
    monkeypatch.setattr(MessageView, "body_chunks", no_reading)
    line = b"x" * 998 + b"\r\n"
    big = b"Subject: big\r\n\r\n" + line * (20 * 1024 * 1024 // len(line))
    # Nothing listens there: a connection attempt would fail the message with a 451.
    async with serving(read_request) as port:
        pass
    started = time.monotonic()
    result = await run_plugin(SpamAssassin, {"address": f"127.0.0.1:{port}"}, message=big)
    scan_time = result.results[-1].seconds
    assert result.reply is None
    assert result.results[-1].error is None
    (finding,) = result.findings
    assert finding.name == "spamassassin.skipped"
    assert re.fullmatch(r"not scanned: size \d+ > max_size 512000", finding.detail)
    assert any("not scanned: message larger than max_size" in line for line in result.log)
    assert header(result, "X-Spam-Status") is None
    assert scan_time < 0.1
    assert time.monotonic() - started < 10


# --- learning ---------------------------------------------------------------------------------


async def test_learn(spamd: SpamdInstance, tmp_path: Path) -> None:
    path = tmp_path / "ham.eml"
    await trio.Path(path).write_bytes(await trio.Path(HAM).read_bytes())
    first = await learn(tcp(spamd), path, spam=False)
    assert first.did_set == {"local"}
    again = await learn(tcp(spamd), path, spam=False)
    assert again.did_set == frozenset()  # already learnt
    spam = tmp_path / "spam.eml"
    await trio.Path(spam).write_bytes(SPAM)
    assert (await learn(f"unix:{spamd.socket_path}", spam, spam=True)).did_set == {"local"}
