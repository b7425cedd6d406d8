"""STARTTLS on both sides, and unix-domain sockets for the listener and the next hop."""

from __future__ import annotations

import ssl
from pathlib import Path

import trio
import trustme

from filterd.model import replies
from tests.integration.test_relay import running, send_message
from tests.support.session import LineClient


def tls_files(tmp_path: Path) -> tuple[Path, Path, Path, trustme.CA]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    ca.cert_pem.write_to_path(str(ca_path))
    return cert_path, key_path, ca_path, ca


def maildir_config(address: str, root: Path, tls: str = "") -> str:
    return f"""
[[listen]]
address = "{address}"
hostname = "final.test"
{tls}
[delivery]
method = "maildir"
root = "{root}"
"""


def relay_config(address: str, next_hop: str, tls_listen: str = "", tls_relay: str = "") -> str:
    return f"""
[[listen]]
address = "{address}"
hostname = "filterd.test"
{tls_listen}
[delivery]
method = "relay"
next_hop = "{next_hop}"
{tls_relay}
"""


def delivered(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(root.glob("*/*/new/*"))]


async def test_starttls_in_and_out(tmp_path: Path) -> None:
    cert, key, ca_path, ca = tls_files(tmp_path)
    tls = f'tls_cert = "{cert}"\ntls_key = "{key}"'
    root = tmp_path / "mail"
    async with running(maildir_config("127.0.0.1:0", root, tls)) as final_port:
        relay = relay_config(
            "127.0.0.1:0",
            f"localhost:{final_port}",
            tls_listen=tls,
            tls_relay=f'starttls = "required"\ntls_ca_file = "{ca_path}"',
        )
        async with running(relay) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            client = LineClient(stream)
            await client.line()
            await client.send_lines("EHLO client.example")
            assert "250-STARTTLS" in await client.reply()
            await client.send_lines("STARTTLS")
            assert await client.code() == str(replies.READY_TLS)
            context = ssl.create_default_context()
            ca.configure_trust(context)
            tls_stream = trio.SSLStream(stream, context, server_hostname="localhost")
            await tls_stream.do_handshake()
            client = LineClient(tls_stream)
            await client.send_lines("EHLO client.example")
            assert "250-STARTTLS" not in await client.reply()
            answers = await send_message(client, ["tls@example.org"])
            assert answers[-1].startswith("250 2.0.0 Ok: delivered to maildir")
    (message,) = delivered(root)
    # Both hops' Received headers name the protocol: ESMTPS = ESMTP over TLS.
    assert b"by final.test (filterd) with ESMTPS" in message
    assert b"by filterd.test (filterd) with ESMTPS" in message


async def test_starttls_required_but_not_offered_is_a_4xx(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    async with running(maildir_config("127.0.0.1:0", root)) as final_port:
        relay = relay_config(
            "127.0.0.1:0", f"127.0.0.1:{final_port}", tls_relay='starttls = "required"'
        )
        async with running(relay) as port:
            client = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
            await client.line()
            await client.send_lines(
                "EHLO client.example",
            )
            await client.reply()
            await client.send_lines("MAIL FROM:<a@b.example>")
            assert (await client.code()).startswith("451 4.7.5")


async def test_unix_socket_listener_and_next_hop(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    final_sock = tmp_path / "final.sock"
    front_sock = tmp_path / "front.sock"
    async with (
        running(maildir_config(f"unix:{final_sock}", root)),
        running(relay_config(f"unix:{front_sock}", f"unix:{final_sock}")),
    ):
        client = LineClient(await trio.open_unix_socket(str(front_sock)))
        await client.line()
        await client.send_lines("EHLO client.example")
        await client.reply()
        answers = await send_message(client, ["unix@example.org"])
        assert answers[-1].startswith("250 2.0.0 Ok: delivered to maildir")
    assert len(delivered(root)) == 1
    assert not final_sock.exists()
