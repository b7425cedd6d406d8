"""The Redis store's glue between bytes and replies (filterd.sdk.state.redis_connection): what
redis-py's serializer packs, hiredis's reader reads back, however the bytes are cut; a
connection reads exactly the replies it asked for; the URL as redis-py reads it."""

from __future__ import annotations

import itertools
from typing import Any

import hiredis
import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from filterd.sdk.state import StateSettings
from filterd.sdk.state.redis_connection import (
    Connection,
    ConnectionLost,
    Endpoint,
    RedisError,
    ReplyReader,
    pack,
    parse_redis_url,
)

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
names = st.sampled_from(["GET", "MGET", "SET", "DEL", "EVALSHA", "EVAL", "PING"])
arguments = st.lists(texts | st.integers(-(2**63), 2**63 - 1), max_size=6)
commands = st.lists(
    st.tuples(names, arguments).map(lambda c: [c[0], *c[1]]), min_size=1, max_size=5
)


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(commands, st.lists(st.integers(min_value=0), max_size=20))
def test_what_the_serializer_packs_the_reader_reads_back_however_cut(
    sent: list[list[str | int]], points: list[int]
) -> None:
    """A packed command is a RESP array of bulk strings: the reader gives back its name and
    arguments, as text, and nothing before its last byte (the serializer splits a command name
    at spaces: the store's names have none)."""
    wire = b"".join(pack(*command) for command in sent)
    reader = ReplyReader()
    read: list[Any] = []
    for chunk in cuts(wire, points):
        reader.feed(chunk)
        while (reply := reader.next()) is not False:
            read.append(reply)
    assert read == [[str(arg) for arg in command] for command in sent]
    assert not reader.pending()


@given(st.binary(min_size=1, max_size=60))
def test_bytes_that_are_not_resp_raise_redis_error_or_wait(data: bytes) -> None:
    reader = ReplyReader()
    reader.feed(data)
    try:
        while reader.next() is not False:
            pass
    except RedisError:
        pass  # never another exception


REPLIES = [
    (b"+OK\r\n", "OK"),
    (b"$-1\r\n", None),
    (b":-7\r\n", -7),
    (b"$5\r\nx,\xc3\xa9y\r\n", "x,éy"),
    (b"*4\r\n:1\r\n:0\r\n:0\r\n:-1\r\n", [1, 0, 0, -1]),
    (b"*3\r\n$3\r\none\r\n$-1\r\n$3\r\n3,4\r\n", ["one", None, "3,4"]),
]


@given(
    st.lists(st.sampled_from(REPLIES), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_a_connection_reads_the_replies_it_asked_for_however_they_come(
    replies: list[tuple[bytes, Any]], points: list[int]
) -> None:
    wire = b"".join(raw for raw, _ in replies)

    async def main() -> list[Any]:
        client, server = trio.testing.memory_stream_pair()
        connection = Connection(client, Endpoint())

        async def serve() -> None:
            assert await server.receive_some() == b"request"
            for chunk in cuts(wire, points):
                await server.send_all(chunk)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            with trio.fail_after(10):
                return await connection.request(b"request", len(replies))

    assert trio.run(main) == [value for _, value in replies]


def test_an_error_reply_is_a_value_and_more_replies_than_asked_an_error() -> None:
    async def ask(wire: bytes, count: int) -> list[Any]:
        client, server = trio.testing.memory_stream_pair()
        await server.send_all(wire)
        with trio.fail_after(10):
            return await Connection(client, Endpoint()).request(b"x", count)

    (reply,) = trio.run(ask, b"-NOSCRIPT No matching script\r\n", 1)
    assert isinstance(reply, hiredis.ReplyError)
    assert str(reply) == "NOSCRIPT No matching script"
    with pytest.raises(RedisError, match="more replies than requests"):
        trio.run(ask, b"+OK\r\n+OK\r\n", 1)
    with pytest.raises(RedisError, match="unreadable reply"):
        trio.run(ask, b"$3\r\n\xff\xfe\xfd\r\n", 1)


def test_a_connection_closed_before_or_during_the_reply() -> None:
    async def ask(wire: bytes) -> None:
        client, server = trio.testing.memory_stream_pair()
        await server.send_all(wire)
        await server.send_stream.aclose()  # end of file after the bytes
        with trio.fail_after(10):
            await Connection(client, Endpoint()).request(b"x")

    with pytest.raises(ConnectionLost, match="closed the connection") as before:
        trio.run(ask, b"")
    assert before.value.before_reply
    with pytest.raises(ConnectionLost) as during:
        trio.run(ask, b"*2\r\n:1\r\n")
    assert not during.value.before_reply


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("redis://127.0.0.1:6379/0", Endpoint("127.0.0.1", 6379)),
        ("redis://10.0.0.5/2", Endpoint("10.0.0.5", 6379, db=2)),
        ("redis://:s%40cret@h:7000/1", Endpoint("h", 7000, db=1, password="s@cret")),
        ("redis://user:pw@h:7000", Endpoint("h", 7000, username="user", password="pw")),
        ("redis://h?db=5&password=pw", Endpoint("h", 6379, db=5, password="pw")),
        ("unix:///run/redis/redis.sock?db=3", Endpoint(path="/run/redis/redis.sock", db=3)),
    ],
)
def test_urls_as_redis_py_reads_them(url: str, endpoint: Endpoint) -> None:
    assert parse_redis_url(url) == endpoint


def test_a_tls_url_checks_the_certificate_unless_told() -> None:
    import ssl

    strict = parse_redis_url("rediss://redis.example:6380/0").tls
    assert strict is not None
    assert strict.verify_mode == ssl.CERT_REQUIRED
    assert strict.check_hostname
    relaxed = parse_redis_url("rediss://redis.example:6380/0?ssl_cert_reqs=none").tls
    assert relaxed is not None
    assert relaxed.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:6379", 'is not a Redis URL: write "redis://host:port/db"'),
        ("redis://h/0?socket_timeout=5", 'the parameter "socket_timeout" is not supported'),
        ("redis://h/0?ssl_cert_reqs=none", "need a rediss:// URL"),
        ("rediss://h/0?ssl_cert_reqs=maybe", "write none, optional or required"),
        ("unix://?db=0", "names no socket"),
        ("redis://h/0?db=x", "Invalid value for 'db'"),
    ],
)
def test_a_bad_url_is_a_configuration_error(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_redis_url(url)
    with pytest.raises(ValueError, match=message):
        StateSettings(backend="redis", url=url)
