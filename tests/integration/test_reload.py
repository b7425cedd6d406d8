"""Reload, with filterd's real supervisor in this process over loopback sockets: the
configuration file is read again; a change of the chain (or of a table the chain reads) takes
effect for new sessions and not for those in progress; a configuration with an error, or an
address that cannot be bound, is refused and the one in force stays; a listener whose address
changed is rebound. SIGHUP, worker processes and Postfix: tests/e2e/test_reload_postfix.py."""

from __future__ import annotations

import io
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio
from filterd_example import ExampleTagger

from filterd import maillog
from filterd.cli.main import main as cli_main
from filterd.config.load import load_config
from filterd.frontdoors.shutdown import Shutdown
from filterd.maillog import logger as maillog_logger
from filterd.runtime.reload import Reloader, configuration_status
from filterd.runtime.supervisor import serve
from tests.integration.test_policy_service import PolicyClient
from tests.support.nexthop import ScriptedNextHop
from tests.support.postfix import free_port
from tests.support.session import LineClient

WAIT = 30.0


def config_text(
    port: int, hop: int, tag: str, *, table: Path | None = None, processes: int = 1
) -> str:
    text = f"""
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"
processes = {processes}
[limits]
shutdown_grace = "1s"
[delivery]
method = "relay"
next_hop = "127.0.0.1:{hop}"
[[chain]]
plugin = "example_tagger"
config = {{ text = "{tag}" }}
"""
    if table is not None:
        text += f"""
[[chain]]
plugin = "header_checks"
config = {{ header_checks = ["regexp:{table}"] }}
"""
    return text


@dataclass
class Hooks:
    """Records where each reload starts and ends."""

    calls: list[str] = field(default_factory=list)

    def reload_begins(self) -> None:
        self.calls.append("begins")

    def reload_ends(self, applied: bool) -> None:
        self.calls.append(f"ends applied={applied}")


@dataclass
class Running:
    path: Path
    reloader: Reloader
    hop: ScriptedNextHop
    hooks: Hooks

    async def reload(self, text: str) -> bool:
        self.path.write_text(text)
        return await self.reloader.reload()

    def port(self, index: int = 0) -> int:
        return int(self.reloader.listeners.infos[index].address.rsplit(":", 1)[1])


