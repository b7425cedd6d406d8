"""The SMTP/LMTP client codec: replies fed whole, byte by byte and with trailing bytes (h11's
``tr``); command rendering; the pipelining, DATA, LMTP and STARTTLS rules."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.model import replies
from filterd.model.reply import Reply
from filterd.protocols.smtp.client import (
    Capabilities,
    ConnectionClosed,
    ReplyTo,
    SmtpClient,
    parse_ehlo,
)
from filterd.protocols.smtp.common import (
    NEED_DATA,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
)

GREETING = b"220 mx.test ESMTP Postfix\r\n"
EHLO_REPLY = (
    b"250-mx.test\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 10240000\r\n"
    b"250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-8BITMIME\r\n"
    b"250 DSN\r\n"
)


# --- helpers -------------------------------------------------------------------------------------


def fresh() -> SmtpClient:
    return SmtpClient()


def ready(lmtp: bool = False, ehlo_reply: bytes = EHLO_REPLY) -> SmtpClient:
    """A client past the greeting and EHLO/LHLO."""
    client = SmtpClient(lmtp=lmtp)
    assert replies_of(client, [GREETING]) == [Reply(220, "", "mx.test ESMTP Postfix")]
    client.lhlo("filterd.test") if lmtp else client.ehlo("filterd.test")
    assert len(replies_of(client, [ehlo_reply])) == 1
    return client


def with_rsets(count: int) -> Callable[[], SmtpClient]:
    """A factory of clients owing ``count`` replies (RSET pipelines freely)."""

    def make() -> SmtpClient:
        client = ready()
        for _ in range(count):
            client.rset()
        return client

    return make


def replies_of(client: SmtpClient, chunks: Sequence[bytes]) -> list[Reply]:
    """Feed ``chunks``; collect replies until the codec needs data after each one."""
    out: list[Reply] = []
    for chunk in chunks:
        client.receive_data(chunk)
        while isinstance(event := client.next_reply(), Reply):
            out.append(event)
        assert event is NEED_DATA
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def tr(make: Callable[[], SmtpClient], data: bytes, expected: list[Reply]) -> None:
    """h11's ``tr``: the same replies whole, byte by byte, and with a partial reply after."""
    assert replies_of(make(), [data]) == expected
    assert replies_of(make(), bytewise(data)) == expected
    client = make()
    assert replies_of(client, [data + b"250-partial"]) == expected
    assert client.next_reply() is NEED_DATA


def tr_error(make: Callable[[], SmtpClient], data: bytes, match: str, eof: bool = False) -> None:
    """``data`` (then EOF if asked) raises RemoteProtocolError, fed whole or byte by byte."""
    for chunks in ([data], bytewise(data)):
        with pytest.raises(RemoteProtocolError, match=match) as info:
            drain(make(), [*chunks, *([b""] if eof else [])])
        assert info.value.reply == replies.NEXT_HOP_PROTOCOL


def drain(client: SmtpClient, chunks: Sequence[bytes]) -> None:
    for chunk in chunks:
        client.receive_data(chunk)
        while not isinstance(client.next_reply(), NeedData | ConnectionClosed):
            pass


# --- reply parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"220 mx.test ESMTP\r\n", Reply(220, "", "mx.test ESMTP")),
        (
            b"220-mx.test ESMTP\r\n220-more\r\n220 last\r\n",
            Reply(220, "", "mx.test ESMTP\nmore\nlast"),
        ),
        (b"220\r\n", Reply(220, "", "")),
        (b"220 \r\n", Reply(220, "", "")),
        (b"220-\r\n220 x\r\n", Reply(220, "", "\nx")),
        (b"220 2.0.0 Ready\r\n", Reply(220, "2.0.0", "Ready")),
        (b"220 2.0.0\r\n", Reply(220, "2.0.0", "")),
        (b"220 2.0.0Ready\r\n", Reply(220, "", "2.0.0Ready")),
        (b"220 4.0.0 class mismatch\r\n", Reply(220, "", "4.0.0 class mismatch")),
        (b"220 2.1234.0 too many digits\r\n", Reply(220, "", "2.1234.0 too many digits")),
        (b"220 tab\there\r\n", Reply(220, "", "tab\there")),
        (b"220 caf\xc3\xa9\r\n", Reply(220, "", "caf\u00e9")),
        (b"220 caf\xe9\r\n", Reply(220, "", "caf\udce9")),
    ],
)
def test_single_replies(wire: bytes, expected: Reply) -> None:
    tr(fresh, wire, [expected])


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (
            b"550-5.7.1 line one\r\n550 5.7.1 line two\r\n",
            Reply(550, "5.7.1", "line one\nline two"),
        ),
        (
            b"550-5.7.1 line one\r\n550 5.1.1 other status\r\n",
            Reply(550, "5.7.1", "line one\n5.1.1 other status"),
        ),
        (b"550-no status\r\n550 5.7.1 later\r\n", Reply(550, "", "no status\n5.7.1 later")),
        (b"451 4.3.0 Error: queue file write error\r\n", replies.QUEUE_WRITE),
    ],
)
def test_enhanced_status_on_multiline_replies(wire: bytes, expected: Reply) -> None:
    tr(with_rsets(1), wire, [expected])


