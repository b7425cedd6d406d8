"""SocketIO: the SMTP hot path's reads and writes, a system call first and trio only to wait."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from filterd.delivery.socket_io import SPARE_OPERATIONS, SocketIO


def stream_pair() -> tuple[trio.SocketStream, socket.socket]:
    """A trio socket stream and the stdlib socket at its other end (a real socket pair)."""
    ours, theirs = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(ours)), theirs


async def test_bytes_already_there_are_read_without_a_checkpoint() -> None:
    stream, peer = stream_pair()
    io = SocketIO(stream)
    peer.sendall(b"MAIL FROM:<a@example.org>\r\n")
    with trio.testing.assert_no_checkpoints():
        assert io.receive_ready(4096) == b"MAIL FROM:<a@example.org>\r\n"
        assert io.receive_ready(4096) is None  # nothing more: the caller has to wait
        await io.send_all(b"250 2.1.0 Ok\r\n", trio.current_time() + 5)
    assert peer.recv(4096) == b"250 2.1.0 Ok\r\n"


async def test_an_answer_sent_while_others_run_is_read_without_a_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """receive_soon yields once: what the peer sends meanwhile is read; else None. (The
    other task answers during that checkpoint: trio may run ready tasks in either order, so
    the test makes the checkpoint itself the moment the peer answers.)"""
    stream, peer = stream_pair()
    io = SocketIO(stream)
    checkpoint = trio.lowlevel.checkpoint

    async def checkpoint_while_the_peer_answers() -> None:
        peer.sendall(b"250 2.1.5 Ok\r\n")
        await checkpoint()

    with monkeypatch.context() as patch:
        patch.setattr(trio.lowlevel, "checkpoint", checkpoint_while_the_peer_answers)
        assert io.receive_ready(100) is None  # nothing before the checkpoint
        assert await io.receive_soon(100) == b"250 2.1.5 Ok\r\n"
    with trio.testing.assert_checkpoints():
        assert await io.receive_soon(100) is None


async def test_a_run_of_ready_operations_is_broken_by_a_checkpoint() -> None:
    """A peer whose bytes are always there cannot keep the scheduler from other tasks."""
    stream, peer = stream_pair()
    io = SocketIO(stream)
    deadline = trio.current_time() + 5
    with trio.testing.assert_no_checkpoints():
        for _ in range(SPARE_OPERATIONS):
            peer.sendall(b"x")
            assert await io.receive_some(10, deadline) == b"x"
    peer.sendall(b"y")
    assert io.receive_ready(10) is None  # due for a checkpoint, though bytes are there
    with trio.testing.assert_checkpoints():
        assert await io.receive_some(10, deadline) == b"y"
    peer.sendall(b"z")
    with trio.testing.assert_no_checkpoints():  # the wait gave the spare operations back
        assert await io.receive_some(10, deadline) == b"z"


async def test_a_read_waits_for_the_peer() -> None:
    stream, peer = stream_pair()
    io = SocketIO(stream)

    async def answer_later() -> None:
        await trio.sleep(0.01)
        peer.sendall(b"220 ready\r\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_later)
        assert await io.receive_some(4096, trio.current_time() + 5) == b"220 ready\r\n"


async def test_a_read_past_its_deadline_is_too_slow(autojump_clock: trio.abc.Clock) -> None:
    stream, _peer = stream_pair()
    io = SocketIO(stream)
    started = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await io.receive_some(4096, started + 30)
    assert trio.current_time() == pytest.approx(started + 30)


async def test_the_peer_closing_reads_as_empty_bytes() -> None:
    stream, peer = stream_pair()
    io = SocketIO(stream)
    peer.close()
    assert await io.receive_some(4096, trio.current_time() + 5) == b""


async def test_a_large_send_waits_for_the_peer_to_read() -> None:
    stream, peer = stream_pair()
    io = SocketIO(stream)
    payload = bytes(range(256)) * 16 * 1024  # 4 MiB: far more than the socket buffers
    received = bytearray()

    async def read_all() -> None:
        peer.setblocking(False)
        while len(received) < len(payload):
            await trio.lowlevel.wait_readable(peer)
            received.extend(peer.recv(1 << 20))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await io.send_all(payload, trio.current_time() + 60)
    assert received == payload


async def test_a_send_the_peer_never_reads_is_too_slow(autojump_clock: trio.abc.Clock) -> None:
    stream, _peer = stream_pair()
    io = SocketIO(stream)
    with pytest.raises(trio.TooSlowError):
        await io.send_all(b"x" * (16 * 1024 * 1024), trio.current_time() + 30)


async def test_writing_to_a_closed_peer_fails_with_an_os_error() -> None:
    stream, peer = stream_pair()
    io = SocketIO(stream)
    peer.close()
    with pytest.raises(OSError):
        await io.send_all(b"250 2.0.0 Ok\r\n", trio.current_time() + 5)


async def test_a_closed_stream_is_never_read_through_a_reused_descriptor() -> None:
    stream, peer = stream_pair()
    io = SocketIO(stream)
    await stream.aclose()
    with pytest.raises(OSError):
        await io.send_all(b"x", trio.current_time() + 5)
    with pytest.raises(OSError):
        io.receive_ready(10)
    peer.close()


async def test_other_streams_go_through_the_stream_itself() -> None:
    """TLS streams keep their own state: SocketIO only bounds their waits."""
    left, right = trio.testing.memory_stream_pair()
    io = SocketIO(left)
    assert io.receive_ready(10) is None
    await right.send_all(b"EHLO x\r\n")
    assert await io.receive_some(100, trio.current_time() + 5) == b"EHLO x\r\n"
    await io.send_all(b"250 ok\r\n", trio.current_time() + 5)
    assert await right.receive_some(100) == b"250 ok\r\n"
