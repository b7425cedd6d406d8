"""``cidr:`` answers as ``postmap -q`` does: generated prefixes of every length (IPv4, IPv6,
``[]``, ``!``, nested ``if``/``endif``), keys at and around every edge in several spellings,
the inline form; and a rule Postfix would skip is an error naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.sdk.tables import TableError, open_table
from tests.integration.tables.file_data import cidr_rules, lookup_all, write_cold
from tests.support.postmap import Postmap


def test_cidr_generated(postmap: Postmap, tmp_path: Path) -> None:
    text, keys = cidr_rules()
    path = write_cold(tmp_path / "clients.cidr", text)
    assert len(keys) > 2000
    expected = postmap.query_many(keys, f"cidr:{path}")
    got = lookup_all(open_table(f"cidr:{path}"), keys)
    assert got == expected
    # The data reaches every kind of answer: rules, nested blocks, a negated rule.
    values = set(expected.values())
    assert any(v.startswith("nested-") for v in values)
    assert any(v.startswith("in-block-") for v in values)
    assert any(v.startswith("result-") for v in values)
    assert len(values) > 100


def test_cidr_keys_are_not_folded_or_stripped(postmap: Postmap, tmp_path: Path) -> None:
    path = write_cold(
        tmp_path / "t.cidr", "2001:DB8::/32 upper\n[192.0.2.1] bracketed\n0.0.0.0/0 any4\n"
    )
    keys = ["2001:db8::1", "2001:DB8:0:0::1", "[192.0.2.1]", "192.0.2.1", "192.000.2.1", "::"]
    expected = postmap.query_many(keys, f"cidr:{path}")
    assert lookup_all(open_table(f"cidr:{path}"), keys) == expected
    assert open_table(f"cidr:{path}").fixed_string is False


def test_cidr_inline(postmap: Postmap) -> None:
    table = (
        "cidr:{ {192.0.2.0/24 net}, {!10.0.0.0/8 not-ten}, {if 2001:db8::/32}, "
        "{2001:db8::1 one}, {endif} }"
    )
    keys = ["192.0.2.7", "10.1.1.1", "11.1.1.1", "2001:db8::1", "2001:db8::2", "::1"]
    expected = postmap.query_many(keys, table)
    assert lookup_all(open_table(table), keys) == expected
    assert expected


@pytest.mark.parametrize(
    ("rules", "line", "message"),
    [
        ("1.2.3.4 ok\n1.2.3.0/23 bad\n", 2, 'perhaps you should use "1.2.2.0/23" instead'),
        ("010.1.2.3 octal\n", 1, 'bad address pattern: "010.1.2.3"'),
        ("1.2.3.0/33 x\n", 1, "bad mask length"),
        ("1.2.3.0/x x\n", 1, "bad mask value"),
        ("::g/64 x\n", 1, "bad network value"),
        ("1.2.3.4\n", 1, "no lookup result"),
        ("[1.2.3.4 x\n", 1, "missing ']'"),
        ("[1.2.3.4]x y\n", 1, "garbage after"),
        ("endif\n", 1, "ENDIF without IF"),
        ("if 1.2.3.0/24\n1.2.3.4 x\nendif x\n", 3, "garbage after ENDIF"),
        ("1.1.1.1 a\nif 1.2.3.0/24\n1.2.3.4 x\n", 2, "IF has no matching ENDIF"),
        ("if\n", 1, "no address pattern"),
    ],
)
def test_cidr_errors_name_file_and_line(
    postmap: Postmap, tmp_path: Path, rules: str, line: int, message: str
) -> None:
    path = write_cold(tmp_path / "bad.cidr", rules)
    # Postfix warns and skips the rule; filterd refuses the table with the same reason.
    proc = postmap.run("-q", "1.2.3.4", f"cidr:{path}")
    assert message.split('"')[0].strip() in proc.stderr.decode(), proc.stderr
    with pytest.raises(TableError) as raised:
        open_table(f"cidr:{path}")
    assert message in str(raised.value)
    assert raised.value.file == str(path)
    assert raised.value.line == line
    assert raised.value.hint