def test_pipelined_replies_come_out_in_order() -> None:
    wire = b"250 2.0.0 Ok\r\n250-2.0.0 multi\r\n250 2.0.0 line\r\n452 4.5.3 Too many\r\n"
    expected = [
        Reply(250, "2.0.0", "Ok"),
        Reply(250, "2.0.0", "multi\nline"),
        Reply(452, "4.5.3", "Too many"),
    ]
    tr(with_rsets(3), wire, expected)


@pytest.mark.parametrize("reply", [r for r in vars(replies).values() if isinstance(r, Reply)])
def test_every_reply_in_the_table_parses_back_to_itself(reply: Reply) -> None:
    tr(with_rsets(1), reply.to_bytes(), [reply])


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"25 short code\r\n", "malformed"),
        (b"2500 long code\r\n", "malformed"),
        (b"abc\r\n", "malformed"),
        (b"650 bad class\r\n", "malformed"),
        (b"160 bad class\r\n", "malformed"),
        (b"260 bad second digit\r\n", "malformed"),
        (b"250\tx\r\n", "malformed"),
        (b"250_x\r\n", "malformed"),
        (b"\r\n", "malformed"),
        (b" 250 x\r\n", "malformed"),
        (b"250 ok\n", "bare LF"),
        (b"250-ok\r\n250 ok\n", "bare LF"),
        (b"\n", "bare LF"),
        (b"250 o\rk\r\n", "bare CR"),
        (b"250 ok\r\r\n", "bare CR"),
        (b"250 nul\x00\r\n", "NUL"),
        (b"250-one\r\n251 two\r\n", "code changed"),
    ],
)
def test_malformed_replies_are_remote_protocol_errors(wire: bytes, match: str) -> None:
    tr_error(with_rsets(1), wire, match)


def test_reply_line_length_limit_counts_crlf() -> None:
    def make() -> SmtpClient:
        return SmtpClient(max_reply_line=20)

    exactly_20 = b"220 " + b"x" * 14 + b"\r\n"
    tr(make, exactly_20, [Reply(220, "", "x" * 14)])
    tr_error(make, b"220 " + b"x" * 15 + b"\r\n", "longer than 20")


def test_over_long_line_is_refused_before_its_end_arrives() -> None:
    client = SmtpClient(max_reply_line=100)
    client.receive_data(b"220 " + b"x" * 95)
    assert client.next_reply() is NEED_DATA
    client.receive_data(b"x")  # 100 octets and still no LF: the line cannot fit
    with pytest.raises(RemoteProtocolError, match="longer than 100"):
        client.next_reply()


def test_reply_line_count_limit() -> None:
    four = b"220-a\r\n220-b\r\n220-c\r\n220 d\r\n"
    tr(lambda: SmtpClient(max_reply_lines=4), four, [Reply(220, "", "a\nb\nc\nd")])
    tr_error(lambda: SmtpClient(max_reply_lines=3), four, "longer than 3 lines")


def test_limits_must_be_sane() -> None:
    with pytest.raises(ValueError, match="max_reply"):
        SmtpClient(max_reply_line=4)
    with pytest.raises(ValueError, match="max_reply"):
        SmtpClient(max_reply_lines=0)


def test_unsolicited_reply_is_a_protocol_error() -> None:
    tr_error(fresh, GREETING + b"250 nobody asked\r\n", "unsolicited")


def test_broken_codec_stays_broken() -> None:
    client = fresh()
    client.receive_data(b"garbage\r\n" + GREETING)
    with pytest.raises(RemoteProtocolError):
        client.next_reply()
    with pytest.raises(RemoteProtocolError, match="already failed"):
        client.next_reply()
    with pytest.raises(LocalProtocolError, match="protocol error"):
        client.noop()


