"""One session's SMTP AUTH against a scripted stand-in for Dovecot: the reply to each step, the
warning logged for each failure, the delay before it (on trio's mock clock) and the limit.
The real Dovecot is in tests/e2e/test_relay_auth.py."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from filterd.config.schema import LimitsConfig
from filterd.frontdoors.smtp.auth import SmtpAuth
from filterd.frontdoors.smtp.dovecot_auth import AuthUnavailable, DovecotAuth, Step
from filterd.model import replies
from filterd.model.envelope import Client
from filterd.model.reply import Reply
from filterd.protocols.dovecot_auth import Challenge, Failure, Success

PEER = Client(address="192.0.2.7", port=40000, name="unknown")
GOOD = "AGFsaWNlAHNlY3JldA=="  # \0alice\0secret


class ScriptedExchange:
    def __init__(self, steps: list[Step | AuthUnavailable]) -> None:
        self.steps = steps
        self.mechanisms = frozenset({"PLAIN", "LOGIN"})
        self.sent: list[tuple[str, ...]] = []
        self.closed = False

    async def start(self, mechanism: str, initial: str | None, **kw: object) -> Step:
        self.sent.append(("AUTH", mechanism, str(initial), str(sorted(kw.items()))))
        return self._next()

    async def respond(self, data: str) -> Step:
        self.sent.append(("CONT", data))
        return self._next()

    async def aclose(self) -> None:
        self.closed = True

    def _next(self) -> Step:
        step = self.steps.pop(0)
        if isinstance(step, AuthUnavailable):
            raise step
        return step


class ScriptedDovecot(DovecotAuth):
    def __init__(self, *steps: Step | AuthUnavailable, down: bool = False) -> None:
        self.exchanges: list[ScriptedExchange] = []
        self.steps = list(steps)
        self.down = down

    async def begin(self) -> ScriptedExchange:  # type: ignore[override]
        if self.down:
            raise AuthUnavailable("cannot connect to Dovecot's auth socket unix:/x: gone")
        exchange = ScriptedExchange(self.steps)
        self.exchanges.append(exchange)
        return exchange


def auth_for(dovecot: ScriptedDovecot, **limits: object) -> SmtpAuth:
    settings = LimitsConfig.model_validate({"auth_failure_delay": 0, **limits})
    return SmtpAuth(dovecot, settings, PEER, "127.0.0.1")


async def test_plain_with_an_initial_response() -> None:
    dovecot = ScriptedDovecot(Success("alice"))
    auth = auth_for(dovecot)
    assert await auth.start("PLAIN", GOOD, secured=True) == replies.AUTH_OK
    assert (auth.username, auth.method, auth.failures) == ("alice", "PLAIN", 0)
    (exchange,) = dovecot.exchanges
    assert exchange.sent == [
        (
            "AUTH",
            "PLAIN",
            GOOD,
            "[('local_ip', '127.0.0.1'), ('remote_ip', '192.0.2.7'), ('secured', True)]",
        )
    ]
    assert exchange.closed


async def test_login_with_challenges() -> None:
    dovecot = ScriptedDovecot(
        Challenge("VXNlcm5hbWU6"), Challenge("UGFzc3dvcmQ6"), Success("alice")
    )
    auth = auth_for(dovecot)
    assert await auth.start("LOGIN", None, secured=True) == Reply(334, "", "VXNlcm5hbWU6")
    assert await auth.respond("YWxpY2U=") == Reply(334, "", "UGFzc3dvcmQ6")
    assert await auth.respond("c2VjcmV0") == replies.AUTH_OK
    assert dovecot.exchanges[0].sent[1:] == [("CONT", "YWxpY2U="), ("CONT", "c2VjcmV0")]


async def test_an_empty_initial_response() -> None:
    dovecot = ScriptedDovecot(Failure(None, user=None))
    await auth_for(dovecot).start("PLAIN", "=", secured=True)
    assert dovecot.exchanges[0].sent[0][2] == ""


async def test_bad_credentials(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    dovecot = ScriptedDovecot(Failure(None, user="alice"), Failure("Try later\r\n", user="bob"))
    auth = auth_for(dovecot, auth_failure_delay="2s", max_auth_failures=2)
    with caplog.at_level(logging.WARNING, logger="filterd"):
        started = trio.current_time()
        assert await auth.start("PLAIN", GOOD, secured=True) == replies.AUTH_FAILED
        assert trio.current_time() - started == pytest.approx(2.0)
        assert not auth.too_many_failures
        reply = await auth.start("PLAIN", GOOD, secured=True)
    assert reply == Reply(535, "5.7.8", "Error: authentication failed: Try later??")
    assert auth.too_many_failures
    assert auth.username is None
    assert [r.getMessage() for r in caplog.records] == [
        "warning: unknown[192.0.2.7]: SASL PLAIN authentication failed: (reason unavailable), "
        "sasl_username=alice",
        "warning: unknown[192.0.2.7]: SASL PLAIN authentication failed: Try later??, "
        "sasl_username=bob",
    ]


@pytest.mark.parametrize(
    ("mechanism", "initial", "reason"),
    [
        ("CRAM-MD5", None, "Invalid authentication mechanism"),
        ("PLAIN", "not base64!", "Invalid base64 data in initial response"),
    ],
)
async def test_refused_before_asking_dovecot(
    mechanism: str, initial: str | None, reason: str
) -> None:
    dovecot = ScriptedDovecot()
    auth = auth_for(dovecot)
    reply = await auth.start(mechanism, initial, secured=True)
    assert reply == Reply(535, "5.7.8", f"Error: authentication failed: {reason}")
    assert dovecot.exchanges == []
    assert auth.failures == 1


async def test_a_mechanism_dovecot_does_not_offer() -> None:
    dovecot = ScriptedDovecot()
    auth = auth_for(dovecot)
    original = dovecot.begin

    async def without_login() -> object:
        exchange = await original()
        exchange.mechanisms = frozenset({"PLAIN"})
        return exchange

    dovecot.begin = without_login  # type: ignore[method-assign]
    reply = await auth.start("LOGIN", None, secured=True)
    assert reply.text == "Error: authentication failed: Invalid authentication mechanism"
    assert dovecot.exchanges[0].sent == []
    assert dovecot.exchanges[0].closed


async def test_the_client_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    dovecot = ScriptedDovecot(Challenge("VXNlcm5hbWU6"))
    auth = auth_for(dovecot)
    await auth.start("LOGIN", None, secured=True)
    with caplog.at_level(logging.WARNING, logger="filterd"):
        assert await auth.respond("*") == replies.AUTH_ABORTED
    assert dovecot.exchanges[0].closed
    assert auth.failures == 1
    assert caplog.records[0].getMessage() == (
        "warning: unknown[192.0.2.7]: SASL LOGIN authentication aborted"
    )


async def test_a_response_that_is_not_base64() -> None:
    dovecot = ScriptedDovecot(Challenge("VXNlcm5hbWU6"))
    auth = auth_for(dovecot)
    await auth.start("LOGIN", None, secured=True)
    reply = await auth.respond("a\tb")
    assert reply.text == "Error: authentication failed: Invalid base64 data in continued response"
    assert dovecot.exchanges[0].sent == [dovecot.exchanges[0].sent[0]]


async def test_dovecot_unavailable_is_temporary(caplog: pytest.LogCaptureFixture) -> None:
    auth = auth_for(ScriptedDovecot(down=True))
    with caplog.at_level(logging.WARNING, logger="filterd"):
        assert await auth.start("PLAIN", GOOD, secured=True) == replies.AUTH_TEMPORARY
    assert replies.AUTH_TEMPORARY.to_bytes() == b"454 4.7.0 Temporary authentication failure\r\n"
    assert [r.getMessage() for r in caplog.records] == [
        "warning: SASL: cannot connect to Dovecot's auth socket unix:/x: gone",
        "warning: unknown[192.0.2.7]: SASL PLAIN authentication failed: (reason unavailable), "
        "sasl_username=(unavailable)",
    ]


async def test_dovecot_lost_mid_exchange_and_its_backend_down() -> None:
    dovecot = ScriptedDovecot(
        Challenge("VXNlcm5hbWU6"), AuthUnavailable("lost"), Failure("db down", temporary=True)
    )
    auth = auth_for(dovecot)
    await auth.start("LOGIN", None, secured=True)
    assert await auth.respond("YWxpY2U=") == replies.AUTH_TEMPORARY
    assert dovecot.exchanges[0].closed
    reply = await auth.start("PLAIN", GOOD, secured=True)
    assert reply == Reply(454, "4.7.0", "Temporary authentication failure: db down")


async def test_abandon_closes_the_exchange() -> None:
    dovecot = ScriptedDovecot(Challenge(""))
    auth = auth_for(dovecot)
    assert await auth.start("PLAIN", None, secured=True) == Reply(334, "", "")
    await auth.abandon()
    assert dovecot.exchanges[0].closed
    assert await auth.respond("AAAA") == replies.INTERNAL_ERROR
