"""The policy codec and its mapping to the model under generated requests (hypothesis).

tests/unit/protocols/test_policy.py covers valid requests cut anywhere, random bytes in
fixed-size chunks and rendered actions. Here: any bytes, cut anywhere, give the same requests
and fail (or not) at the same request as when fed whole, whichever of the codec's two paths
(one pass, line by line) reads them; and whatever attributes a request carries, the mapping to
the model answers with an envelope, never an exception.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filterd.protocols.policy import (
    ConnectionClosed,
    PolicyLimits,
    PolicyRequest,
    PolicyServer,
    RemoteProtocolError,
)
from filterd.protocols.policy_map import STAGE_ORDER, message_key, request_to_envelope
from filterd.protocols.smtp.common import NEED_DATA
from tests.fuzz.chunks import CUTS, cut

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = PolicyLimits(max_line=80, max_attributes=10, max_request_size=300)

NAMES = st.sampled_from(
    ["protocol_state", "protocol_name", "client_address", "client_port", "client_name",
     "helo_name", "sender", "recipient", "queue_id", "size", "instance", "encryption_protocol",
     "request"]
)  # fmt: skip
BAD_NAMES = st.sampled_from(["Bad", "x-y", "", "a b", "é"])
VALUES = st.one_of(
    st.sampled_from(["RCPT", "rcpt", "DATA", "END-OF-MESSAGE", "CONNECT", "", "0", "25",
                     "99999999999999999999", "\u0661\u0662", "²", "-1", "a@b.c", "<>", "TLSv1.3",
                     "x" * 90]),
    st.text(max_size=20),
)  # fmt: skip


@st.composite
def wire(draw: st.DrawFn) -> bytes:
    """Requests as Postfix writes them, one line in ten broken (CRLF, NUL, no '=', a bad
    name, no LF), one request in ten without its request= line."""
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        attrs = draw(st.lists(st.tuples(NAMES, VALUES), max_size=8))
        if draw(st.integers(0, 9)):
            attrs.insert(0, ("request", "smtpd_access_policy"))
        for name, value in attrs:
            line = f"{name}={value}".encode("utf-8", "surrogatepass")
            if draw(st.integers(0, 9)) == 0:
                line = draw(
                    st.sampled_from([line + b"\r", line.replace(b"=", b""), b"\x00" + line,
                                     line[:1], draw(BAD_NAMES).encode() + b"=x"])
                )  # fmt: skip
            out += line + b"\n"
        out += b"\n"
    return out


def events(chunks: list[bytes]) -> list[object]:
    """Requests (each answered), then ConnectionClosed or "error", as one comparable list."""
    server = PolicyServer(LIMITS)
    out: list[object] = []
    try:
        for chunk in [*chunks, b""]:
            server.receive_data(chunk)
            while (event := server.next_event()) is not NEED_DATA:
                out.append(event)
                if isinstance(event, ConnectionClosed):
                    return out
                server.send("DUNNO")
    except RemoteProtocolError:
        out.append("error")
        return out
    raise AssertionError("no ConnectionClosed after EOF")


@FUZZ
@given(st.one_of(wire(), st.binary(max_size=400)), CUTS)
def test_any_bytes_cut_anywhere_give_the_same_requests_and_error(
    data: bytes, cuts: list[int]
) -> None:
    whole = events([data] if data else [])
    assert events(cut(data, cuts)) == whole
    assert events([data[i : i + 1] for i in range(len(data))]) == whole


@FUZZ
@given(st.one_of(wire(), st.binary(max_size=400)))
def test_every_request_maps_to_an_envelope(data: bytes) -> None:
    for request in events([data] if data else []):
        if not isinstance(request, PolicyRequest):
            continue
        attrs = request.attributes
        envelope = request_to_envelope(attrs, session_id="s1")
        stages = envelope.stages
        assert stages
        assert list(stages) == [s for s in STAGE_ORDER if s in stages]
        assert ("rcpt" in stages) == (envelope.recipient is not None)
        assert envelope.transaction.size >= 0
        key = message_key(attrs)
        assert key is None or key[0] == attrs["instance"]
