"""The milter door's mappings under generated input (hypothesis).

tests/unit/protocols/test_milter_map.py checks four edit lists against the SMTP proxy. Here:
any list of header edits on any header section gives, applied by Postfix as modifications,
what the proxy's ``apply_header_edits`` gives; whatever Postfix sends at CONNECT, MAIL and
RCPT maps to the model without an exception; every refusal renders as a valid setreply.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filterd.model.edits import AddHeader, ChangeHeader, Edit, InsertHeader, RemoveHeader
from filterd.model.envelope import Session
from filterd.model.headers import Header, apply_header_edits
from filterd.model.reply import Reply
from filterd.protocols.milter_map import (
    REJECT,
    client_from_connect,
    header_actions,
    recipient_from_rcpt,
    render_refusal,
    transaction_from_mail,
)
from tests.unit.protocols.test_milter_map import _simulate

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAME = st.sampled_from(["To", "to", "X-Spam", "x-spam", "Received", "Subject", "B"])
VALUE = st.text(
    st.characters(exclude_characters="\r\n\x00", exclude_categories=("Cs",)), min_size=1, max_size=8
)
EDIT = st.one_of(
    st.builds(AddHeader, NAME, VALUE, st.booleans()),
    st.builds(InsertHeader, st.integers(-2, 8), NAME, VALUE),
    # A non-empty value: ChangeHeader(name, "") keeps an empty header in the proxy, while the
    # milter protocol has no empty value (Postfix deletes the header); see docs/testing.md.
    st.builds(ChangeHeader, NAME, VALUE, st.integers(1, 3)),
    st.builds(RemoveHeader, NAME, st.integers(0, 3)),
)


@FUZZ
@given(st.lists(NAME, max_size=8), st.lists(EDIT, max_size=10))
def test_modifications_give_what_the_proxy_gives(names: list[str], edits: list[Edit]) -> None:
    headers = [Header.build(n, "orig") for n in names]
    expected = [h.raw for h in apply_header_edits(headers, edits)]
    applied = _simulate(names, header_actions(names, edits))
    assert [Header.build(name, value).raw for name, value in applied] == expected


TEXT = st.text(max_size=30)
MACROS = st.dictionaries(
    st.sampled_from(["{client_addr}", "{client_port}", "{client_name}", "i", "{auth_type}",
                     "{auth_authen}", "{tls_version}", "j", "{daemon_name}"]),
    st.one_of(TEXT, st.sampled_from(["IPv6:::1", "ipv6:", "99999999999", "\u0661", "0", ""])),
)  # fmt: skip
HOSTADDR = st.one_of(
    st.none(),
    TEXT,
    st.tuples(TEXT, st.integers(-1, 70000)),
    st.tuples(TEXT, st.integers(0, 65535), st.integers(), st.integers()),
    st.tuples(TEXT),
    st.tuples(TEXT, TEXT),
)


@FUZZ
@given(TEXT, HOSTADDR, MACROS, TEXT, st.lists(TEXT, max_size=3), MACROS, TEXT)
def test_whatever_postfix_sends_maps_to_the_model(
    hostname: str,
    hostaddr: object,
    macros: dict[str, str],
    mailfrom: str,
    params: list[str],
    mail_macros: dict[str, str],
    rcpt: str,
) -> None:
    client = client_from_connect(hostname, hostaddr, macros)
    assert client.port is None or client.port > 0
    session = Session(id="s", listener="milter", peer=client)
    transaction = transaction_from_mail(session, mailfrom, params, mail_macros)
    assert transaction.mail_params == tuple(params)
    path = rcpt.strip()
    assert recipient_from_rcpt(f" <{path}>", params).address == path


@FUZZ
@given(st.integers(400, 599), st.lists(VALUE, min_size=1, max_size=40))
def test_every_refusal_renders_as_a_setreply(code: int, lines: list[str]) -> None:
    reply = Reply(code, "", "\n".join(lines))
    rendered = render_refusal(REJECT, reply).reply
    assert rendered is not None
    assert rendered.rcode == str(code)
    assert rendered.xcode[0] == str(code)[0]
    assert 1 <= len(rendered.lines) <= 32
    for sent, line in zip(rendered.lines, lines, strict=False):
        assert sent.replace("%%", "%") == line
        assert "%" not in sent.replace("%%", "")