# --- end of file ---------------------------------------------------------------------------------


def test_eof_in_the_middle_of_a_line() -> None:
    tr_error(fresh, b"220 mx.te", "middle of a reply", eof=True)


def test_eof_between_lines_of_one_reply() -> None:
    tr_error(fresh, b"220-mx.test\r\n", "middle of a reply", eof=True)


def test_eof_with_replies_owed() -> None:
    tr_error(fresh, b"", "owed to: greeting", eof=True)
    tr_error(with_rsets(2), b"250 2.0.0 Ok\r\n", "owed to: RSET", eof=True)


def test_eof_after_quit_is_a_clean_close() -> None:
    client = ready()
    assert client.quit() == b"QUIT\r\n"
    assert replies_of(client, [b"221 2.0.0 Bye\r\n"]) == [Reply(221, "2.0.0", "Bye")]
    client.receive_data(b"")
    assert client.next_reply() == ConnectionClosed()
    assert client.next_reply() == ConnectionClosed()


def test_eof_after_quit_without_its_reply_is_a_clean_close() -> None:
    client = ready()
    client.quit()
    client.receive_data(b"")
    assert isinstance(client.next_reply(), ConnectionClosed)


def test_replies_before_eof_are_delivered_first() -> None:
    client = ready()
    client.quit()
    client.receive_data(b"221 Bye\r\n")
    client.receive_data(b"")
    assert client.next_reply() == Reply(221, "", "Bye")
    assert isinstance(client.next_reply(), ConnectionClosed)


def test_data_after_eof_is_a_local_error() -> None:
    client = fresh()
    client.receive_data(b"")
    client.receive_data(b"")  # repeated EOF is harmless
    with pytest.raises(LocalProtocolError, match="after EOF"):
        client.receive_data(b"220 late\r\n")


# --- 421 -----------------------------------------------------------------------------------------


def test_unsolicited_421_closes_the_session() -> None:
    client = ready()
    reply = replies_of(client, [b"421 4.4.2 mx.test Error: timeout exceeded\r\n"])
    assert reply == [Reply(421, "4.4.2", "mx.test Error: timeout exceeded")]
    with pytest.raises(LocalProtocolError, match="closing"):
        client.mail("a@example.org")
    client.receive_data(b"")
    assert isinstance(client.next_reply(), ConnectionClosed)


def test_421_to_a_pipelined_command_drops_the_rest() -> None:
    client = ready()
    client.mail("a@example.org")
    client.rcpt("b@example.org")
    client.data()
    assert replies_of(client, [b"421 4.3.2 Service shutting down\r\n"])[0].code == 421
    assert client.pending == ()
    client.receive_data(b"")
    assert isinstance(client.next_reply(), ConnectionClosed)


def test_421_while_sending_content() -> None:
    client = ready()
    client.mail("a@example.org")
    client.rcpt("b@example.org")
    client.data()
    replies_of(client, [b"250 Ok\r\n250 Ok\r\n354 go\r\n"])
    assert replies_of(client, [b"421 4.4.2 timeout\r\n"])[0].code == 421
    with pytest.raises(LocalProtocolError, match="closing"):
        client.end_of_data()


# --- commands ------------------------------------------------------------------------------------


def test_command_rendering() -> None:
    client = fresh()
    replies_of(client, [GREETING])
    assert client.ehlo("filterd.test") == b"EHLO filterd.test\r\n"
    replies_of(client, [EHLO_REPLY])
    assert client.mail("") == b"MAIL FROM:<>\r\n"
    assert client.rset() == b"RSET\r\n"
    assert client.mail("a@example.org", ["SIZE=454", "BODY=8BITMIME"]) == (
        b"MAIL FROM:<a@example.org> SIZE=454 BODY=8BITMIME\r\n"
    )
    assert client.rcpt(
        "b@example.org", ("ORCPT=rfc822;b@example.org", "NOTIFY=SUCCESS,FAILURE")
    ) == (b"RCPT TO:<b@example.org> ORCPT=rfc822;b@example.org NOTIFY=SUCCESS,FAILURE\r\n")
    assert client.data() == b"DATA\r\n"
    assert client.pending == (
        ReplyTo.MAIL,
        ReplyTo.RSET,
        ReplyTo.MAIL,
        ReplyTo.RCPT,
        ReplyTo.DATA,
    )


