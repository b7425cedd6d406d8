"""The Redis store's own connections (filterd.sdk.state.redis_connection) against a real
redis-server: a bounded pool, login and database from the URL, a reply never read on the wrong
request after a timeout or a cancellation, reconnection after the server closed its connections
or restarted (and the Lua scripts loaded again), a server that answers no RESP.

redis-py's blocking client is the independent witness of what reached the server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
import trio
import trustme

from filterd.sdk.state import Maturing, StateSettings, StateStore, StoreFailure, Tally, open_store
from tests.support.redis import RedisInstance, redis_installed, running_redis

pytestmark = [
    pytest.mark.skipif(not redis_installed(), reason="redis-server is not installed"),
    pytest.mark.timeout(120),
]

T0 = 1_700_000_000
MATURING = Maturing(wait=300, restart_after=2 * 86_400, keep=35 * 86_400)


@pytest.fixture
def redis_server() -> Iterator[RedisInstance]:
    with running_redis() as server:
        yield server


def witness(server: RedisInstance, **options: object) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=server.port, decode_responses=True, socket_timeout=10, **options
    )  # type: ignore[arg-type]


async def store_on(url: str, **settings: object) -> StateStore:
    return await open_store(StateSettings(backend="redis", url=url, **settings))  # type: ignore[arg-type]


async def test_the_pool_keeps_at_most_concurrency_connections(redis_server: RedisInstance) -> None:
    store = await store_on(redis_server.url, prefix="pool:", concurrency=3)
    check = witness(redis_server)
    await store.set("k", "v", 60)
    before = int(check.info("stats")["total_connections_received"])
    answers: list[str | None] = []

    async def one() -> None:
        answers.append(await store.get("k"))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(one)
    assert answers == ["v"] * 50
    opened = int(check.info("stats")["total_connections_received"]) - before
    assert opened == 2, opened  # 3 at most; one was open and idle already
    assert int(check.info("clients")["connected_clients"]) == 3 + 1  # and the witness
    await store.aclose()
    check.close()


async def test_a_password_a_user_and_a_database_from_the_url(redis_server: RedisInstance) -> None:
    check = witness(redis_server)
    check.config_set("requirepass", "s3cret")
    check = witness(redis_server, password="s3cret")
    check.acl_setuser("filterd", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all"])
    port = redis_server.port
    store = await store_on(f"redis://:s3cret@127.0.0.1:{port}/3", prefix="auth:")
    await store.set("k", "in three", 60)
    assert await store.increment("n", 2, 60) == 2
    user = await store_on(f"redis://filterd:pw@127.0.0.1:{port}/4", prefix="auth:")
    await user.set("k", "in four", 60)
    assert witness(redis_server, password="s3cret", db=3).get("auth:k") == "in three"
    assert witness(redis_server, password="s3cret", db=4).get("auth:k") == "in four"
    assert check.get("auth:k") is None  # not in database 0
    wrong = await store_on(f"redis://:nope@127.0.0.1:{port}/0", prefix="auth:")
    with trio.fail_after(30), pytest.raises(StoreFailure) as failure:
        await wrong.get("k")
    assert "WRONGPASS" in str(failure.value) or "invalid" in str(failure.value)
    assert failure.value.store == f"redis:redis://***@127.0.0.1:{port}/0"  # no password shown
    for opened in (store, user, wrong):
        await opened.aclose()


async def test_a_reply_that_came_too_late_is_never_read_as_the_next_ones(
    redis_server: RedisInstance,
) -> None:
    """The first GET times out while the server is paused; its reply comes after the pause.
    The next GET must not read it: its connection was closed."""
    store = await store_on(redis_server.url, prefix="late:", timeout=0.3, concurrency=1)
    await store.set("a", "value of a", 60)
    await store.set("b", "value of b", 60)
    redis_server.pause(2)  # CLIENT UNPAUSE itself waits for its end
    try:
        with trio.fail_after(30), pytest.raises(StoreFailure, match=r"no answer within 0\.3s"):
            await store.get("a")
    finally:
        redis_server.command("CLIENT", "UNPAUSE")
    with trio.fail_after(30):
        assert await store.get("b") == "value of b"
    await store.aclose()


async def test_a_cancelled_call_leaves_no_half_read_connection(
    redis_server: RedisInstance,
) -> None:
    store = await store_on(redis_server.url, prefix="cancel:", timeout=30, concurrency=1)
    await store.set("a", "value of a", 60)
    await store.set("b", "value of b", 60)
    redis_server.pause(2)  # CLIENT UNPAUSE itself waits for its end
    try:
        with trio.move_on_after(0.3) as scope:  # the caller's own deadline, not the store's
            await store.get("a")
        assert scope.cancelled_caught
    finally:
        redis_server.command("CLIENT", "UNPAUSE")
    with trio.fail_after(30):
        assert await store.get("b") == "value of b"
    await store.aclose()


async def test_connections_the_server_closed_are_replaced_without_a_failure(
    redis_server: RedisInstance,
) -> None:
    store = await store_on(redis_server.url, prefix="killed:", concurrency=4)
    async with trio.open_nursery() as nursery:  # four idle connections
        for number in range(4):
            nursery.start_soon(store.set, f"k{number}", str(number), 60)
    killed = witness(redis_server).client_kill_filter(_type="normal", skipme=True)
    assert killed == 4
    with trio.fail_after(30):
        assert await store.get_many([f"k{number}" for number in range(4)]) == ["0", "1", "2", "3"]
        assert await store.increment("n", 1, 60) == 1  # sent once, counted once
    await store.aclose()


async def test_a_restarted_server_is_reconnected_and_gets_the_scripts_again() -> None:
    tally = Tally("src", trusted_at=5, every=3600, keep=86_400)
    with running_redis() as first:
        port = first.port
        store = await store_on(first.url, prefix="restart:", timeout=1)
        assert await store.increment("n", 1, 60) == 1
        await store.record_sighting("k", T0, MATURING, tally)
    with trio.fail_after(30), pytest.raises(StoreFailure, match="sighting: "):
        await store.record_sighting("k", T0 + 10, MATURING, tally)  # down: refused
    with running_redis(port) as second:  # empty, and without the scripts
        with trio.fail_after(30), second.monitor() as sent:
            assert await store.increment("n", 1, 60) == 1
        assert [line.split()[3].strip('"').lower() for line in sent] == ["evalsha", "eval"]
        with trio.fail_after(30), second.monitor() as sent:
            assert await store.increment("n", 1, 60) == 2
            seen = await store.record_sighting("k", T0 + 20, MATURING, tally)
        assert seen.first == T0 + 20  # a new record on the new server
        commands = [line.split()[3].strip('"').lower() for line in sent]
        assert commands == ["evalsha", "evalsha", "eval"]  # the sighting script loaded again
    await store.aclose()


async def test_a_server_that_does_not_speak_resp_is_a_store_failure() -> None:
    async def http_server(stream: trio.SocketStream) -> None:
        await stream.receive_some(1000)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, http_server, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        store = await store_on(f"redis://127.0.0.1:{port}/0", timeout=5)
        with trio.fail_after(30), pytest.raises(StoreFailure, match="get: unreadable reply"):
            await store.get("a")
        await store.aclose()
        nursery.cancel_scope.cancel()


async def test_a_tls_server_with_its_certificate_checked(tmp_path: Path) -> None:
    """``rediss://``: the server's certificate checked against ``ssl_ca_certs`` (and its
    address); not without it (the system's authorities do not know it) unless told."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    for name, pem in (("ca.pem", ca.cert_pem), ("key.pem", cert.private_key_pem)):
        pem.write_to_path(str(tmp_path / name))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        tls_port = probe.getsockname()[1]
    options = ["--tls-port", str(tls_port), "--tls-auth-clients", "no",
               "--tls-cert-file", str(tmp_path / "cert.pem"),
               "--tls-key-file", str(tmp_path / "key.pem"),
               "--tls-ca-cert-file", str(tmp_path / "ca.pem")]  # fmt: skip
    with running_redis(extra_args=options) as server:
        url = f"rediss://127.0.0.1:{tls_port}/0"
        store = await store_on(f"{url}?ssl_ca_certs={tmp_path / 'ca.pem'}", prefix="tls:")
        with trio.fail_after(30):
            await store.set("k", "over TLS", 60)
            assert await store.increment("n", 3, 60) == 3
        assert witness(server).get("tls:k") == "over TLS"
        unknown = await store_on(url, prefix="tls:")
        with trio.fail_after(30), pytest.raises(StoreFailure, match="certificate verify failed"):
            await unknown.get("k")
        told = await store_on(f"{url}?ssl_cert_reqs=none", prefix="tls:")
        with trio.fail_after(30):
            assert await told.get("k") == "over TLS"
        for opened in (store, unknown, told):
            await opened.aclose()
