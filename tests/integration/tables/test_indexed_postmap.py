"""``lmdb:``, ``cdb:``, ``hash:`` and ``btree:`` read the files ``postmap`` built and answer as
``postmap -q`` does: keys stored with the trailing NUL (``-N``) and without (``-n``), folded
and not (``-f``); a missing file is an error in postmap's words."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.sdk.tables import TableError, TableSettings, open_table
from filterd.sdk.tables.indexed import IndexedTable
from tests.integration.tables.file_data import (
    lookup_all,
    postmap_answers,
    query_keys,
    source_entries,
    source_text,
    write_cold,
)
from tests.support.postmap import Postmap

TYPES = ["lmdb", "cdb", "hash", "btree"]
SUFFIX = {"lmdb": ".lmdb", "cdb": ".cdb", "hash": ".db", "btree": ".db"}


@pytest.fixture(scope="module")
def data() -> tuple[str, list[str]]:
    entries = source_entries()
    # UTF-8 keys (folded as Unicode by postmap and filterd alike) and a value with spaces
    entries += [("Straße@Example.DE", "street"), ("ÄRGER", "umlaut value"), ("x y", "z")]
    keys = [*query_keys(entries), "strasse@example.de", "STRASSE@EXAMPLE.DE", "ärger"]
    return source_text(entries), keys


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("nul", ["", "-N", "-n"])
def test_indexed_generated(
    postmap: Postmap, tmp_path: Path, data: tuple[str, list[str]], kind: str, nul: str
) -> None:
    text, keys = data
    source = write_cold(tmp_path / "access", text)
    table = f"{kind}:{source}"
    proc = postmap.run(*([nul] if nul else []), table)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / f"access{SUFFIX[kind]}").exists()
    expected = postmap.query_many(keys, table)
    assert len(expected) > 1000
    opened = open_table(table)
    assert lookup_all(opened, keys) == expected
    assert isinstance(opened, IndexedTable)
    # the reader settled on the form postmap wrote
    with_nul = nul == "-N" or (not nul and kind != "cdb")
    assert (opened._with_nul, opened._without_nul) == (with_nul, not with_nul)


@pytest.mark.parametrize("kind", ["lmdb", "cdb"])
def test_indexed_without_folding(
    postmap: Postmap, tmp_path: Path, data: tuple[str, list[str]], kind: str
) -> None:
    """``postmap -f``: keys stored as written and looked up as given."""
    text, keys = data
    source = write_cold(tmp_path / "access", text)
    table = f"{kind}:{source}"
    assert postmap.run("-f", table).returncode == 0
    expected = postmap_answers(postmap, keys, table, fold=False)
    got = lookup_all(open_table(table, TableSettings(fold_case=False)), keys)
    assert got == expected
    assert any(k != k.lower() for k in got)


@pytest.mark.parametrize("kind", TYPES)
def test_missing_file(postmap: Postmap, tmp_path: Path, kind: str) -> None:
    table = f"{kind}:{tmp_path / 'nonexistent'}"
    path = f"{tmp_path / 'nonexistent'}{SUFFIX[kind]}"
    status, _, err = postmap.query("x", table)
    assert status == 1
    assert f"open database {path}: No such file or directory" in err
    with pytest.raises(TableError) as raised:
        open_table(table)
    assert f"open database {path}: No such file or directory" in str(raised.value)
    assert f"postmap {table}" in raised.value.hint


def test_hash_without_the_binding_names_the_alternatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "berkeleydb", None)  # import fails as if not installed
    with pytest.raises(TableError) as raised:
        open_table(f"hash:{tmp_path / 'access'}")
    message = str(raised.value)
    assert "texthash:" in message
    assert "lmdb:" in message
    assert "pip install 'filterd[hash]'" in message