@pytest.mark.parametrize(
    ("send", "wire"),
    [
        (SmtpClient.noop, b"NOOP\r\n"),
        (SmtpClient.quit, b"QUIT\r\n"),
        (SmtpClient.starttls, b"STARTTLS\r\n"),
        (SmtpClient.rset, b"RSET\r\n"),
        (SmtpClient.data, b"DATA\r\n"),
        (lambda c: c.helo("filterd.test"), b"HELO filterd.test\r\n"),
        (lambda c: c.ehlo("[127.0.0.1]"), b"EHLO [127.0.0.1]\r\n"),
    ],
)
def test_simple_commands(send: Callable[[SmtpClient], bytes], wire: bytes) -> None:
    client = fresh()
    replies_of(client, [GREETING])
    assert send(client) == wire


def test_lhlo_in_lmtp_only() -> None:
    lmtp = SmtpClient(lmtp=True)
    replies_of(lmtp, [GREETING])
    for greet in (lmtp.ehlo, lmtp.helo):
        with pytest.raises(LocalProtocolError, match="not a LMTP command"):
            greet("filterd.test")
    assert lmtp.lhlo("filterd.test") == b"LHLO filterd.test\r\n"
    smtp = fresh()
    replies_of(smtp, [GREETING])
    with pytest.raises(LocalProtocolError, match="not a SMTP command"):
        smtp.lhlo("filterd.test")


def test_utf8_paths_are_sent_as_utf8() -> None:
    client = ready()
    assert client.mail("用户@例子.广告", ["SMTPUTF8"]) == (
        "MAIL FROM:<用户@例子.广告> SMTPUTF8\r\n".encode()
    )


@pytest.mark.parametrize("bad", ["a\r\nRSET", "a\nb", "a\rb", "a\x00b"])
def test_cr_lf_nul_in_any_argument_is_refused(bad: str) -> None:
    client = ready()
    sends: list[Callable[[], bytes]] = [
        lambda: client.mail(bad),
        lambda: client.rcpt(bad),
        lambda: client.mail("a@example.org", [bad]),
        lambda: client.rcpt("b@example.org", ["NOTIFY=NEVER", bad]),
    ]
    for send in sends:
        with pytest.raises(LocalProtocolError, match=r"CR, LF or NUL|one word"):
            send()
    with pytest.raises(LocalProtocolError, match="one word"):
        fresh_after_greeting().ehlo(bad)
    assert client.pending == ()  # nothing was recorded


@pytest.mark.parametrize("bad", ["", "two words", "tab\tname", "del\x7f"])
def test_names_and_parameters_are_single_words(bad: str) -> None:
    with pytest.raises(LocalProtocolError, match="one word"):
        fresh_after_greeting().ehlo(bad)
    with pytest.raises(LocalProtocolError, match="one word"):
        ready().mail("a@example.org", [bad])


def test_params_as_a_bare_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not one string"):
        ready().mail("a@example.org", "SIZE=10")


def test_rcpt_needs_a_path() -> None:
    with pytest.raises(LocalProtocolError, match="forward-path"):
        ready().rcpt("")


def test_unencodable_argument_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="cannot be encoded"):
        ready().mail("\ud800@example.org")


def fresh_after_greeting() -> SmtpClient:
    client = fresh()
    replies_of(client, [GREETING])
    return client


# --- pipelining (RFC 2920 §3.1) -----------------------------------------------------------------


def test_nothing_before_the_greeting() -> None:
    with pytest.raises(LocalProtocolError, match="before the reply to greeting"):
        fresh().ehlo("filterd.test")


@pytest.mark.parametrize(
    "group_ender",
    [SmtpClient.data, SmtpClient.noop, SmtpClient.starttls, SmtpClient.quit],
)
def test_group_ending_commands_must_be_last(group_ender: Callable[[SmtpClient], bytes]) -> None:
    client = ready()
    client.mail("a@example.org")
    group_ender(client)
    with pytest.raises(LocalProtocolError, match=r"RFC 2920|closing"):
        client.rset()


def test_ehlo_must_be_answered_before_the_next_command() -> None:
    client = fresh_after_greeting()
    client.ehlo("filterd.test")
    with pytest.raises(LocalProtocolError, match="before the reply to EHLO"):
        client.mail("a@example.org")


