"""filterd's policy door in end-to-end tests: its config, a private Postfix asking it through
deploy/postfix's policy snippet (``check_policy_service ..., permit_mynetworks,
reject_unauth_destination``), and policy requests sent on one connection as Postfix keeps it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tests.support.filterd_proc import FilterdFactory
from tests.support.postfix import PostfixFactory, PostfixInstance, free_port, policy_main_cf
from tests.support.postfwd import PolicyClient


def policy_door_config(port: int, chain: str, *, listen: str = "") -> str:
    """filterd's config: a policy listener on 127.0.0.1:``port`` (``listen``: more lines of
    its table), maildir delivery (a policy door delivers nothing), then ``chain``: the
    ``[[chain]]`` tables, TOML."""
    return (
        f'[[listen]]\naddress = "127.0.0.1:{port}"\nprotocol = "policy"\n{listen}'
        f'[delivery]\nmethod = "maildir"\n{chain}'
    )


def filterd_policy_door(filterd_factory: FilterdFactory, chain: str, *, listen: str = "") -> int:
    """A filterd running ``chain`` behind a policy door (`policy_door_config`) on a free
    loopback port, started (and stopped by the factory); the port."""
    port = free_port()
    filterd_factory(policy_door_config(port, chain, listen=listen))
    return port


def postfix_asking_filterd(
    postfix_factory: PostfixFactory, filterd_factory: FilterdFactory, chain: str
) -> PostfixInstance:
    """A private Postfix whose smtpd asks a filterd policy door running ``chain``, both
    started (and stopped by their factories)."""
    port = free_port()
    postfix = postfix_factory(main_cf_extra=policy_main_cf(port))
    filterd_factory(policy_door_config(port, chain))
    return postfix


def policy_request(state: str, instance: str, **more: str) -> dict[str, str]:
    """A policy request as smtpd sends it for alice@example.com from client.example
    (192.0.2.10): ``state`` is protocol_state, ``instance`` names the message, ``more``
    overrides or adds attributes."""
    return {
        "protocol_state": state,
        "protocol_name": "ESMTP",
        "client_address": "192.0.2.10",
        "client_name": "client.example",
        "reverse_client_name": "client.example",
        "client_port": "40000",
        "helo_name": "client.example",
        "sender": "alice@example.com",
        "recipient": "",
        "recipient_count": "0",
        "queue_id": "",
        "instance": instance,
        "size": "0",
        **more,
    }


def ask_on_one_connection(port: int, requests: Iterable[Mapping[str, str]]) -> list[str]:
    """The action of each answer to ``requests``, all asked on one connection to
    127.0.0.1:``port`` (Postfix keeps one per policy service for all its restriction
    classes)."""
    client = PolicyClient(port)
    try:
        return [client.ask(request) for request in requests]
    finally:
        client.close()