@pytest.fixture
def log_text(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """filterd's log lines of this test (the main process's)."""
    logger = logging.getLogger("filterd")
    saved = logger.handlers[:], logger.level, logger.propagate
    monkeypatch.setattr(maillog_logger, "_handler", maillog_logger._handler)
    stream = io.StringIO()
    maillog.setup_logging("info", stream)
    yield stream
    logger.handlers[:], level, logger.propagate = saved
    logger.setLevel(level)


@asynccontextmanager
async def running(path: Path, text: Callable[[int], str]) -> AsyncIterator[Running]:
    """filterd serving the configuration file ``path``, written with ``text(next hop's port)``
    (the next hop: ``ScriptedNextHop``)."""
    hop = ScriptedNextHop()
    hooks = Hooks()
    reloader = Reloader(hooks=hooks)  # reads ``path`` again
    stop = Shutdown()
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            path.write_text(text(await nursery.start(hop.serve)))
            async with trio.open_nursery() as serving:
                config = load_config(path)
                await serving.start(partial(serve, config, shutdown=stop, reloader=reloader))
                yield Running(path, reloader, hop, hooks)
                stop.begin()
            nursery.cancel_scope.cancel()  # the next hop


async def connect(port: int) -> LineClient:
    client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
    assert (await client.line()).startswith("220 ")
    await client.send_lines("EHLO client.example")
    await client.reply()
    return client


async def send(client: LineClient, subject: str) -> str:
    """One message; the reply to its final dot."""
    for command in ("MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.org>", "DATA"):
        await client.send_lines(command)
        await client.code()
    await client.send(f"Subject: {subject}\r\n\r\nhi\r\n.\r\n".encode())
    return " ".join(await client.reply())


def tag_of(hop: ScriptedNextHop, subject: str) -> str:
    (message,) = [m for m in hop.messages if f"Subject: {subject}\r\n".encode() in m]
    match = re.search(rb"^X-Example-Tag: (\S+)\r$", message, re.MULTILINE)
    assert match is not None, message
    return match.group(1).decode()


async def test_a_new_chain_serves_new_sessions_and_those_in_progress_keep_theirs(
    tmp_path: Path, log_text: io.StringIO
) -> None:
    port = free_port()
    text = partial(config_text, port)
    async with running(tmp_path / "filterd.toml", partial(text, tag="one")) as server:
        before = await connect(port)
        assert (await send(before, "before 1")).startswith("250 ")
        assert await server.reload(text(server.hop.port, "two"))
        assert (await send(before, "before 2")).startswith("250 ")  # the same session
        after = await connect(port)
        assert (await send(after, "after")).startswith("250 ")
        assert [tag_of(server.hop, s) for s in ("before 1", "before 2", "after")] == [
            "one",
            "one",
            "two",
        ]
        assert server.hooks.calls == ["begins", "ends applied=True"]
        status = configuration_status()
        assert status is not None
        assert (status.generation, status.reloads, status.refused) == (2, 1, 0)
    lines = log_text.getvalue()
    assert f"reloading configuration from {tmp_path / 'filterd.toml'}" in lines
    assert "configuration reloaded (1 listeners, chain: example_tagger)" in lines


async def test_a_configuration_with_an_error_is_refused_and_the_one_in_force_stays(
    tmp_path: Path, log_text: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    path = tmp_path / "filterd.toml"
    async with running(path, partial(config_text, port, tag="one")) as server:
        good = path.read_text()
        loaded = configuration_status()
        assert loaded is not None
        bad = good.replace('text = "one"', 'text = "two", colour = "blue"')
        assert not await server.reload(bad)
        client = await connect(port)
        assert (await send(client, "still")).startswith("250 ")
        assert tag_of(server.hop, "still") == "one"
        assert server.hooks.calls[-2:] == ["begins", "ends applied=False"]
        status = configuration_status()
        assert status is not None
        assert (status.generation, status.reloads, status.refused) == (1, 0, 1)
        assert status.loaded_at == loaded.loaded_at
    assert cli_main(["check-config", "-c", str(path)]) == 2
    (problem,) = capsys.readouterr().err.splitlines()  # what check-config says of the file
    assert re.search(r"filterd\.toml:\d+: chain\[0\]\.config\.colour: unknown key", problem)
    expected = f"reload refused: {problem}; keeping the configuration loaded at "
    assert expected + loaded.loaded_at_text in log_text.getvalue()


async def test_a_table_the_chain_reads_is_read_again(tmp_path: Path) -> None:
    port = free_port()
    table = tmp_path / "header_checks"
    table.write_text("/^Subject: .*spam/ REJECT no spam here\n")
    path = tmp_path / "filterd.toml"
    async with running(path, partial(config_text, port, tag="one", table=table)) as server:
        text = path.read_text()
        client = await connect(port)
        assert (await send(client, "ham")).startswith("250 ")
        assert (await send(client, "spam")).startswith("550 ")
        table.write_text("/^Subject: .*ham/ REJECT no ham either\n")
        assert await server.reload(text)  # the same file: the table is what changed
        client = await connect(port)
        assert (await send(client, "more ham")).startswith("550 5.7.1 no ham either")
        assert (await send(client, "more spam")).startswith("250 ")


async def test_a_listener_whose_address_changed_is_rebound(
    tmp_path: Path, log_text: io.StringIO
) -> None:
    old_port, new_port = free_port(), free_port()
    async with running(
        tmp_path / "filterd.toml", partial(config_text, old_port, tag="one")
    ) as server:
        in_progress = await connect(old_port)
        await in_progress.send_lines("MAIL FROM:<alice@example.com>")
        assert (await in_progress.code()).startswith("250")
        assert await server.reload(config_text(new_port, server.hop.port, "two"))
        assert server.port() == new_port
        with pytest.raises(OSError):  # closed: nobody listens there any more
            await trio.open_tcp_stream("127.0.0.1", old_port)
        moved = await connect(new_port)
        assert (await send(moved, "moved")).startswith("250 ")
        # The session that began on the old address finishes there, with the old chain.
        await in_progress.send_lines("RSET")
        assert (await in_progress.code()).startswith("250")
        assert (await send(in_progress, "stayed")).startswith("250 ")
        assert (tag_of(server.hop, "moved"), tag_of(server.hop, "stayed")) == ("two", "one")
    lines = log_text.getvalue()
    assert f"no longer listening on 127.0.0.1:{old_port}" in lines
    assert f"listening on 127.0.0.1:{new_port} (smtp)" in lines


async def test_a_second_listener_comes_and_goes(tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    path = tmp_path / "filterd.toml"
    async with running(path, partial(config_text, first, tag="one")) as server:
        text = path.read_text()
        extra = f'\n[[listen]]\naddress = "127.0.0.1:{second}"\n'
        assert await server.reload(text + extra)
        client = await connect(second)
        assert (await send(client, "second")).startswith("250 ")
        assert await server.reload(text)
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", second)
        client = await connect(first)
        assert (await send(client, "still here")).startswith("250 ")


async def test_an_address_that_cannot_be_bound_refuses_the_reload(
    tmp_path: Path, log_text: io.StringIO
) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        path = tmp_path / "filterd.toml"
        async with running(path, partial(config_text, port, tag="one")) as server:
            text = path.read_text()
            extra = f'\n[[listen]]\naddress = "127.0.0.1:{busy}"\n'
            assert not await server.reload(text + extra)
            client = await connect(port)
            assert (await send(client, "served")).startswith("250 ")
    assert (
        f"reload refused: cannot listen on 127.0.0.1:{busy}: address already in use"
        in log_text.getvalue()
    )


async def test_new_worker_processes_serve_the_new_chain(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "filterd.toml"
    async with running(path, partial(config_text, port, tag="one", processes=2)) as server:
        generation = server.reloader.generation
        assert generation is not None
        (pool,) = generation.pools
        assert await server.reload(config_text(port, server.hop.port, "two", processes=2))
        # The main process takes the first connection, the new worker the second (fewest open).
        clients = [await connect(port), await connect(port)]
        for number, client in enumerate(clients):
            assert (await send(client, f"message {number}")).startswith("250 ")
        assert {tag_of(server.hop, f"message {n}") for n in range(2)} == {"two"}
        process = pool.workers[0].process
        assert process is not None
        with trio.fail_after(WAIT):
            await process.wait()  # the old worker drained (it had nothing to finish), then exited
        assert (pool.retiring, process.returncode) == (True, 0)


async def test_a_policy_listener_answers_with_the_new_chain(tmp_path: Path) -> None:
    port, policy = free_port(), free_port()

    def text(hop: int, refuse: str) -> str:
        """An smtp and a policy listener; example_tagger refuses recipients starting with
        ``refuse`` (none when empty)."""
        tagger = 'text = "one"' + (f', refuse_prefix = "{refuse}"' if refuse else "")
        smtp = config_text(port, hop, "one").replace('text = "one"', tagger)
        return smtp + f'\n[[listen]]\naddress = "127.0.0.1:{policy}"\nprotocol = "policy"\n'

    path = tmp_path / "filterd.toml"
    async with running(path, partial(text, refuse="")) as server:
        before = PolicyClient(await trio.open_tcp_stream("127.0.0.1", policy))
        assert await before.ask(recipient="bad@example.org") == "DUNNO"
        assert await server.reload(text(server.hop.port, "bad"))
        after = PolicyClient(await trio.open_tcp_stream("127.0.0.1", policy))
        refused = await after.ask(recipient="bad@example.org")
        assert refused == "550 5.7.1 <bad@example.org>: refused by example_tagger"
        # Postfix's connection from before the reload goes on with the chain it began with.
        assert await before.ask(recipient="bad@example.org", instance="2") == "DUNNO"


async def test_a_plugin_that_does_not_start_refuses_the_reload(
    tmp_path: Path, log_text: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    path = tmp_path / "filterd.toml"
    async with running(path, partial(config_text, port, tag="one")) as server:

        async def cannot_start(self: ExampleTagger) -> None:
            raise ConnectionRefusedError("its server is down")

        monkeypatch.setattr(ExampleTagger, "start", cannot_start)
        assert not await server.reload(config_text(port, server.hop.port, "two"))
        client = await connect(port)
        assert (await send(client, "old chain")).startswith("250 ")
        assert tag_of(server.hop, "old chain") == "one"
    assert (
        "reload refused: a plugin did not start: ConnectionRefusedError: its server is down; "
        "keeping the configuration loaded at "
    ) in log_text.getvalue()
