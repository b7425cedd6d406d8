"""The differential test's comparison of two Maildir trees (tests/support/maildir_compare.py):
it leaves out exactly the name, the values of the delivery's lines and the receiving server's
Received:, and reports everything else."""

from __future__ import annotations

from pathlib import Path

from tests.support.maildir_compare import snapshot, tree_differences, without_field

TOP = b"Return-Path: <s@example.com>\nX-Original-To: a@example.org\nDelivered-To: a@example.org\n"
BODY = b"Received: from relay.example by old.example; Mon, 1 Jan 2024\nSubject: hi\n\nbody\n"


def deliver(base: Path, name: str, data: bytes, maildir: str = "example.org/a") -> None:
    for sub in ("tmp", "new", "cur"):
        (base / maildir / sub).mkdir(parents=True, exist_ok=True)
    (base / maildir / "new" / name).write_bytes(data)


def trees(tmp_path: Path, postfix: bytes, filterd: bytes) -> list[str]:
    deliver(tmp_path / "p", "1.V1I1M1.mx", postfix)
    deliver(tmp_path / "f", "2.V2I2M2.filterd", filterd)
    return tree_differences(snapshot(tmp_path / "p"), snapshot(tmp_path / "f"))


def test_names_and_each_servers_own_received_are_left_out(tmp_path: Path) -> None:
    postfix = TOP + b"Received: from c by mx.postfix.test (Postfix) id X;\n\tMon\n" + BODY
    filterd = TOP + b"Received: from c by filterd.test (filterd) id Y; Mon\n" + BODY
    assert trees(tmp_path, postfix, filterd) == []


def test_a_different_body_or_delivery_line_is_reported(tmp_path: Path) -> None:
    received = b"Received: from c by x; Mon\n"
    found = trees(tmp_path, TOP + received + BODY, TOP + received + BODY + b"more\n")
    assert len(found) == 1
    assert "content differs" in found[0]
    assert "+more" in found[0]
    other = TOP.replace(b"Delivered-To: a@", b"Delivered-To: b@")
    found = trees(tmp_path / "2", TOP + received + BODY, other + received + BODY)
    assert len(found) == 1
    assert "trace fields" in found[0]


def test_the_received_lines_a_message_arrived_with_are_compared(tmp_path: Path) -> None:
    ours = b"Received: from c by x; Mon\n"
    changed = BODY.replace(b"old.example", b"new.example")
    assert trees(tmp_path, TOP + ours + BODY, TOP + ours + changed) != []


def test_missing_directories_messages_and_leftovers_in_tmp_are_reported(tmp_path: Path) -> None:
    data = TOP + b"Received: from c by x; Mon\n" + BODY
    deliver(tmp_path / "p", "1", data)
    deliver(tmp_path / "p", "2", data, "example.org/b")
    deliver(tmp_path / "f", "1", data)
    (tmp_path / "f" / "example.org" / "a" / "tmp" / "left").write_bytes(data)
    found = tree_differences(snapshot(tmp_path / "p"), snapshot(tmp_path / "f"))
    assert any("left in tmp/" in line for line in found)
    assert any("only postfix has Entry(path='example.org/b'" in line for line in found)
    assert any("a message only postfix delivered" in line for line in found)


def test_a_documented_field_is_taken_out_and_counted(tmp_path: Path) -> None:
    data = TOP + b"Received: from c by x; Mon\nReturn-Path: <>\n" + BODY
    deliver(tmp_path, "1", data)
    tree, removed = without_field(snapshot(tmp_path), "return-path")
    assert removed == 1
    assert tree.messages[0].rest == BODY
