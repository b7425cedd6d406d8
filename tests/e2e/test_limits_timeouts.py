"""`[limits]` timeouts of the policy front door reach a running filterd."""

from __future__ import annotations

import socket

import pytest

from tests.support.filterd_proc import FilterdFactory
from tests.support.postfix import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

ANSWER_WAIT = 10.0  # far below the default timeouts (90 s, 330 s): only the settings close


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_policy_timeouts_come_from_the_limits_section(filterd_factory: FilterdFactory) -> None:
    port = free_port()
    filterd_factory(
        f"""
[[listen]]
address = "127.0.0.1:{port}"
protocol = "policy"
[limits]
policy_idle_timeout = "300ms"
policy_request_timeout = "300ms"
[delivery]
method = "maildir"
"""
    )
    # Idle: after its answer, a silent connection is closed by filterd.
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WAIT) as sock:
        sock.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\n\n")
        assert read_until_closed(sock) == b"action=DUNNO\n\n"
    # Request deadline: half a request is never answered, the connection is closed.
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WAIT) as sock:
        sock.sendall(b"request=smtpd_access_policy\n")
        assert read_until_closed(sock) == b""
