"""SpamdClient and the spamd codec against a REAL spamd (SpamAssassin 4.0.1, spamd's PROTOCOL),
started once for the module by ``tests/support/spamd.py``; plus fake spamds (trio listeners)
for what a real one will not do on demand: hang, flood connections, talk nonsense.

Also pins the spamd wire facts the codec relies on (Content-length counts CRLFs, a mismatch is
76, a body without a final LF needs the half-close, CRLF and LF copies score the same), and
checks our parsed scores against spamc's own output.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial

import pytest
import trio

from filterd.protocols.spamd import (
    Command,
    MessageClass,
    NeedData,
    ResponseParser,
    SpamdResponse,
    Tell,
    request_head,
)
from filterd.sdk.spamd_client import SpamdClient, SpamdError
from tests.support.data import MAIL_CORPUS
from tests.support.spamd import GTUBE, SpamdInstance, running_spamd, spamd_installed

pytestmark = pytest.mark.skipif(
    not spamd_installed(), reason="spamd/spamc not installed (deploy/install-system-packages.sh)"
)

HAM_DIR = MAIL_CORPUS
STEP = 30  # seconds: the deadline of one test against the real spamd


def crlf(message: bytes) -> bytes:
    """The message as the SMTP side holds it: CRLF line ends."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def gtube_message(tag: str = "gtube") -> bytes:
    return crlf(
        f"From: sender@example.org\nTo: rcpt@example.net\nSubject: test {tag}\n"
        f"Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <{tag}.{time.time_ns()}@example.org>\n"
        f"\nHello,\n\n{GTUBE}\n\nBye.\n".encode()
    )


def ham_message(name: str = "msg_02.txt") -> bytes:
    return (HAM_DIR / name).read_bytes()  # LF line ends, as stored


@pytest.fixture(scope="module")
def spamd(request: pytest.FixtureRequest) -> Iterator[SpamdInstance]:
    failed_before = request.session.testsfailed
    with running_spamd(children=2, unix_socket=True, tls=True) as instance:
        yield instance
        if request.session.testsfailed > failed_before:
            print(
                f"\n=== spamd log ({instance.log_path}) ===\n{instance.log_tail()}", file=sys.stderr
            )


@pytest.fixture
def client(spamd: SpamdInstance) -> SpamdClient:
    return SpamdClient(spamd.address, max_connections=spamd.children)


async def symbols(client: SpamdClient, message: bytes) -> SpamdResponse:
    with trio.fail_after(STEP):
        return await client.check(message, len(message), Command.SYMBOLS)


# --- PING over every transport -------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix", "tls"])
async def test_ping(spamd: SpamdInstance, transport: str) -> None:
    if transport == "tcp":
        client = SpamdClient(spamd.address, 1)
    elif transport == "unix":
        assert spamd.socket_path is not None
        client = SpamdClient(str(spamd.socket_path), 1)
    else:
        assert spamd.tls_port is not None
        client = SpamdClient((spamd.host, spamd.tls_port), 1, spamd.client_ssl_context())
    with trio.fail_after(STEP):
        response = await client.ping()
    assert (response.version, response.code, response.message) == ("1.5", 0, "PONG")


# --- verdicts ------------------------------------------------------------------------------------


async def test_gtube_is_spam_with_the_gtube_rule(client: SpamdClient) -> None:
    response = await symbols(client, gtube_message())
    assert response.spam is not None
    assert response.spam.is_spam
    assert response.spam.score >= 1000
    assert response.spam.threshold == 5.0
    assert "GTUBE" in response.symbols
    assert response.body == ",".join(response.symbols).encode()


@pytest.mark.parametrize("name", ["msg_01.txt", "msg_02.txt"])
async def test_ham_is_not_spam(client: SpamdClient, name: str) -> None:
    response = await symbols(client, ham_message(name))
    assert response.spam is not None
    assert not response.spam.is_spam
    assert response.spam.score < response.spam.threshold
    assert "GTUBE" not in response.symbols


@pytest.mark.parametrize("make", [gtube_message, ham_message])
async def test_crlf_and_lf_copies_score_the_same(
    client: SpamdClient, make: Callable[[], bytes]
) -> None:
    """SpamAssassin squashes CRLF to LF when the first/last line ends in CRLF (Message.pm, bug
    4363); Content-length counts the CRs, and spamd accepts it."""
    lf = make().replace(b"\r\n", b"\n")
    with_crlf = crlf(lf)
    assert len(with_crlf) > len(lf)
    from_lf, from_crlf = await symbols(client, lf), await symbols(client, with_crlf)
    assert from_lf.spam == from_crlf.spam
    assert from_lf.symbols == from_crlf.symbols