def test_postfix_style_pipelined_transaction() -> None:
    client = ready()
    wire = b"".join(
        [
            *client.xforward({"ADDR": "127.0.0.1", "PORT": "44120", "PROTO": "ESMTP"}),
            client.mail("alice@example.com", ["SIZE=454"]),
            client.rcpt("bob@example.org"),
            client.rcpt("carol@example.org"),
            client.data(),
        ]
    )
    assert wire == (
        b"XFORWARD ADDR=127.0.0.1 PORT=44120\r\n"
        b"XFORWARD PROTO=ESMTP\r\n"
        b"MAIL FROM:<alice@example.com> SIZE=454\r\n"
        b"RCPT TO:<bob@example.org>\r\n"
        b"RCPT TO:<carol@example.org>\r\n"
        b"DATA\r\n"
    )
    answers = (
        b"250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n"
        b"250 2.1.5 Ok\r\n550 5.1.1 <carol@example.org>: unknown\r\n354 End data\r\n"
    )
    got = replies_of(client, bytewise(answers))
    assert [r.code for r in got] == [250, 250, 250, 250, 550, 354]
    assert client.accepted_recipients == 1
    assert client.end_of_data() == 1
    assert replies_of(client, [b"250 2.0.0 Ok: queued as 7D3E11F\r\n"]) == [
        Reply(250, "2.0.0", "Ok: queued as 7D3E11F")
    ]
    assert client.pending == ()
    assert client.rset() == b"RSET\r\n"  # connection reuse


# --- DATA ----------------------------------------------------------------------------------------


def to_data(client: SmtpClient, rcpt_replies: bytes, rcpts: int) -> None:
    client.mail("a@example.org")
    for i in range(rcpts):
        client.rcpt(f"r{i}@example.org")
    client.data()
    replies_of(client, [b"250 2.1.0 Ok\r\n" + rcpt_replies + b"354 End data\r\n"])


def test_no_commands_while_content_is_owed() -> None:
    client = ready()
    to_data(client, b"250 Ok\r\n", 1)
    with pytest.raises(LocalProtocolError, match="end_of_data"):
        client.rset()
    assert client.end_of_data() == 1
    with pytest.raises(LocalProtocolError, match="before the reply to end of data"):
        client.rset()


def test_end_of_data_needs_a_354() -> None:
    client = ready()
    with pytest.raises(LocalProtocolError, match="354"):
        client.end_of_data()
    client.mail("a@example.org")
    client.rcpt("b@example.org")
    client.data()
    replies_of(client, [b"250 Ok\r\n250 Ok\r\n554 5.5.1 Error: no valid recipients\r\n"])
    with pytest.raises(LocalProtocolError, match="354"):
        client.end_of_data()
    assert client.rset() == b"RSET\r\n"


def test_lmtp_gets_one_final_reply_per_accepted_recipient() -> None:
    client = ready(lmtp=True)
    to_data(client, b"250 2.1.5 Ok\r\n550 5.1.1 unknown\r\n250 2.1.5 Ok\r\n", 3)
    assert client.accepted_recipients == 2
    assert client.end_of_data() == 2
    assert list(client.pending) == [ReplyTo.END_OF_DATA, ReplyTo.END_OF_DATA]
    final = replies_of(client, [b"250 2.0.0 r0 delivered\r\n452 4.2.2 r2 over quota\r\n"])
    assert [r.status for r in final] == ["2.0.0", "4.2.2"]
    assert client.pending == ()
    client.mail("a@example.org")  # the next transaction counts afresh
    replies_of(client, [b"250 Ok\r\n"])
    assert client.accepted_recipients == 0


def test_lmtp_354_without_accepted_recipients_is_a_server_error() -> None:
    client = ready(lmtp=True)
    client.mail("a@example.org")
    client.rcpt("b@example.org")
    client.data()
    with pytest.raises(RemoteProtocolError, match="RFC 2033"):
        replies_of(client, [b"250 Ok\r\n550 no\r\n354 go ahead\r\n"])


# --- STARTTLS ------------------------------------------------------------------------------------


def test_starttls_then_ehlo_again() -> None:
    client = ready()
    client.starttls()
    assert replies_of(client, [b"220 2.0.0 Ready to start TLS\r\n"]) == [replies.READY_TLS]
    with pytest.raises(LocalProtocolError, match="start_tls"):
        client.ehlo("filterd.test")
    client.start_tls()
    assert client.capabilities == Capabilities()
    assert client.pending == ()
    assert client.ehlo("filterd.test") == b"EHLO filterd.test\r\n"
    replies_of(client, [EHLO_REPLY])
    assert client.capabilities.has("pipelining")


