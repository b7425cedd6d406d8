"""The SMTP/LMTP client codec under generated replies (hypothesis).

tests/unit/protocols/test_smtp_client.py already feeds random bytes to an SMTP client owing
RSET replies, and valid transcripts cut anywhere. Here: every ``Reply`` the model can hold
comes back unchanged through ``to_bytes()`` and the parser; a whole LMTP delivery (one reply
per accepted recipient) gets its replies in order however they are cut; and for any bytes,
cutting them changes neither the replies nor where the error comes.
"""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from filterd.model.reply import Reply
from filterd.protocols.smtp.client import SmtpClient
from filterd.protocols.smtp.common import (
    NEED_DATA,
    ConnectionClosed,
    RemoteProtocolError,
)
from tests.fuzz.chunks import CUTS, cut

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LINE = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00"), max_size=60
).filter(lambda t: t == t.rstrip(" ") and not t[:1].isdigit())


@st.composite
def reply(draw: st.DrawFn) -> Reply:
    code = draw(st.integers(200, 559).filter(lambda c: c % 100 < 60 and c != 421))  # 421 closes
    status = draw(st.one_of(st.just(""), st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,3}\Z")))
    status = f"{str(code)[0]}.{status}" if status and str(code)[0] in "245" else ""
    lines = draw(st.lists(LINE, min_size=1, max_size=5))
    if status:
        assume(not any(line == status or line.startswith(status + " ") for line in lines))
    return Reply(code, status, "\n".join(lines))


def replies_of(client: SmtpClient, chunks: list[bytes], eof: bool = False) -> list[object]:
    """Replies, then NEED_DATA/ConnectionClosed or the error, as one comparable list."""
    out: list[object] = []
    event: object = NEED_DATA
    try:
        for chunk in [*chunks, *([b""] if eof else [])]:
            client.receive_data(chunk)
            while isinstance(event := client.next_reply(), Reply):
                out.append(event)
            if not isinstance(event, type(NEED_DATA)):
                break
        out.append(event)
    except RemoteProtocolError as exc:
        out.append(("error", exc.reply))
    return out


def owing(count: int, lmtp: bool = False) -> SmtpClient:
    """A client past its greeting and EHLO owing ``count`` RSET replies."""
    client = SmtpClient(lmtp=lmtp)
    client.receive_data(b"220 mx.test\r\n")
    assert isinstance(client.next_reply(), Reply)
    client.receive_data(b"250 mx.test\r\n")
    client.lhlo("c.test") if lmtp else client.ehlo("c.test")
    assert isinstance(client.next_reply(), Reply)
    for _ in range(count):
        client.rset()
    return client


@FUZZ
@given(st.lists(reply(), min_size=1, max_size=5), CUTS)
def test_every_reply_comes_back_from_its_bytes(sent: list[Reply], cuts: list[int]) -> None:
    wire = b"".join(r.to_bytes() for r in sent)
    assert replies_of(owing(len(sent)), cut(wire, cuts)) == [*sent, NEED_DATA]


@FUZZ
@given(st.lists(st.booleans(), min_size=1, max_size=8), st.lists(reply(), max_size=8), CUTS)
def test_lmtp_gets_one_reply_per_accepted_recipient(
    accepted: list[bool], finals: list[Reply], cuts: list[int]
) -> None:
    client = owing(0, lmtp=True)
    wire = client.mail("a@b.c") + b"".join(client.rcpt(f"r{i}@b.c") for i in range(len(accepted)))
    assert wire.count(b"\r\n") == 1 + len(accepted)
    client.data()
    answers = b"250 2.1.0 Ok\r\n" + b"".join(
        b"250 2.1.5 Ok\r\n" if ok else b"550 5.1.1 No\r\n" for ok in accepted
    )
    if not any(accepted):
        answers += b"554 5.5.1 no valid recipients\r\n"
        assert len(replies_of(client, [answers])) == len(accepted) + 3
        return
    answers += b"354 go\r\n"
    assert len(replies_of(client, cut(answers, cuts))) == len(accepted) + 3
    owed = client.end_of_data()
    assert owed == sum(accepted)
    finals = [*finals, *[Reply(250, "2.0.0", "Ok")] * owed][:owed]
    wire = b"".join(r.to_bytes() for r in finals)
    assert replies_of(client, cut(wire, cuts)) == [*finals, NEED_DATA]


BYTES = st.one_of(
    st.binary(max_size=400),
    st.lists(
        st.sampled_from([b"250", b"421", b"354", b"550", b"-", b" ", b"\r\n", b"\n", b"\r",
                         b"2.0.0", b"5.1.1", b"x", b"\xff", b"\x00", b"9" * 300]),
        max_size=60,
    ).map(b"".join),
)  # fmt: skip


@FUZZ
@given(st.integers(0, 5), st.booleans(), BYTES, CUTS, st.booleans())
def test_any_bytes_cut_anywhere_give_the_same_replies_and_error(
    owed: int, lmtp: bool, data: bytes, cuts: list[int], eof: bool
) -> None:
    whole = replies_of(owing(owed, lmtp), [data] if data else [], eof)
    assert replies_of(owing(owed, lmtp), cut(data, cuts), eof) == whole
    assert isinstance(whole[-1], tuple | ConnectionClosed) or whole[-1] is NEED_DATA
