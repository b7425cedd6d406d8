"""The policy delegation codec and its pure mappings (Postfix SMTPD_POLICY_README).

Every parser test feeds the input whole, byte by byte and with trailing bytes (h11's ``tr``).
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.chain.outcome import Outcome
from filterd.model.edits import AddHeader, ChangeHeader, Redirect, RemoveHeader
from filterd.model.reply import Reply
from filterd.model.verdict import Accept, Continue, Discard, Quarantine, Reject, TempFail
from filterd.protocols.policy import (
    NEED_DATA,
    ConnectionClosed,
    LocalProtocolError,
    PolicyEvent,
    PolicyLimits,
    PolicyRequest,
    PolicyServer,
    RemoteProtocolError,
)
from filterd.protocols.policy_map import (
    POLICY_ATTRIBUTES,
    header_key,
    message_key,
    plan_action,
    prepend_allowed,
    render_action,
    request_to_envelope,
)

# Captured from Postfix 3.7.11 at RCPT, in the order sent.
RCPT_LINES = [
    "request=smtpd_access_policy",
    "protocol_state=RCPT",
    "protocol_name=ESMTP",
    "client_address=127.0.0.1",
    "client_name=unknown",
    "client_port=44120",
    "reverse_client_name=unknown",
    "server_address=127.0.0.1",
    "server_port=2525",
    "helo_name=client.example.net",
    "sender=alice@example.com",
    "recipient=bob@example.org",
    "recipient_count=0",
    "queue_id=",
    "instance=3381.6b059f4c.d609f.0",
    "size=219",
    "etrn_domain=",
    "stress=",
    "sasl_method=",
    "sasl_username=",
    "sasl_sender=",
    "ccert_subject=",
    "ccert_issuer=",
    "ccert_fingerprint=",
    "ccert_pubkey_fingerprint=",
    "encryption_protocol=",
    "encryption_cipher=",
    "encryption_keysize=0",
    "policy_context=",
]
RCPT_REQUEST = ("\n".join(RCPT_LINES) + "\n\n").encode()
RCPT_ATTRS = dict(line.split("=", 1) for line in RCPT_LINES)


def request(**attrs: str) -> bytes:
    lines = [f"{k}={v}" for k, v in {"request": "smtpd_access_policy", **attrs}.items()]
    return ("\n".join(lines) + "\n\n").encode()


def drain(server: PolicyServer, chunks: list[bytes], answer: str = "DUNNO") -> list[PolicyEvent]:
    """Feed chunks then EOF, answering every request; returns the events (no NEED_DATA)."""
    events: list[PolicyEvent] = []
    for chunk in [*chunks, b""]:
        server.receive_data(chunk)
        while True:
            event = server.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, PolicyRequest | ConnectionClosed)
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events
            server.send(answer)
    return events


def splits(data: bytes) -> list[list[bytes]]:
    """Whole, byte by byte."""
    return [[data], [data[i : i + 1] for i in range(len(data))]]


# ------------------------------------------------------------------------------ codec: valid
def test_captured_rcpt_request_whole_byte_by_byte() -> None:
    for chunks in splits(RCPT_REQUEST):
        events = drain(PolicyServer(), chunks)
        assert events == [PolicyRequest(RCPT_ATTRS), ConnectionClosed()]
        first = events[0]
        assert isinstance(first, PolicyRequest)
        assert list(first.attributes) == [line.split("=")[0] for line in RCPT_LINES]
        assert first.get("queue_id") == ""  # empty values are kept
        assert first.get("no_such_attribute") == ""


def test_trailing_bytes_wait_for_the_answer_and_stay_buffered() -> None:
    server = PolicyServer()
    server.receive_data(RCPT_REQUEST + b"request=smtpd_acc")
    event = server.next_event()
    assert isinstance(event, PolicyRequest)
    with pytest.raises(LocalProtocolError, match="not been answered"):
        server.next_event()
    assert server.send("DUNNO") == b"action=DUNNO\n\n"
    assert server.in_request  # the start of the next request is buffered
    assert server.next_event() is NEED_DATA
    server.receive_data(b"ess_policy\nprotocol_state=CONNECT\n\n")
    second = server.next_event()
    assert isinstance(second, PolicyRequest)
    assert second.get("protocol_state") == "CONNECT"


def test_connection_reuse_three_requests_in_one_write() -> None:
    data = b"".join(request(protocol_state="RCPT", recipient=f"r{i}@x.example") for i in range(3))
    for chunks in splits(data):
        server = PolicyServer()
        events = drain(server, chunks)
        assert [e.get("recipient") for e in events if isinstance(e, PolicyRequest)] == [
            "r0@x.example",
            "r1@x.example",
            "r2@x.example",
        ]
        assert isinstance(events[-1], ConnectionClosed)
        assert server.requests == 3


def test_crlf_is_tolerated_and_only_one_cr_is_dropped() -> None:
    data = b"request=smtpd_access_policy\r\nhelo_name=a\r\r\nsender=\r\n\r\n"
    for chunks in splits(data):
        (event, _) = drain(PolicyServer(), chunks)
        assert isinstance(event, PolicyRequest)
        assert event.attributes == {
            "request": "smtpd_access_policy",
            "helo_name": "a\r",
            "sender": "",
        }


def test_values_may_hold_equals_signs_and_non_utf8_bytes() -> None:
    data = b"request=smtpd_access_policy\nccert_subject=CN=x=y\nhelo_name=caf\xe9\xff\n\n"
    for chunks in splits(data):
        (event, _) = drain(PolicyServer(), chunks)
        assert isinstance(event, PolicyRequest)
        assert event.get("ccert_subject") == "CN=x=y"
        assert event.get("helo_name").encode("utf-8", "surrogateescape") == b"caf\xe9\xff"


def test_a_repeated_attribute_keeps_the_first_value_like_postfix() -> None:
    data = b"request=smtpd_access_policy\nsender=first@x\nsender=second@x\n\n"
    for chunks in splits(data):
        (event, _) = drain(PolicyServer(), chunks)
        assert isinstance(event, PolicyRequest)
        assert event.get("sender") == "first@x"


def test_eof_between_requests_is_connection_closed_every_time() -> None:
    server = PolicyServer()
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()
    assert server.next_event() == ConnectionClosed()
    with pytest.raises(LocalProtocolError, match="after EOF"):
        server.receive_data(b"x")


# ----------------------------------------------------------------------------- codec: output
def test_send_renders_one_action_line_and_the_empty_line() -> None:
    server = PolicyServer()
    server.receive_data(request())
    server.next_event()
    assert server.send("550 5.7.23 SPF fail") == b"action=550 5.7.23 SPF fail\n\n"


@pytest.mark.parametrize("bad", ["", "DUNNO\n\naction=OK", "REJECT x\r", "DUNNO\x00"])
def test_send_refuses_what_would_break_the_framing(bad: str) -> None:
    server = PolicyServer()
    server.receive_data(request())
    server.next_event()
    with pytest.raises(LocalProtocolError):
        server.send(bad)


def test_send_without_a_request_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="no request"):
        PolicyServer().send("DUNNO")


def test_send_keeps_non_utf8_text_from_the_request() -> None:
    server = PolicyServer()
    server.receive_data(b"request=smtpd_access_policy\nhelo_name=\xff\n\n")
    event = server.next_event()
    assert isinstance(event, PolicyRequest)
    assert server.send(f"REJECT {event.get('helo_name')}") == b"action=REJECT \xff\n\n"


# --------------------------------------------------------------------------- codec: malformed
MALFORMED = {
    "no '='": (b"request=smtpd_access_policy\njust text\n\n", "without '='"),
    "empty name": (b"request=smtpd_access_policy\n=value\n\n", "bad attribute name"),
    "upper-case name": (b"request=smtpd_access_policy\nSender=x\n\n", "bad attribute name"),
    "NUL": (b"request=smtpd_access_policy\nsender=a\x00b\n\n", "NUL"),
    "no request=": (b"sender=a@x\n\n", "without a request="),
    "lone empty line": (b"\n", "without a request="),
    "other request type": (b"request=junk\n\n", "unknown request type"),
    "non-UTF-8 request type": (b"request=\xff\n\n", "unknown request type"),
    "EOF without the empty line": (b"request=smtpd_access_policy\nsender=a", "middle of"),
    "EOF after a complete line": (b"request=smtpd_access_policy\n", "middle of"),
    "binary garbage": (bytes(range(256)) * 4, "NUL byte"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_input_is_a_remote_protocol_error_and_stays_one(case: str) -> None:
    data, message = MALFORMED[case]
    for chunks in splits(data):
        server = PolicyServer()
        with pytest.raises(RemoteProtocolError, match=message):
            drain(server, chunks)
        with pytest.raises(RemoteProtocolError, match=message):  # the codec is dead
            server.next_event()


def test_a_one_megabyte_attribute_is_refused_before_it_is_buffered() -> None:
    limits = PolicyLimits()
    server = PolicyServer(limits)
    server.receive_data(b"request=smtpd_access_policy\nhelo_name=")
    chunk = b"a" * 4096
    fed = 0
    refused: RemoteProtocolError | None = None
    while fed < 1_048_576 and refused is None:
        server.receive_data(chunk)
        fed += len(chunk)
        try:
            assert server.next_event() is NEED_DATA
        except RemoteProtocolError as exc:
            refused = exc
    assert refused is not None
    assert "line longer than" in str(refused)
    assert fed <= limits.max_line + len(chunk)


def test_a_one_megabyte_attribute_with_its_newline_is_refused_too() -> None:
    data = b"request=smtpd_access_policy\nhelo_name=" + b"a" * 1_048_576 + b"\n\n"
    with pytest.raises(RemoteProtocolError, match="line longer than"):
        drain(PolicyServer(), [data])


def test_too_many_attributes() -> None:
    limits = PolicyLimits(max_attributes=10)
    data = request(**{f"x{i}": "" for i in range(10)})  # request= plus ten is eleven
    with pytest.raises(RemoteProtocolError, match="more than 10 attributes"):
        drain(PolicyServer(limits), [data])
    assert len(drain(PolicyServer(limits), [request(**{f"x{i}": "" for i in range(9)})])) == 2


def test_request_size_counts_every_line() -> None:
    limits = PolicyLimits(max_line=100, max_attributes=1000, max_request_size=1000)
    ok = request(**{f"a{i}": "v" * 40 for i in range(20)})
    assert len(ok) < 1000
    assert len(drain(PolicyServer(limits), [ok])) == 2
    big = request(**{f"a{i}": "v" * 40 for i in range(30)})
    for chunks in splits(big):
        with pytest.raises(RemoteProtocolError, match="larger than 1000 bytes"):
            drain(PolicyServer(limits), chunks)


def test_limits_apply_per_request_not_per_connection() -> None:
    limits = PolicyLimits(max_line=100, max_attributes=5, max_request_size=200)
    one = request(protocol_state="RCPT", recipient="a@b.example")
    events = drain(PolicyServer(limits), [one * 50])
    assert len(events) == 51


# ------------------------------------------------------------------------- codec: properties
attribute_names = st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda n: n != "request")
attribute_values = st.binary(max_size=30).map(
    lambda b: b.replace(b"\n", b"").replace(b"\x00", b"").rstrip(b"\r")
)
requests_strategy = st.lists(
    st.dictionaries(attribute_names, attribute_values, max_size=8), min_size=1, max_size=4
)


def encode(reqs: list[dict[str, bytes]]) -> bytes:
    out = b""
    for attrs in reqs:
        out += b"request=smtpd_access_policy\n"
        out += b"".join(k.encode() + b"=" + v + b"\n" for k, v in attrs.items())
        out += b"\n"
    return out


@given(reqs=requests_strategy, cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_any_split_of_valid_input_gives_the_same_requests(
    reqs: list[dict[str, bytes]], cuts: list[int]
) -> None:
    data = encode(reqs)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    events = drain(PolicyServer(), [c for c in chunks if c])
    expected = [
        PolicyRequest(
            {
                "request": "smtpd_access_policy",
                **{k: v.decode("utf-8", "surrogateescape") for k, v in attrs.items()},
            }
        )
        for attrs in reqs
    ]
    assert events == [*expected, ConnectionClosed()]


PREFIXES = [b"", b"request=", b"request=smtpd_access_policy\n", b"request=smtpd_access_policy\na="]


@given(
    prefix=st.sampled_from(PREFIXES),
    tail=st.binary(max_size=300),
    chunk=st.integers(min_value=1, max_value=50),
)
def test_random_bytes_give_events_or_a_remote_protocol_error_only(
    prefix: bytes, tail: bytes, chunk: int
) -> None:
    data = prefix + tail
    server = PolicyServer(PolicyLimits(max_line=64, max_attributes=8, max_request_size=128))
    try:
        drain(server, [data[i : i + chunk] for i in range(0, len(data), chunk)])
    except RemoteProtocolError:
        pass


@given(text=st.text(max_size=60), header=st.text(max_size=60))
def test_rendered_actions_always_fit_in_one_action_line(text: str, header: str) -> None:
    reply_text = text.replace("\r", "").replace("\x00", "")  # Reply refuses those itself
    outcomes = [
        Outcome(Reject(Reply(550, "", reply_text))),
        Outcome(TempFail(Reply(451, "4.7.1", reply_text))),
        Outcome(Discard(text)),
        Outcome(Quarantine(text)),
    ]
    try:
        outcomes.append(Outcome(Continue(), edits=(AddHeader("X-Test", header),)))
    except ValueError:
        pass  # not a valid header value in the first place
    for outcome in outcomes:
        server = PolicyServer()
        server.receive_data(request())
        server.next_event()
        action = render_action(outcome)
        wire = server.send(action)
        assert wire.count(b"\n") == 2
        assert wire.endswith(b"\n\n")
        assert not action.isdigit()  # Postfix reads an all-numeric action as OK


# --------------------------------------------------------------------------- request mapping
def test_captured_rcpt_request_maps_to_the_model() -> None:
    env = request_to_envelope(RCPT_ATTRS, session_id="S1", listener="policy-test")
    session, t, rcpt, stage = env
    assert (session.id, session.listener, session.tls) == ("S1", "policy-test", False)
    peer = session.peer
    assert (peer.address, peer.port, peer.name, peer.helo, peer.protocol) == (
        "127.0.0.1",
        44120,
        "unknown",
        "client.example.net",
        "ESMTP",
    )
    assert (t.sender, t.queue_id, t.size, t.session) == (
        "alice@example.com",
        "NOQUEUE",
        219,
        session,
    )
    assert rcpt is not None
    assert rcpt.address == "bob@example.org"
    assert stage == "rcpt"
    assert env.stages == ("connect", "helo", "mail_from", "rcpt")
    attrs = session.notes.get(POLICY_ATTRIBUTES)
    assert attrs is not None
    assert attrs["reverse_client_name"] == "unknown"


def test_ipv6_tls_sasl_and_a_queue_id() -> None:
    env = request_to_envelope(
        {
            "protocol_state": "END-OF-MESSAGE",
            "client_address": "2001:db8::1",
            "client_name": "mx.example",
            "encryption_protocol": "TLSv1.3",
            "sasl_username": "alice",
            "queue_id": "4F2A81C3D",
            "size": "12345",
            "sender": "",
            "recipient_count": "2",
        }
    )
    assert env.session.peer.address == "2001:db8::1"
    assert env.session.peer.describe() == "mx.example[2001:db8::1]"
    assert env.session.tls
    assert env.transaction.queue_id == "4F2A81C3D"
    assert env.transaction.size == 12345
    assert env.transaction.sender == ""  # the null sender
    assert env.recipient is None  # two recipients: Postfix sends none
    assert env.stages == ("connect", "mail_from")  # no HELO was given


@pytest.mark.parametrize(
    ("attrs", "stages"),
    [
        ({"protocol_state": "CONNECT"}, ("connect",)),
        ({"protocol_state": "EHLO", "helo_name": "h"}, ("connect", "helo")),
        ({"protocol_state": "HELO", "helo_name": "h"}, ("connect", "helo")),
        ({"protocol_state": "MAIL", "helo_name": "h"}, ("connect", "helo", "mail_from")),
        ({"protocol_state": "RCPT", "recipient": "r@x"}, ("connect", "mail_from", "rcpt")),
        ({"protocol_state": "RCPT"}, ("connect", "mail_from")),  # no recipient: no on_rcpt
        ({"protocol_state": "DATA", "recipient": "r@x"}, ("connect", "mail_from", "rcpt")),
        ({"protocol_state": "DATA"}, ("connect", "mail_from")),
        ({"protocol_state": "VRFY", "recipient": "r@x", "helo_name": "h"}, ("connect", "helo")),
        ({"protocol_state": "ETRN", "helo_name": "h"}, ("connect", "helo")),
        ({"protocol_state": "SOMETHING-NEW", "helo_name": "h"}, ("connect", "helo")),
        ({}, ("connect",)),
    ],
)
def test_stages_per_protocol_state(attrs: Mapping[str, str], stages: tuple[str, ...]) -> None:
    assert request_to_envelope(attrs).stages == stages


def test_missing_attributes_are_unknown_or_empty() -> None:
    env = request_to_envelope({"client_port": "not-a-number", "size": "-1"})
    assert env.session.peer.address == "unknown"
    assert env.session.peer.name == "unknown"
    assert env.session.peer.port is None
    assert env.session.peer.protocol == "SMTP"
    assert env.transaction.size == 0


def test_message_key_only_once_postfix_has_a_current_instance() -> None:
    assert message_key(RCPT_ATTRS) == (
        "3381.6b059f4c.d609f.0",
        "127.0.0.1",
        "44120",
        "alice@example.com",
    )
    for state in ("DATA", "END-OF-MESSAGE"):
        assert message_key({**RCPT_ATTRS, "protocol_state": state}) == message_key(RCPT_ATTRS)
    # Before MAIL FROM succeeds Postfix still sends the previous message's instance.
    for state in ("CONNECT", "EHLO", "HELO", "MAIL", "VRFY", "ETRN"):
        assert message_key({**RCPT_ATTRS, "protocol_state": state}) is None
    assert message_key({**RCPT_ATTRS, "instance": ""}) is None


def test_prepend_only_where_postfix_honours_it() -> None:
    assert [s for s in ("CONNECT", "EHLO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY")
            if prepend_allowed(s)] == ["RCPT", "DATA"]  # fmt: skip


# -------------------------------------------------------------------------- action rendering
SPF_HEADER = AddHeader("Received-SPF", "Pass (mailfrom) identity=mailfrom")


def test_continue_is_dunno_and_accept_is_dunno_unless_opted_in() -> None:
    assert render_action(Outcome(Continue())) == "DUNNO"
    assert render_action(Outcome(Accept(final=True))) == "DUNNO"
    assert render_action(Outcome(Accept(final=True)), accept_as_ok=True) == "OK"


def test_reject_and_tempfail_keep_their_exact_code_in_numeric_form() -> None:
    reject = Reject(Reply(550, "5.7.23", "SPF validation failed"))
    assert render_action(Outcome(reject)) == "550 5.7.23 SPF validation failed"
    tempfail = TempFail(Reply(451, "4.4.5", "Error: message check timed out, try again later"))
    assert (
        render_action(Outcome(tempfail))
        == "451 4.4.5 Error: message check timed out, try again later"
    )
    assert render_action(Outcome(TempFail(Reply(421, "4.7.0", "go away")))) == "421 4.7.0 go away"


def test_a_numeric_action_is_never_bare_digits() -> None:
    assert render_action(Outcome(Reject(Reply(554, "", "")))) == "554 Access denied"
    assert render_action(Outcome(Reject(Reply(554, "5.7.1", "")))) == "554 5.7.1"


def test_multi_line_reply_text_becomes_one_line() -> None:
    reply = Reply(550, "5.7.1", "first line\nsecond line\n")
    assert render_action(Outcome(Reject(reply))) == "550 5.7.1 first line second line"
    assert render_action(Outcome(Discard("a\tb\x01c\nd"))) == "DISCARD a\tb c d"


def test_discard_and_quarantine() -> None:
    assert render_action(Outcome(Discard("spam trap"))) == "DISCARD spam trap"
    assert render_action(Outcome(Discard(""))) == "DISCARD"
    assert render_action(Outcome(Quarantine("virus suspected"))) == "HOLD virus suspected"
    assert render_action(Outcome(Quarantine(""))) == "HOLD"


def test_first_add_header_is_prepended_and_the_rest_reported() -> None:
    second = AddHeader("X-Second", "2")
    other = RemoveHeader("X-Old")
    plan = plan_action(Outcome(Continue(), edits=(other, SPF_HEADER, second)))
    assert plan.action == "PREPEND Received-SPF: Pass (mailfrom) identity=mailfrom"
    assert plan.header == SPF_HEADER
    assert plan.dropped == (other, second)


def test_accept_with_a_header_prepends_it_unless_ok_is_wanted() -> None:
    outcome = Outcome(Accept(edits=(SPF_HEADER,), final=True), edits=(SPF_HEADER,))
    assert render_action(outcome).startswith("PREPEND Received-SPF: ")
    plan = plan_action(outcome, accept_as_ok=True)
    assert (plan.action, plan.dropped) == ("OK", (SPF_HEADER,))


def test_a_header_already_prepended_for_the_message_is_not_sent_again() -> None:
    x = AddHeader("X-Filtered", "yes")
    outcome = Outcome(Continue(), edits=(x, SPF_HEADER))
    plan = plan_action(outcome, already_prepended={header_key(x)})
    assert plan.header == SPF_HEADER
    assert plan.dropped == ()
    assert header_key(AddHeader("x-filtered", "yes")) == header_key(x)
    both = {header_key(x), header_key(SPF_HEADER)}
    assert plan_action(outcome, already_prepended=both) == plan_action(Outcome(Continue()))


def test_no_prepend_where_postfix_ignores_it() -> None:
    plan = plan_action(Outcome(Continue(), edits=(SPF_HEADER,)), prepend=False)
    assert (plan.action, plan.dropped) == ("DUNNO", (SPF_HEADER,))


def test_folded_header_is_unfolded_into_one_line() -> None:
    header = AddHeader("Authentication-Results", "mx.example;\n\tspf=pass smtp.mailfrom=a@b")
    assert render_action(Outcome(Continue(), edits=(header,))) == (
        "PREPEND Authentication-Results: mx.example;\tspf=pass smtp.mailfrom=a@b"
    )


def test_refusals_drop_edits_and_other_edits_are_never_rendered() -> None:
    change = ChangeHeader("Subject", "x")
    plan = plan_action(Outcome(Reject(Reply(550, "5.7.1", "no")), edits=(SPF_HEADER,)))
    assert (plan.action, plan.dropped) == ("550 5.7.1 no", (SPF_HEADER,))
    plan = plan_action(Outcome(Continue(), edits=(change,)))
    assert (plan.action, plan.dropped) == ("DUNNO", (change,))


class LineByLine(PolicyServer):
    """The codec without its one-pass path for whole requests."""

    def _take_whole_request(self) -> PolicyRequest | None:
        return None


def outcome(server: PolicyServer, chunks: list[bytes]) -> tuple[list[PolicyEvent], str | None]:
    events: list[PolicyEvent] = []
    try:
        for chunk in [*chunks, b""]:
            server.receive_data(chunk)
            while (event := server.next_event()) is not NEED_DATA:
                assert isinstance(event, PolicyRequest | ConnectionClosed)
                events.append(event)
                if isinstance(event, ConnectionClosed):
                    return events, None
                server.send("DUNNO")
    except RemoteProtocolError as exc:
        return events, str(exc)
    return events, None


odd_lines = st.one_of(
    st.integers(min_value=0, max_value=90).map(lambda n: b"long=" + b"v" * n),
    st.sampled_from(
        [
            b"request=smtpd_access_policy",
            b"request=other",
            b"a=1",
            b"a=2",
            b"b=x=y",
            b"c=\xff\xfe",
            b"d=\r",
            b"e=1\r",
            b"\r",
            b"",
            b"Bad=1",
            b"_=underscore",
            b"9=digit",
            b"no_equals",
            b"f=\x00",
            b"g=" + b"v" * 40,
            b"=empty_name",
        ]
    ),
)


@settings(max_examples=600)
@given(
    lines=st.lists(odd_lines, max_size=24),
    max_line=st.integers(min_value=8, max_value=80),
    max_attributes=st.integers(min_value=1, max_value=10),
    max_request_size=st.integers(min_value=8, max_value=200),
    chunk=st.integers(min_value=1, max_value=400),
)
def test_the_one_pass_path_parses_exactly_like_the_line_by_line_path(
    lines: list[bytes], max_line: int, max_attributes: int, max_request_size: int, chunk: int
) -> None:
    """Same input, same chunks, same limits: the same events and the same error."""
    # Mostly requests (the request line first, an empty line last): the fast path's ground.
    data = b"".join(line + b"\n" for line in [b"request=smtpd_access_policy", *lines, b""])
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    limits = PolicyLimits(max_line, max_attributes, max_request_size)
    assert outcome(PolicyServer(limits), chunks) == outcome(LineByLine(limits), chunks)


def test_a_redirect_is_the_action_redirect() -> None:
    moved = Redirect("boss@example.net")
    plan = plan_action(Outcome(Continue(), edits=(SPF_HEADER, Redirect("x@example.net"), moved)))
    assert plan.action == "REDIRECT boss@example.net"  # the last wins
    assert plan.dropped == (SPF_HEADER, Redirect("x@example.net"))  # one action per answer
    assert render_action(Outcome(Accept(final=True), edits=(moved,)), accept_as_ok=True) == (
        "REDIRECT boss@example.net"
    )
    refusal = Reply(554, "5.7.1", "no")
    assert render_action(Outcome(Reject(refusal), edits=(moved,))) == "554 5.7.1 no"
    assert render_action(Outcome(Quarantine("look"), edits=(moved,))) == "HOLD look"


@pytest.mark.parametrize(
    "lines",
    [
        [b"a=b=c", b"d"],  # as many "=" as lines, but not one per line
        [b"d", b"a=b=c"],
        [b"sender=x=recipient", b"size"],  # the misaligned pieces would be known names
    ],
)
def test_a_line_without_equals_is_an_error_whatever_the_other_lines_hold(
    lines: list[bytes],
) -> None:
    """The one-pass path counts on one "=" per line: two on one line and none on another must
    not pair the wrong pieces."""
    data = b"".join(line + b"\n" for line in [b"request=smtpd_access_policy", *lines, b""])
    for server in (PolicyServer(), LineByLine()):
        server.receive_data(data)
        with pytest.raises(RemoteProtocolError, match="without '='"):
            server.next_event()


def test_only_valid_names_are_remembered_and_a_bad_one_is_refused_each_time() -> None:
    for _ in range(2):
        server = PolicyServer()
        server.receive_data(b"request=smtpd_access_policy\nx_new_9=1\nBad_name=2\n\n")
        with pytest.raises(RemoteProtocolError, match="bad attribute name"):
            server.next_event()
    server = PolicyServer()
    server.receive_data(b"request=smtpd_access_policy\nx_new_9=1\n\n")
    event = server.next_event()
    assert isinstance(event, PolicyRequest)
    assert dict(event.attributes) == {"request": "smtpd_access_policy", "x_new_9": "1"}