def test_response_injection_after_starttls_220_is_refused() -> None:
    client = ready()
    client.starttls()
    client.receive_data(b"220 2.0.0 Ready to start TLS\r\n250-injected\r\n")
    assert client.next_reply() == replies.READY_TLS
    with pytest.raises(RemoteProtocolError, match="after its 220"):
        client.start_tls()
    with pytest.raises(RemoteProtocolError, match="already failed"):
        client.next_reply()


def test_a_complete_injected_reply_is_unsolicited() -> None:
    client = ready()
    client.starttls()
    client.receive_data(b"220 Ready\r\n421 4.7.0 injected\r\n")
    assert client.next_reply() == Reply(220, "", "Ready")
    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        client.next_reply()


def test_start_tls_needs_a_220() -> None:
    client = ready()
    with pytest.raises(LocalProtocolError, match="220"):
        client.start_tls()
    client.starttls()
    replies_of(client, [b"454 4.7.0 TLS not available due to temporary reason\r\n"])
    with pytest.raises(LocalProtocolError, match="220"):
        client.start_tls()
    assert client.mail("a@example.org")  # still in plaintext, carrying on


# --- XFORWARD ------------------------------------------------------------------------------------

ALL_ATTRS = {
    "NAME": "client.example.net",
    "ADDR": "192.0.2.7",
    "PORT": "44120",
    "PROTO": "ESMTP",
    "HELO": "client.example.net",
    "IDENT": "D74AF212363",
    "SOURCE": "REMOTE",
}


def test_xforward_follows_postfix_grouping_and_order() -> None:
    shuffled = dict(reversed(list(ALL_ATTRS.items())))
    assert ready().xforward(shuffled) == [
        b"XFORWARD NAME=client.example.net ADDR=192.0.2.7 PORT=44120\r\n",
        b"XFORWARD PROTO=ESMTP HELO=client.example.net IDENT=D74AF212363 SOURCE=REMOTE\r\n",
    ]


def test_xforward_names_are_case_insensitive() -> None:
    assert ready().xforward({"proto": "SMTP"}) == [b"XFORWARD PROTO=SMTP\r\n"]


def test_xforward_sends_only_announced_attributes() -> None:
    ehlo = b"250-mx.test\r\n250 XFORWARD ADDR proto\r\n"
    client = ready(ehlo_reply=ehlo)
    assert client.xforward(ALL_ATTRS) == [
        b"XFORWARD ADDR=192.0.2.7\r\n",
        b"XFORWARD PROTO=ESMTP\r\n",
    ]


def test_xforward_without_the_extension_sends_nothing() -> None:
    client = ready(ehlo_reply=b"250-mx.test\r\n250 PIPELINING\r\n")
    assert client.xforward(ALL_ATTRS) == []
    assert client.pending == ()


def test_xforward_splits_commands_at_512_octets() -> None:
    long = {name: "x" * 200 for name in ALL_ATTRS}
    wire = ready().xforward(long)
    assert all(len(line) <= 512 for line in wire)
    sent = [item for line in wire for item in line.decode().split()[1:]]
    assert [item.split("=")[0] for item in sent] == list(ALL_ATTRS)
    assert len(wire) == 4  # (NAME ADDR) (PORT) (PROTO HELO) (IDENT SOURCE)


@pytest.mark.parametrize(
    "attrs",
    [
        {"LOGIN": "x"},  # not an XFORWARD attribute
        {"NAME": "a", "name": "b"},  # the same attribute twice
        {"HELO": "two words"},  # not xtext
        {"HELO": "x\r\nRSET"},
        {"IDENT": "+2b"},  # lower-case hex is not xtext
        {"NAME": "x" * 256},
    ],
)
def test_xforward_refuses_bad_attributes(attrs: dict[str, str]) -> None:
    client = ready()
    with pytest.raises(LocalProtocolError, match="XFORWARD"):
        client.xforward(attrs)
    assert client.pending == ()


# --- capabilities --------------------------------------------------------------------------------


