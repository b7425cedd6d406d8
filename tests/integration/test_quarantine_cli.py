"""``filterd quarantine`` on messages the real SMTP door quarantined (header_checks HOLD), released
to a real next hop over loopback, and the server's own expiry."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.integration.test_relay import connect, running, send_message
from tests.support.nexthop import ScriptedNextHop

SENT = (
    b"From: alice@example.com\r\nTo: bob@x.example\r\nSubject: hold me\r\n\r\n"
    b"..a line that starts with a dot\r\n\xe4 8-bit text\r\nlast line\r\n"
)


def config_text(tmp: Path, hop_port: int, *, next_proto: str = "smtp", extra: str = "") -> str:
    return f"""
[[listen]]
address = "127.0.0.1:0"
hostname = "filterd.test"
[limits]
command_timeout = "20s"
shutdown_grace = "1s"
[delivery]
method = "relay"
next_hop = "127.0.0.1:{hop_port}"
protocol = "{next_proto}"
command_timeout = "10s"
data_timeout = "10s"
connect_timeout = "5s"
[quarantine]
root = "{tmp / "quarantine"}"
{extra}
[[chain]]
plugin = "header_checks"
[chain.config]
rules = ['/^Subject: hold/ HOLD held for review']
"""


class Cli:
    """``python -m filterd quarantine ...`` with the test's configuration file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.stdout = b""
        self.stderr = ""

    async def __call__(self, *args: str) -> int:
        done = await trio.run_process(
            [sys.executable, "-m", "filterd", "quarantine", "-c", str(self.config), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        self.stdout, self.stderr = done.stdout, done.stderr.decode()
        return done.returncode

    @property
    def text(self) -> str:
        return self.stdout.decode()

    async def listing(self) -> list[dict[str, object]]:
        assert await self("list", "--json") == 0, self.stderr
        listed: list[dict[str, object]] = json.loads(self.stdout)
        return listed


@asynccontextmanager
async def quarantining(
    tmp: Path, hop: ScriptedNextHop, *, next_proto: str = "smtp", extra: str = ""
) -> AsyncIterator[tuple[int, Cli]]:
    """The next hop and filterd serving (in-process); the port and the command line."""
    async with trio.open_nursery() as nursery:
        hop_port = await nursery.start(hop.serve)
        text = config_text(tmp, hop_port, next_proto=next_proto, extra=extra)
        path = tmp / "filterd.toml"
        path.write_text(text)
        async with running(text) as port:
            yield port, Cli(path)
        nursery.cancel_scope.cancel()


async def hold(port: int, rcpts: list[str], body: bytes = SENT) -> None:
    client = await connect(port)
    answers = await send_message(client, rcpts, body)
    assert answers[-1].startswith("250 2.0.0 Ok: queued as "), answers
    await client.send_lines("QUIT")


async def test_release_hands_on_the_stored_message_byte_for_byte(tmp_path: Path) -> None:
    hop = ScriptedNextHop()
    async with quarantining(tmp_path, hop) as (port, cli):
        await hold(port, ["bob@x.example", "carol@x.example"])
        assert hop.messages == []  # held, not relayed
        (listed,) = await cli.listing()
        assert listed["from"] == "alice@example.com"
        assert listed["to"] == ["bob@x.example", "carol@x.example"]
        assert listed["reason"] == "held for review"
        assert listed["plugin"] == "header_checks"
        assert listed["client"] == {
            "address": "127.0.0.1",
            "name": "unknown",
            "helo": "client.example",
            "protocol": "ESMTP",
        }
        ident = str(listed["id"])
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", ident)

        assert await cli("list", "-c", str(cli.config)) == 0  # -c after the action too
        table = cli.text.splitlines()
        assert table[0].split() == ["ID", "TIME", "SIZE", "FROM", "TO", "REASON"]
        assert ident in table[1]
        assert "<alice@example.com>  <bob@x.example> +1  held for review" in table[1]

        assert await cli("show", ident, "--raw") == 0
        stored = cli.stdout
        assert stored.startswith(b"Received: from ")  # filterd's trace header, then the message
        assert stored.endswith(SENT.replace(b"\r\n..", b"\r\n."))  # as unstuffed by the door
        assert listed["size"] == len(stored)

        assert await cli("show", ident) == 0
        assert "reason:   held for review\n" in cli.text
        assert "plugin:   header_checks\n" in cli.text
        assert "to:       <bob@x.example>, <carol@x.example>\n" in cli.text
        assert "\nSubject: hold me\n" in cli.text

        assert await cli("release", ident) == 0, cli.stderr
        assert f"{ident}: released" in cli.text
        assert hop.messages == [stored]
        assert hop.envelopes == [("alice@example.com", ["bob@x.example", "carol@x.example"])]
        assert re.search(
            rf"filterd/quarantine\[\d+\]: [0-9A-F]{{10}}: released from quarantine, id={ident}, "
            r"from=<alice@example.com>, nrcpt=2, to=<bob@x.example>,<carol@x.example>",
            cli.stderr,
        ), cli.stderr
        assert re.search(
            r"to=<carol@x.example>, relay=127.0.0.1\[127.0.0.1\]:\d+, .*status=sent", cli.stderr
        )
        assert await cli.listing() == []

        assert await cli("release", ident) == 1  # once only
        assert f"no message {ident} in the quarantine" in cli.stderr


async def test_release_to_another_address_and_a_refusal_that_keeps_the_message(
    tmp_path: Path,
) -> None:
    hop = ScriptedNextHop()
    async with quarantining(tmp_path, hop) as (port, cli):
        await hold(port, ["bob@x.example"])
        (listed,) = await cli.listing()
        ident = str(listed["id"])

        assert await cli("release", ident, "--to", "refuse@x.example") == 1
        assert "to=<refuse@x.example>: 550 5.1.1 <refuse@x.example>: unknown user" in cli.stderr
        assert f"{ident}: kept in the quarantine for <refuse@x.example>" in cli.stderr
        assert "release failed, kept in quarantine" in cli.stderr
        assert hop.messages == []
        assert [m["id"] for m in await cli.listing()] == [ident]

        assert await cli("release", ident, "--to", "not an address") == 2
        assert "is not a mail address" in cli.stderr

        assert await cli("release", ident, "--to", "<postmaster@x.example>") == 0, cli.stderr
        assert hop.envelopes == [("alice@example.com", ["postmaster@x.example"])]
        assert await cli.listing() == []


async def test_a_partial_release_keeps_the_message_for_the_others(tmp_path: Path) -> None:
    hop = ScriptedNextHop(lmtp=True)  # lmtp-defer...: 451 after the final dot
    async with quarantining(tmp_path, hop, next_proto="lmtp") as (port, cli):
        await hold(port, ["bob@x.example", "lmtp-defer@x.example"])
        (listed,) = await cli.listing()
        ident = str(listed["id"])

        assert await cli("release", ident) == 75  # try again later
        assert "to=<bob@x.example>: 250 2.0.0" in cli.text
        assert "to=<lmtp-defer@x.example>: 451 4.2.0 mailbox busy" in cli.stderr
        assert "released from quarantine to 1 of 2 recipients" in cli.stderr
        (kept,) = await cli.listing()
        assert (kept["id"], kept["to"], kept["reason"]) == (
            ident,
            ["lmtp-defer@x.example"],
            "held for review",
        )
        assert await cli("show", ident, "--raw") == 0
        assert hop.messages == [cli.stdout]  # the same message is kept

        assert await cli("release", ident) == 75  # bob does not get it twice
        assert [rcpts for _, rcpts in hop.envelopes] == [
            ["bob@x.example", "lmtp-defer@x.example"],
            ["lmtp-defer@x.example"],
        ]


async def test_delete_and_ids_that_name_nothing(tmp_path: Path) -> None:
    hop = ScriptedNextHop()
    async with quarantining(tmp_path, hop) as (port, cli):
        await hold(port, ["bob@x.example"])
        await hold(port, ["carol@x.example"])
        first, second = (str(m["id"]) for m in await cli.listing())
        outside = tmp_path / "outside"
        outside.write_text("not mail")

        for bad in ("../outside", str(outside), "", ".", "..", "a b", "x\n", "new/x"):
            for action in ("show", "release", "delete"):
                assert await cli(action, "--", bad) == 2, (action, bad)
                assert "not a quarantine ID: '" in cli.stderr, cli.stderr
        assert await cli("delete", "../outside") == 2
        assert "not a quarantine ID: '../outside'" in cli.stderr
        for unknown in ("new", "cur", "tmp", "outside", "-"):  # names, but of no message
            assert await cli("delete", unknown) == 1
            assert f"no message {unknown} in the quarantine" in cli.stderr
        assert await cli("release", first[:-1]) == 1  # a prefix is not an ID
        assert outside.read_text() == "not mail"
        assert len(await cli.listing()) == 2

        assert await cli("delete", first, "no-such-id") == 1
        assert f"{first}: deleted" in cli.text
        assert "no message no-such-id in the quarantine" in cli.stderr
        assert re.search(rf": removed from quarantine, id={first}, from=<alice@example.com>",
                         cli.stderr)  # fmt: skip
        assert [m["id"] for m in await cli.listing()] == [second]
        assert hop.messages == []


def age_record(path: Path, when: str) -> None:
    """Make a quarantine file's record say it was quarantined at ``when``."""
    data = path.read_bytes()
    aged = re.sub(rb'"time": "[^"]*"', f'"time": "{when}"'.encode(), data, count=1)
    assert aged != data
    path.write_bytes(aged)


async def test_expire_removes_what_is_older_than_max_age(tmp_path: Path) -> None:
    hop = ScriptedNextHop()
    async with quarantining(tmp_path, hop) as (port, cli):
        await hold(port, ["old@x.example"])
        await hold(port, ["new@x.example"])
        files = {m["to"][0]: Path(str(m["file"])) for m in await cli.listing()}  # type: ignore[index]
        age_record(files["old@x.example"], "2001-01-01T00:00:00+00:00")

        assert await cli("expire") == 2  # no max_age configured
        assert "no max_age in the [quarantine] table" in cli.stderr
        assert await cli("expire", "--max-age", "soon") == 2
        assert await cli("expire", "--max-age", "4w") == 0
        assert "1 expired (older than 28d)" in cli.text
        assert "expired from quarantine" in cli.stderr
        assert [m["to"] for m in await cli.listing()] == [["new@x.example"]]


async def gone(path: Path) -> None:
    """Return once ``path`` no longer exists (the server's expiry, on a thread, removes it)."""
    for _ in iter(path.exists, False):
        await trio.sleep(0.05)


async def test_the_server_expires_on_its_own(tmp_path: Path) -> None:
    hop = ScriptedNextHop()
    async with quarantining(tmp_path, hop) as (port, cli):
        await hold(port, ["old@x.example"])
        (listed,) = await cli.listing()
    held = Path(str(listed["file"]))
    age_record(held, "2001-01-01T00:00:00+00:00")
    async with quarantining(tmp_path, hop, extra='max_age = "1h"') as (port, cli):
        await hold(port, ["new@x.example"])
        with trio.fail_after(30):
            await gone(held)
        assert [m["to"] for m in await cli.listing()] == [["new@x.example"]]
