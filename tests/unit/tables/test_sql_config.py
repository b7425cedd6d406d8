"""Reading sqlite_table(5)/mysql_table(5)/pgsql_table(5) files (main.cf syntax) and Postfix's
% expansions, without a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.sdk.tables import TableError, open_table
from filterd.sdk.tables.names import TableName
from filterd.sdk.tables.sql_config import SqlHost, parse_cf_text, parse_sql_config


def _config(kind: str, text: str) -> object:
    return parse_sql_config(TableName(kind, "/etc/postfix/t.cf"), text)


def test_main_cf_syntax() -> None:
    text = (
        "# comment\n"
        "query = SELECT a\n"
        "    FROM t\n"
        "# a comment inside the continued line\n"
        "\tWHERE k='%s'\n"
        "\n"
        "user=me\n"
        "user = again\n"
        "  \n"
    )
    settings = parse_cf_text(text, "t.cf", "mysql:t.cf")
    assert settings == {
        "query": ("SELECT a    FROM t\tWHERE k='%s'", 2),
        "user": ("again", 8),
    }


def test_a_line_without_equals_names_file_and_line() -> None:
    with pytest.raises(TableError) as caught:
        parse_cf_text(
            "dbname = x\nquery SELECT 1\n", "/etc/postfix/t.cf", "mysql:/etc/postfix/t.cf"
        )
    assert str(caught.value).startswith("table mysql:/etc/postfix/t.cf: /etc/postfix/t.cf:2: ")
    assert "missing '=' after attribute name" in str(caught.value)


EXPANSIONS = "query = SELECT '%u|%d|%1|%2|%3|%%|%S|%U|%D|%s'\ndbpath = x\n"


@pytest.mark.parametrize(
    ("key", "query"),
    [
        ("user@mail.example.com", "SELECT 'user|mail.example.com|com|example|mail|%|"
         "user@mail.example.com|user|mail.example.com|user@mail.example.com'"),
        ("user@example.com", None),  # too few labels for %3
        ("example.com", None),  # no domain for %d
        ("@mail.example.com", None),  # empty localpart for %u
        ("u@a..b.c", "SELECT 'u|a..b.c|c|b|a|%|u@a..b.c|u|a..b.c|u@a..b.c'"),
    ],
)  # fmt: skip
def test_query_expansion(key: str, query: str | None) -> None:
    config = parse_sql_config(TableName("sqlite", "/t.cf"), EXPANSIONS)
    assert config.expand_query(key, None) == query


def test_quoting_and_result_format() -> None:
    config = parse_sql_config(
        TableName("sqlite", "/t.cf"),
        "dbpath = x\nquery = SELECT v FROM t WHERE k='%s'\nresult_format = %u at %d via %D\n",
    )
    assert config.expand_query("o'b@x.org", lambda t: t.replace("'", "''")) == (
        "SELECT v FROM t WHERE k='o''b@x.org'"
    )
    assert config.expand_result("a@b", "k@x.org") == "a at b via x.org"
    assert config.expand_result("nodomain", "k@x.org") is None
    assert config.expand_result("", "k@x.org") is None
    assert config.expand_result(None, "k@x.org") is None


def test_legacy_form_and_select_function() -> None:
    legacy = parse_sql_config(
        TableName("mysql", "/t.cf"),
        "dbname = d\nselect_field = a\ntable = t\nwhere_field = k\nadditional_conditions = AND x\n",
    )
    assert legacy.query.text == "SELECT a FROM t WHERE k='%s' AND x"
    function = parse_sql_config(TableName("pgsql", "/t.cf"), "dbname = d\nselect_function = f\n")
    assert function.query.text == "SELECT f('%s')"


def test_hosts() -> None:
    config = parse_sql_config(
        TableName("mysql", "/t.cf"),
        "dbname = d\nquery = q\nhosts = unix:/run/m.sock, inet:db:3307 localhost 10.0.0.1\n",
    )
    assert config.hosts == (
        SqlHost("unix:/run/m.sock", "unix", "/run/m.sock", None),
        SqlHost("inet:db:3307", "inet", "db", "3307"),
        SqlHost("localhost", "unix", "", None),
        SqlHost("10.0.0.1", "inet", "10.0.0.1", None),
    )
    pg = parse_sql_config(
        TableName("pgsql", "/t.cf"),
        "dbname = d\nquery = q\nhosts = postgresql://u@h/db unix:/run/pg inet:h:5433\n",
    )
    assert [h.kind for h in pg.hosts] == ["uri", "unix", "inet"]
    assert pg.hosts[2].port == "5433"


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("mysql", "dbname = d\nquery = q\ntls_CAfile = /ca\n", "tls_CAfile is not supported"),
        ("mysql", "query = q\n", "dbname must not be empty"),
        ("sqlite", "query = q\n", "dbpath must not be empty"),
        ("sqlite", "dbpath = x\ntable = t\n", "neither query nor select_field is set"),
        ("sqlite", "dbpath = x\nquery = SELECT '%x'\n", "invalid query template"),
        ("sqlite", "dbpath = x\nquery = q\nresult_format = %\n", "invalid result template"),
        ("sqlite", "dbpath = x\nquery = q\nexpansion_limit = many\n", "bad number"),
        ("mysql", "dbname = d\nquery = q\nrequire_result_set = maybe\n", "bad boolean"),
    ],
)
def test_refused_files_name_the_parameter(kind: str, text: str, message: str) -> None:
    with pytest.raises(TableError, match=message) as caught:
        parse_sql_config(TableName(kind, "/etc/postfix/t.cf"), text)
    assert "/etc/postfix/t.cf" in str(caught.value)
    assert "fix:" in str(caught.value)


def test_domain_list(tmp_path: Path) -> None:
    names = tmp_path / "domains"
    names.write_text("# local\nfrom-file.example other.example\n")
    config = parse_sql_config(
        TableName("sqlite", "/t.cf"),
        f"dbpath = x\nquery = q\ndomain = A.example, !b.example {names} inline:{{c.example=1}}\n",
    )
    assert config.domain is not None
    assert config.domain.patterns == (
        (True, "a.example"),
        (False, "b.example"),
        (True, "from-file.example"),
        (True, "other.example"),
        (True, "inline:{c.example=1}"),
    )
    assert config.domain.tables == ("inline:{c.example=1}",)


def test_obsolete_main_cf_form_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="obsolete form"):
        open_table("mysql:virtual")
    with pytest.raises(TableError, match="cannot read") as caught:
        open_table(f"pgsql:{tmp_path}/none.cf")
    assert "pgsql_table(5)" in str(caught.value)