def test_capabilities_from_ehlo() -> None:
    caps = ready().capabilities
    assert caps.has("PIPELINING")
    assert caps.has("dsn")
    assert not caps.has("STARTTLS")
    assert caps.size_limit == 10240000
    assert caps.xforward_attrs == frozenset(ALL_ATTRS)
    assert caps.keywords["XFORWARD"] == ("NAME", "ADDR", "PROTO", "HELO", "SOURCE", "PORT", "IDENT")
    with pytest.raises(TypeError):
        caps.keywords["STARTTLS"] = ()  # type: ignore[index]


@pytest.mark.parametrize(
    ("line", "limit"),
    [
        ("SIZE 0", None),
        ("SIZE", None),
        ("SIZE abc", None),
        ("SIZE ²", None),
        ("size 52428800", 52428800),
    ],
)
def test_size_limit(line: str, limit: int | None) -> None:
    assert parse_ehlo(Reply(250, "", f"mx.test\n{line}")).size_limit == limit


def test_malformed_ehlo_lines_are_skipped_and_first_duplicate_wins() -> None:
    reply = Reply(250, "", "mx.test\n\n-BAD\nAUTH=LOGIN PLAIN\nSIZE 10\nsize 20\n8BITMIME")
    caps = parse_ehlo(reply)
    assert dict(caps.keywords) == {"SIZE": ("10",), "8BITMIME": ()}


def test_failed_ehlo_announces_nothing() -> None:
    assert parse_ehlo(Reply(502, "5.5.2", "Error: command not recognized")) == Capabilities()
    client = fresh_after_greeting()
    client.ehlo("filterd.test")
    replies_of(client, [b"502 5.5.2 Error: command not recognized\r\n"])
    assert client.capabilities == Capabilities()
    client.helo("filterd.test")
    replies_of(client, [b"250 mx.test\r\n"])
    assert client.capabilities == Capabilities()


def test_greeting_line_of_ehlo_is_not_a_keyword() -> None:
    assert not parse_ehlo(Reply(250, "", "PIPELINING")).has("PIPELINING")


# --- properties ----------------------------------------------------------------------------------

CODES = st.from_regex(r"[2-5][0-5][0-9]", fullmatch=True).filter(lambda code: code != "421")
TEXT_LINE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
STATUS = st.from_regex(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True)


@st.composite
def wire_reply(draw: st.DrawFn) -> bytes:
    code = draw(CODES)
    status = draw(st.one_of(st.just(""), STATUS))
    lines = draw(st.lists(TEXT_LINE, min_size=1, max_size=4))
    out = []
    for i, line in enumerate(lines):
        separator = " " if i == len(lines) - 1 else "-"
        body = f"{status} {line}" if status else line
        out.append(f"{code}{separator}{body}\r\n")
    return "".join(out).encode()


@st.composite
def split_transcript(draw: st.DrawFn) -> tuple[int, bytes, list[bytes]]:
    wires = draw(st.lists(wire_reply(), min_size=1, max_size=6))
    data = b"".join(wires)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    bounds = [0, *cuts, len(data)]
    return len(wires), data, [data[a:b] for a, b in itertools.pairwise(bounds) if a < b]


@given(split_transcript())
def test_any_split_of_a_valid_transcript_yields_the_same_replies(
    case: tuple[int, bytes, list[bytes]],
) -> None:
    count, data, chunks = case
    whole = replies_of(with_rsets(count)(), [data])
    assert len(whole) == count
    assert replies_of(with_rsets(count)(), chunks) == whole
    assert b"".join(reply.to_bytes() for reply in whole).count(b"\r\n") == data.count(b"\r\n")


FUZZ = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            [b"250", b"421", b"354", b"220", b"-", b" ", b"\r\n", b"\n", b"\r", b"2.0.0", b"x"]
        ),
        max_size=60,
    ).map(b"".join),
)


@given(st.integers(0, 4), FUZZ, st.lists(st.integers(0, 300), max_size=6), st.booleans())
def test_random_bytes_give_replies_or_remote_protocol_error_only(
    owed: int, data: bytes, cuts: list[int], eof: bool
) -> None:
    client = with_rsets(owed)()
    bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds) if a < b]  # b"" would be EOF
    try:
        for chunk in [*chunks, *([b""] if eof else [])]:
            client.receive_data(chunk)
            while isinstance(event := client.next_reply(), Reply):
                pass
            assert isinstance(event, NeedData | ConnectionClosed)
    except RemoteProtocolError as exc:
        hint = exc.reply
    else:
        hint = replies.NEXT_HOP_PROTOCOL
    assert hint == replies.NEXT_HOP_PROTOCOL