@pytest.mark.parametrize(
    ("command", "has_body"),
    [
        (Command.CHECK, False),
        (Command.REPORT, True),
        (Command.REPORT_IFSPAM, True),
        (Command.HEADERS, True),
    ],
)
async def test_scan_commands_on_gtube(
    client: SpamdClient, command: Command, has_body: bool
) -> None:
    message = gtube_message()
    with trio.fail_after(STEP):
        response = await client.check(message, len(message), command)
    assert response.spam is not None
    assert response.spam.is_spam
    assert bool(response.body) is has_body
    if command is Command.REPORT:
        assert b"GTUBE" in response.body
    if command is Command.HEADERS:  # report_safe 1: the headers of spamd's wrapper message
        assert b"X-Spam-Flag: YES\r\n" in response.body
        assert response.body.endswith(b"\r\n\r\n")


async def test_report_ifspam_on_ham_is_empty(client: SpamdClient) -> None:
    message = ham_message()
    with trio.fail_after(STEP):
        response = await client.check(message, len(message), Command.REPORT_IFSPAM)
    assert response.spam is not None
    assert not response.spam.is_spam
    assert response.body == b""
    assert (response.header("Spam") or "").startswith("No ; ")


async def test_process_returns_the_rewritten_message(client: SpamdClient) -> None:
    message = gtube_message("process")
    with trio.fail_after(STEP):
        response = await client.check(message, len(message), Command.PROCESS)
    assert response.spam is not None
    assert response.spam.is_spam
    rewritten = response.body
    head, _, _ = rewritten.partition(b"\r\n\r\n")
    assert b"\r\nX-Spam-Flag: YES\r\n" in head
    assert b"\r\nX-Spam-Status: Yes, score=" in head
    assert GTUBE.encode() in rewritten  # the original travels as an attachment (report_safe 1)
    # CRLF in, CRLF out: no bare LF anywhere in the rewritten message.
    assert rewritten.count(b"\n") == rewritten.count(b"\r\n")


async def test_process_of_ham_keeps_the_body(client: SpamdClient) -> None:
    message = ham_message()
    with trio.fail_after(STEP):
        response = await client.check(message, len(message), Command.PROCESS)
    assert response.spam is not None
    assert not response.spam.is_spam
    assert b"\nX-Spam-Status: No, score=" in response.body
    assert response.body.endswith(message.partition(b"\n\n")[2])


async def test_tell_learns_and_forgets(client: SpamdClient) -> None:
    message = gtube_message("tell")
    with trio.fail_after(STEP):
        learnt = await client.tell(message, len(message), Tell.learn(MessageClass.SPAM))
        again = await client.tell(message, len(message), Tell.learn(MessageClass.SPAM))
        forgotten = await client.tell(message, len(message), Tell.forget())
    assert learnt.did_set == {"local"}
    assert again.did_set == frozenset()  # already learnt: spamd did nothing
    assert forgotten.did_remove == {"local"}


async def test_user_header_is_accepted(client: SpamdClient) -> None:
    message = gtube_message()
    with trio.fail_after(STEP):
        response = await client.check(message, len(message), "CHECK", user="filterd@example.org")
    assert response.spam is not None
    assert response.spam.is_spam


# --- TLS -----------------------------------------------------------------------------------------


async def test_tls_scan_and_the_final_lf_rule(spamd: SpamdInstance) -> None:
    assert spamd.tls_port is not None
    client = SpamdClient((spamd.host, spamd.tls_port), 1, spamd.client_ssl_context())
    message = gtube_message("tls")
    with trio.fail_after(STEP):
        response = await client.check(message, len(message), Command.SYMBOLS)
        assert "GTUBE" in response.symbols
        # No half-close over TLS: a message without a final LF would leave spamd waiting.
        truncated = message.rstrip(b"\r\n")
        with pytest.raises(SpamdError, match="must end with LF"):
            await client.check(truncated, len(truncated), Command.CHECK)


# --- streaming -----------------------------------------------------------------------------------

CHUNK = 64 * 1024
BIG = 20 * 1024 * 1024


