"""The SMTP/LMTP server codec under generated sessions (hypothesis).

The unit tests (tests/unit/protocols/test_smtp_server.py) fuzz an SMTP session with random
bytes and one fixed transcript; here the input is made of plausible commands with hostile
arguments, in SMTP and LMTP, both bare-newline modes, answered by a random but deterministic
policy, so that the codec gets past the greeting into MAIL, RCPT, DATA, STARTTLS and AUTH:

- nothing but events comes out, whatever the bytes (the codec never raises on input);
- cutting the input into chunks changes nothing (fed as a pipelining client sends it: a
  command that must end a group is judged by the bytes behind it, RFC 2920 §3.1);
- what the client codec sends, the server codec reads back unchanged (MAIL, RCPT, XFORWARD).
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from filterd.model import replies
from filterd.model.reply import Reply
from filterd.protocols.smtp import events as ev
from filterd.protocols.smtp.client import SmtpClient
from filterd.protocols.smtp.common import NEED_DATA
from filterd.protocols.smtp.server import Capabilities, ServerLimits, SmtpServer, State
from tests.fuzz.chunks import CUTS, cut

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REFUSED = Reply(550, "5.7.1", "Refused")
AUTH_MORE = Reply(334, "", "")


def make(lmtp: bool, bare_newline: str, auth: bool = True) -> SmtpServer:
    return SmtpServer(
        ServerLimits(max_text_line=200, max_message_size=2000, max_recipients=5, max_errors=12,
                     bare_newline=bare_newline),  # type: ignore[arg-type]
        Capabilities("mx.test", starttls=True, xforward=True, auth=("PLAIN",) if auth else ()),
        lmtp=lmtp,
    )  # fmt: skip


def answer(event: ev.ServerEvent, accept: bool) -> Reply:
    """The answer a session could give: ``accept`` says yes or no where there is a choice."""
    match event:
        case ev.BadCommand(reply=reply):
            return reply
        case ev.Data():
            return replies.START_DATA if accept else REFUSED
        case ev.EndOfData(rejection=Reply() as rejection):
            return rejection
        case ev.Quit():
            return replies.BYE
        case ev.StartTls():
            return replies.READY_TLS if accept else replies.TLS_UNAVAILABLE
        case ev.Auth() | ev.AuthResponse():
            return AUTH_MORE if accept else replies.AUTH_OK
        case _:
            return replies.OK if accept else REFUSED


def drive(
    server: SmtpServer, chunks: list[bytes], policy: list[bool]
) -> tuple[list[ev.ServerEvent], bytes]:
    """Feed ``chunks`` then EOF; answer every event. Events (content merged) and all output."""
    out = b""
    events: list[ev.ServerEvent] = []
    answered = 0
    for chunk in [*chunks, b""]:
        server.receive_data(chunk)
        while (event := server.next_event()) is not NEED_DATA:
            assert not isinstance(event, type(NEED_DATA))
            if isinstance(event, ev.BodyChunk):
                assert event.data
                if events and isinstance(events[-1], ev.BodyChunk):
                    event = ev.BodyChunk(events[-1].data + event.data)
                    events.pop()
                events.append(event)
                continue
            events.append(event)
            if isinstance(event, ev.ConnectionClosed):
                return events, out
            accept = policy[answered % len(policy)] if policy else True
            answered += 1
            reply = answer(event, accept)
            for _ in range(max(1, server.replies_owed)):
                out += server.send(reply)
            if server.state is State.TLS_PENDING:
                server.start_tls()
    raise AssertionError("the codec did not report the closed connection after EOF")


def settled(run: tuple[list[ev.ServerEvent], bytes]) -> tuple[list[ev.ServerEvent], bytes]:
    """``run`` without the content of refused messages: content goes out as it arrives, so
    how much of it came before the bare LF or the line that broke a limit depends on the
    chunks; the refusal itself does not."""
    events, out = run
    kept = [
        e
        for e, after in zip(events, [*events[1:], None], strict=True)
        if not (isinstance(e, ev.BodyChunk) and isinstance(after, ev.EndOfData) and after.rejection)
    ]
    return kept, out


# ------------------------------------------------------------------------- generated input
ADDRESS = st.one_of(
    st.sampled_from(["", "a@b.c", "@r1,@r2:a@b.c", '"a b"@c.d', "a@", "@b", "a..b@c", "é@ü.de",
                     "a@b..c", "a@.b", "a b@c", "<a@b>", 'x"@y', "a@b@c", "a\\\"@b", "@x"]),
    st.text(max_size=40),
    st.from_regex(r"[a-z.+\"-]{1,70}@[a-z.-]{1,30}", fullmatch=True),
)  # fmt: skip
PARAM = st.one_of(
    st.sampled_from(["SIZE=100", "SIZE=99999999", "SIZE=\u00b2", "SIZE=\u0661\u0662", "SIZE=",
                     "SIZE=-1", "SIZE=1" + "0" * 25, "BODY=8BITMIME", "BODY=7bit", "BODY=x",
                     "SMTPUTF8", "SMTPUTF8=1", "ENVID=a+2Bb", "ENVID=+zz", "RET=FULL", "RET=",
                     "AUTH=<>", "AUTH=a+40b", "NOTIFY=NEVER", "NOTIFY=SUCCESS,FAILURE",
                     "NOTIFY=SUCCESS,SUCCESS", "NOTIFY=", "ORCPT=rfc822;a+40b", "ORCPT=x",
                     "XYZ=1", "=", "A=B=C", "-X"]),
    st.text(max_size=20).filter(lambda p: " " not in p),
)  # fmt: skip
XATTR = st.sampled_from(["NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE", "BOGUS"])


@st.composite
def command(draw: st.DrawFn) -> str:
    verb = draw(
        st.sampled_from(
            ["EHLO", "HELO", "LHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY",
             "HELP", "STARTTLS", "XFORWARD", "AUTH", "EXPN", "BDAT", "mail", "rcpt", "ehlo", "X"]
        )
    )  # fmt: skip
    if draw(st.integers(0, 9)) == 0:
        return verb + draw(st.text(max_size=30))
    match verb.upper():
        case "MAIL" | "RCPT":
            prefix = "FROM:" if verb.upper() == "MAIL" else "TO:"
            params = draw(st.lists(PARAM, max_size=4))
            space = draw(st.sampled_from(["", " ", "  "]))
            return f"{verb} {prefix}{space}<{draw(ADDRESS)}>" + "".join(" " + p for p in params)
        case "EHLO" | "HELO" | "LHLO":
            return f"{verb} {draw(st.sampled_from(['client.test', '', ' x y', '[1.2.3.4]']))}"
        case "XFORWARD":
            items = draw(st.lists(st.tuples(XATTR, st.text(max_size=12)), max_size=4))
            return "XFORWARD" + "".join(f" {n}={v}" for n, v in items)
        case "AUTH":
            return "AUTH " + draw(st.sampled_from(["PLAIN", "PLAIN dGVzdA==", "", "A B C", "="]))
        case _:
            return verb + draw(st.sampled_from(["", " ", " x"]))


BODY_PIECES = [b"\r\n", b"\n", b"\r", b".", b"..", b"x", b"Subject: a", b"\r\n.\r\n", b"\x00",
               b"\xff", b" " * 150, b"QUIT\r\n"]  # fmt: skip


@st.composite
def session(draw: st.DrawFn) -> bytes:
    """Command lines (CRLF, or now and then a bare LF) with message content after DATA."""
    out = b""
    for _ in range(draw(st.integers(1, 14))):
        line = draw(command()).encode("utf-8", "surrogatepass")
        out += line + draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b"\r\r\n"]))
        if line.upper().startswith(b"DATA"):
            pieces = draw(st.lists(st.sampled_from(BODY_PIECES), max_size=25))
            out += b"".join(pieces) + draw(st.sampled_from([b"\r\n.\r\n", b".\r\n", b""]))
    return out


INPUT = st.one_of(session(), st.binary(max_size=600))
MODE = st.sampled_from(["reject", "normalize"])
POLICY = st.lists(st.booleans(), max_size=8)


# ------------------------------------------------------------------------------ properties
@FUZZ
@given(INPUT, st.booleans(), MODE, POLICY)
@example(b"EHLO a\r\nMAIL FROM:<> SIZE=\xc2\xb2\r\n", False, "reject", [True])
def test_any_session_gives_events_only(
    data: bytes, lmtp: bool, mode: str, policy: list[bool]
) -> None:
    events, out = drive(make(lmtp, mode), groups(data), policy)
    assert isinstance(events[-1], ev.ConnectionClosed)
    for line in out.split(b"\r\n")[:-1]:
        assert line[:3].isdigit(), line
        assert line[3:4] in (b" ", b"-", b""), line


_GROUP_ENDERS = (b"EHLO", b"HELO", b"LHLO", b"DATA", b"NOOP", b"QUIT", b"STARTTLS", b"VRFY")


def groups(data: bytes) -> list[bytes]:
    """``data`` as a pipelining client sends it (RFC 2920 §3.1): a group ends after each line
    (ended by LF, as the codec splits lines) whose verb must end one, since the server refuses
    bytes already behind such a command. Any other cut may fall anywhere."""
    out = [b""]
    for line in data.split(b"\n"):
        out[-1] += line + b"\n"
        if line.split(b" ", 1)[0].rstrip(b"\r").upper() in _GROUP_ENDERS:
            out.append(b"")
    out[-1] = out[-1][:-1]  # the split added one LF too many
    return [g for g in out if g]


@FUZZ
@given(INPUT, st.booleans(), MODE, POLICY, CUTS)
@example(
    b"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\na\n..x\r\n.\r\n",
    False,
    "normalize",
    [True],
    [2],
)
@example(
    b"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\na\n.\r\n.\r\n",
    True,
    "normalize",
    [True],
    [2],
)
def test_chunking_changes_nothing(
    data: bytes, lmtp: bool, mode: str, policy: list[bool], cuts: list[int]
) -> None:
    whole = drive(make(lmtp, mode), groups(data), policy)
    pieces = [piece for group in groups(data) for piece in cut(group, cuts)]
    assert settled(drive(make(lmtp, mode), pieces, policy)) == settled(whole)


HEAD = b"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\n"
CONTENT = st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"x", b"\r\n.\r\n"]), max_size=30)


@settings(FUZZ, max_examples=600)
@given(CONTENT, st.booleans(), MODE, CUTS)
@example([b"\n", b"."], False, "normalize", [1])
def test_message_content_cut_anywhere(
    pieces: list[bytes], lmtp: bool, mode: str, cuts: list[int]
) -> None:
    """Content made of line ends and dots only, where the terminator and dot-stuffing rules
    meet: however it is cut, the same content, the same end and the same replies."""
    head = HEAD.replace(b"EHLO", b"LHLO") if lmtp else HEAD
    content = b"".join(pieces) + b"\r\n.\r\nQUIT\r\n"
    whole = drive(make(lmtp, mode), [*groups(head), content], [True])
    chunked = drive(make(lmtp, mode), [*groups(head), *cut(content, cuts)], [True])
    assert settled(chunked) == settled(whole)


@FUZZ
@given(CONTENT, MODE, st.integers(1, 4))
def test_lmtp_data_ends_only_at_crlf_dot_crlf(pieces: list[bytes], mode: str, rcpts: int) -> None:
    """LMTP (tests/unit covers SMTP): the content ends exactly where CRLF.CRLF first is, in
    both bare-newline modes, and the end owes one reply per accepted recipient."""
    content = b"".join(pieces)
    head = b"LHLO a\r\nMAIL FROM:<>\r\n" + b"RCPT TO:<a@b.c>\r\n" * rcpts + b"DATA\r\n"
    events, out = drive(make(True, mode), [*groups(head), content], [True])
    ended = [e for e in events if isinstance(e, ev.EndOfData)]
    assert len(ended) == ((b"\r\n" + content).find(b"\r\n.\r\n") >= 0)
    if ended:
        lines = out.split(b"\r\n")
        after_354 = lines[lines.index(b"354 End data with <CR><LF>.<CR><LF>") + 1 :]
        refusal = ended[0].rejection
        code = b"250" if refusal is None else str(refusal.code).encode()
        assert [line[:3] for line in after_354[:rcpts]] == [code] * rcpts


# --------------------------------------------------------------- client codec → server codec
MAILBOX = st.from_regex(r"[A-Za-z0-9.+_-]{1,40}@[a-z0-9-]{1,20}(\.[a-z]{2,6}){1,3}", fullmatch=True)
MAIL_PARAMS = st.lists(
    st.sampled_from(["SIZE=1000", "BODY=8BITMIME", "SMTPUTF8", "ENVID=x+2By", "RET=HDRS"]),
    unique_by=lambda p: p.partition("=")[0],
)
RCPT_PARAMS = st.lists(
    st.sampled_from(["NOTIFY=NEVER", "NOTIFY=DELAY,FAILURE", "ORCPT=rfc822;x+40y"]),
    unique_by=lambda p: p.partition("=")[0],
)


def _exchange(client: SmtpClient, server: SmtpServer, wire: bytes) -> ev.ServerEvent:
    """``wire`` from the client to the server, which answers; the answer back to the client."""
    server.receive_data(wire)
    event = server.next_event()
    assert not isinstance(event, type(NEED_DATA))
    reply = server.ehlo_reply() if isinstance(event, ev.Hello) else answer(event, True)
    client.receive_data(server.send(reply))
    assert client.next_reply() == reply
    return event


def _ready(lmtp: bool) -> tuple[SmtpClient, SmtpServer]:
    client = SmtpClient(lmtp=lmtp)
    server = make(lmtp, "reject", auth=False)
    client.receive_data(server.greeting())
    assert isinstance(client.next_reply(), Reply)
    hello = _exchange(client, server, client.lhlo("c.test") if lmtp else client.ehlo("c.test"))
    assert isinstance(hello, ev.Hello)
    return client, server


@FUZZ
@given(st.booleans(), st.one_of(st.just(""), MAILBOX), MAIL_PARAMS, MAILBOX, RCPT_PARAMS)
def test_what_the_client_sends_the_server_reads_back(
    lmtp: bool, sender: str, mail_params: list[str], rcpt: str, rcpt_params: list[str]
) -> None:
    client, server = _ready(lmtp)
    mail = _exchange(client, server, client.mail(sender, mail_params))
    assert isinstance(mail, ev.MailFrom)
    assert (mail.address, mail.params) == (sender, tuple(mail_params))
    to = _exchange(client, server, client.rcpt(rcpt, rcpt_params))
    assert to == ev.RcptTo(rcpt, tuple(rcpt_params))


XTEXT_VALUE = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="+="), max_size=40
).map(lambda v: v or "x")


@FUZZ
@given(st.dictionaries(st.sampled_from(["NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT",
                                        "SOURCE"]), XTEXT_VALUE))  # fmt: skip
def test_xforward_round_trip(attrs: dict[str, str]) -> None:
    client, server = _ready(False)
    read: dict[str, str] = {}
    for wire in client.xforward(attrs):
        assert len(wire) <= 512
        event = _exchange(client, server, wire)
        assert isinstance(event, ev.Xforward)
        read.update(dict(event.attributes))
    assert read == attrs