def big_message() -> tuple[Iterator[bytes], int]:
    """A 20 MiB message as a generator of 64 KiB chunks (one chunk object, reused)."""
    header = crlf(b"From: a@example.org\nTo: b@example.net\nSubject: big\n\n")
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    chunk = line * (CHUNK // len(line))
    count = -(-(BIG - len(header)) // len(chunk))

    def chunks() -> Iterator[bytes]:
        yield header
        for _ in range(count):
            yield chunk

    return chunks(), len(header) + count * len(chunk)


async def test_twenty_megabytes_are_streamed_without_a_copy(client: SpamdClient) -> None:
    chunks, length = big_message()
    assert length >= BIG
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with trio.fail_after(120):
            response = await client.check(chunks, length, Command.SYMBOLS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.spam is not None
    assert not response.spam.is_spam
    assert peak < 2 * 1024 * 1024, f"peak traced memory {peak} bytes"


async def test_async_iterables_are_streamed(client: SpamdClient) -> None:
    message = gtube_message("async")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(message), 7):
            await trio.lowlevel.checkpoint()
            yield message[start : start + 7]

    with trio.fail_after(STEP):
        response = await client.check(chunks(), len(message), Command.SYMBOLS)
    assert "GTUBE" in response.symbols


@pytest.mark.parametrize("declared_delta", [-1, 1])
async def test_length_that_does_not_match_is_a_caller_bug(
    client: SpamdClient, declared_delta: int
) -> None:
    message = gtube_message()
    with trio.fail_after(STEP), pytest.raises(ValueError, match="declared"):
        await client.check([message], len(message) + declared_delta)


async def test_caller_iterator_errors_propagate_unchanged(client: SpamdClient) -> None:
    def failing() -> Iterator[bytes]:
        yield b"Subject: x\r\n"
        raise OSError("spool file vanished")

    with trio.fail_after(STEP), pytest.raises(OSError, match="spool file vanished"):
        await client.check(failing(), 100)


# --- spamc agrees --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [gtube_message, ham_message])
async def test_scores_and_symbols_match_spamc(
    spamd: SpamdInstance, client: SpamdClient, make: Callable[[], bytes]
) -> None:
    message = make()
    ours = await symbols(client, message)
    assert ours.spam is not None
    with trio.fail_after(STEP):
        checked = await trio.run_process(
            spamd.spamc("-c"), stdin=message, capture_stdout=True, check=False
        )
        listed = await trio.run_process(
            spamd.spamc("-y"), stdin=message, capture_stdout=True, check=False
        )
    # spamc -c prints "%.1f/%.1f" and exits 1 for spam, 0 for ham.
    assert checked.stdout.decode().strip() == f"{ours.spam.score:.1f}/{ours.spam.threshold:.1f}"
    assert checked.returncode == int(ours.spam.is_spam)
    assert listed.stdout.decode().strip().split(",") == list(ours.symbols)


# --- spamd's wire behaviour, pinned --------------------------------------------------------------


async def raw_exchange(spamd: SpamdInstance, command: Command, data: bytes, eof: bool) -> bytes:
    """Send raw bytes, optionally half-close, and return everything spamd sends back."""
    stream = await trio.open_tcp_stream(*spamd.address)
    async with stream:
        await stream.send_all(data)
        if eof:
            await stream.send_eof()
        received = bytearray()
        while chunk := await stream.receive_some(65536):
            received += chunk
    return bytes(received)


def parse(command: Command, wire: bytes) -> SpamdResponse:
    parser = ResponseParser(command)
    parser.receive_data(wire)
    parser.receive_data(b"")
    event = parser.next_event()
    assert isinstance(event, SpamdResponse), event
    return event


@pytest.mark.parametrize("delta", [-2, 1])
async def test_content_length_mismatch_is_ex_protocol(spamd: SpamdInstance, delta: int) -> None:
    message = gtube_message()
    head = request_head(Command.CHECK, len(message) + delta)
    with trio.fail_after(STEP):
        wire = await raw_exchange(spamd, Command.CHECK, head + message, eof=True)
    response = parse(Command.CHECK, wire)
    assert (response.version, response.code, response.code_name) == ("1.0", 76, "EX_PROTOCOL")
    expected = f"Expected {len(message) + delta} bytes, got {len(message)} bytes"
    assert response.message == f"Bad header line: (Content-Length mismatch: {expected})"


async def test_request_headers_need_crlf(spamd: SpamdInstance) -> None:
    message = gtube_message()
    head = request_head(Command.CHECK, len(message)).replace(b"\r\n", b"\n")
    with trio.fail_after(STEP):
        wire = await raw_exchange(spamd, Command.CHECK, head + message, eof=True)
    response = parse(Command.CHECK, wire)
    assert response.code == 76
    assert "not in 'Name: value' format" in response.message


async def test_body_without_final_lf_waits_for_the_half_close(spamd: SpamdInstance) -> None:
    """spamd reads the body by lines: without a final LF only EOF completes it."""
    message = gtube_message().rstrip(b"\r\n")
    parser = ResponseParser(Command.CHECK)
    with trio.fail_after(STEP):
        stream = await trio.open_tcp_stream(*spamd.address)
        async with stream:
            await stream.send_all(request_head(Command.CHECK, len(message)) + message)
            with trio.move_on_after(0.5) as waited:
                await stream.receive_some(65536)
            assert waited.cancelled_caught, "spamd answered before the half-close"
            await stream.send_eof()
            while isinstance(event := parser.next_event(), NeedData):
                parser.receive_data(await stream.receive_some(65536))
    assert isinstance(event, SpamdResponse)
    assert event.spam is not None
    assert event.spam.is_spam


# --- failures ------------------------------------------------------------------------------------


async def test_stopped_spamd_fails_fast() -> None:
    """A second spamd (no --allow-tell): TELL gets 69 even with a body spamd never reads; once
    stopped, TCP and unix connections fail at once."""
    with running_spamd(children=1, allow_tell=False, unix_socket=True) as other:
        tcp = SpamdClient(other.address, 1)
        assert other.socket_path is not None
        unix = SpamdClient(str(other.socket_path), 1)
        big = gtube_message() * 50_000  # ~9 MB: spamd answers and resets before reading it
        with trio.fail_after(STEP):
            await tcp.ping()
            await unix.ping()
            with pytest.raises(SpamdError, match="allow-tell") as info:
                await tcp.tell(big, len(big), Tell.learn(MessageClass.SPAM))
        assert info.value.code == 69
    for client, reason in [(tcp, "Connection refused"), (unix, "No such file or directory")]:
        start = trio.current_time()
        with trio.fail_after(2), pytest.raises(SpamdError, match=reason) as info:
            await client.check(b"Subject: x\r\n\r\n", 14)
        assert info.value.code is None
        assert trio.current_time() - start < 1


async def serve_fake(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> tuple[str, int]:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    host, port = listeners[0].socket.getsockname()[:2]
    return host, port


async def test_slow_spamd_is_cut_off_by_the_callers_deadline() -> None:
    async def never_answers(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        client = SpamdClient(await serve_fake(nursery, never_answers), 1)
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.5):
            await client.check(b"Subject: x\r\n\r\n", 14)
        assert 0.5 <= trio.current_time() - start < 1.5
        nursery.cancel_scope.cancel()


async def test_connections_are_bounded_by_max_connections() -> None:
    accepted = 0
    two_in = trio.Event()

    async def count(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        if accepted == 2:
            two_in.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        client = SpamdClient(await serve_fake(nursery, count), max_connections=2)
        with trio.fail_after(5):
            async with trio.open_nursery() as callers:
                for _ in range(5):
                    callers.start_soon(client.ping)
                await two_in.wait()
                await trio.sleep(0.3)  # time for a third connection, were it allowed
                assert accepted == 2
                assert client.limiter.statistics().tasks_waiting == 3
                callers.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("reply", "match", "code"),
    [
        (b"SPAMD/1.0 76 Bad header line: (test)\r\n", r"answered 76 EX_PROTOCOL: Bad header", 76),
        (b"SPAMD/1.0 79 Timeout: (test)\r\n", r"answered 79 EX_TIMEOUT", 79),
        (b"HTTP/1.0 400 Bad Request\r\n\r\n", "broke the protocol: malformed spamd status", None),
        (b"SPAMD/1.1 0 EX_OK\r\n\r\n", "broke the protocol: .* no Spam header", None),
        (b"", "broke the protocol: spamd closed the connection without a response", None),
    ],
)
async def test_fake_spamd_errors(reply: bytes, match: str, code: int | None) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        while await stream.receive_some(65536):
            pass  # read the whole request, as spamd does
        await stream.send_all(reply)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        client = SpamdClient(await serve_fake(nursery, answer), 1)
        with trio.fail_after(STEP), pytest.raises(SpamdError, match=match) as info:
            await client.check(b"Subject: x\r\n\r\n", 14, Command.CHECK)
        assert info.value.code == code
        nursery.cancel_scope.cancel()


async def test_pong_is_required_for_ping() -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"SPAMD/1.5 0 EX_OK\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        client = SpamdClient(await serve_fake(nursery, answer), 1)
        with trio.fail_after(STEP), pytest.raises(SpamdError, match="answered PING with 'EX_OK'"):
            await client.ping()
        nursery.cancel_scope.cancel()
