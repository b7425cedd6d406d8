"""The metrics endpoint and ``filterd status`` of a real ``filterd run`` whose smtp and policy
listeners each have two processes: what every process counted is summed, the plugin latency
histogram has its observations, a worker killed with SIGKILL takes no count with it, and with
no ``[metrics] address`` there is no endpoint while ``filterd status`` still answers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.filterd_proc import FilterdFactory, FilterdProcess
from tests.support.postfix import free_port
from tests.support.processes import gone, socket_owner, worker_pids

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WAIT = 20.0
MESSAGE = b"Subject: counted\r\n\r\nbody\r\n"
POLICY_REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    b"client_address=192.0.2.1\nclient_name=client.example\nhelo_name=client.example\n"
    b"sender=alice@example.org\nrecipient=bob@example.net\ninstance=1.{n}\n\n"
)
CONNECT = re.compile(r"filterd/(?:smtpd|policy)\[\d+\]: connect from ")
POLICY_CONNECT = r"filterd/policy\[(\d+)\]: connect from \[127\.0\.0\.1\]:{port}\n"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def config(smtp: int, policy: int, metrics: str = "") -> str:
    return f"""
[[listen]]
address = "127.0.0.1:{smtp}"
processes = 2
[[listen]]
address = "127.0.0.1:{policy}"
protocol = "policy"
processes = 2
[delivery]
method = "maildir"
root = "mail"
[[chain]]
plugin = "example_tagger"
[chain.config]
refuse_prefix = "nobody"
{metrics}
"""


def wait_for(what: str, check: Callable[[], object], proc: FilterdProcess) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {WAIT:g}s; filterd said:\n{proc.output_text()}")
        time.sleep(0.05)


def settled(proc: FilterdProcess) -> bool:
    """Both workers are up and the start-up probes' connections have ended (so neither process
    counts them as load)."""
    text = proc.output_text()
    connects = len(CONNECT.findall(text))
    return (
        len(worker_pids(text, "smtp")) == 1
        and len(worker_pids(text, "policy")) == 1
        and connects >= 2
        and text.count("disconnect from") == connects
    )


def status(proc: FilterdProcess, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filterd", "status", "-c", str(proc.config_path), *options],
        cwd=proc.workdir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def status_json(proc: FilterdProcess) -> dict[str, object]:
    done = status(proc, "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


def scrape(address: str) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def ask_policy(sock: socket.socket, n: int) -> bytes:
    sock.sendall(POLICY_REQUEST.replace(b"{n}", str(n).encode()))
    answer = b""
    while not answer.endswith(b"\n\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


def policy_server(proc: FilterdProcess, sock: socket.socket) -> int:
    pattern = POLICY_CONNECT.format(port=sock.getsockname()[1])
    found: list[int] = []

    def logged() -> bool:
        match = re.search(pattern, proc.output_text())
        if match:
            found.append(int(match.group(1)))
        return bool(match)

    wait_for("the policy connection is logged", logged, proc)
    return found[0]


def test_counts_of_every_process_are_summed_and_survive_a_killed_worker(
    filterd_factory: FilterdFactory,
) -> None:
    smtp_port, policy_port = free_port(), free_port()
    proc = filterd_factory(config(smtp_port, policy_port, '[metrics]\naddress = "127.0.0.1:0"'))
    wait_for("both workers are up", lambda: settled(proc), proc)
    assert proc.pid is not None
    address = status_json(proc)["server"]["metrics_address"]  # type: ignore[index]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", address)
    assert "metrics on http://" in proc.output_text()

    # Two connections at once: the second goes to the worker (the main process has one).
    smtp_worker = worker_pids(proc.output_text(), "smtp")[0]
    clients = [smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) for _ in range(2)]
    servers = {
        socket_owner(smtp_port, client.sock.getsockname()[1], [proc.pid, smtp_worker])
        for client in clients
        if client.sock is not None
    }
    assert servers == {proc.pid, smtp_worker}, "each process serves one connection"
    for client in clients:
        for _ in range(2):
            client.sendmail("alice@example.org", ["bob@example.net"], MESSAGE)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("alice@example.org", ["nobody@example.net"], MESSAGE)
        client.quit()

    policies = [socket.create_connection(("127.0.0.1", policy_port), timeout=30) for _ in range(2)]
    try:
        assert {policy_server(proc, sock) for sock in policies} == {
            proc.pid,
            worker_pids(proc.output_text(), "policy")[0],
        }
        for n, sock in enumerate(policies * 3):
            assert ask_policy(sock, n) == b"action=DUNNO\n\n"
    finally:
        for sock in policies:
            sock.close()

    def all_counted() -> bool:
        samples = scrape(address)
        return (
            value(samples, "filterd_messages_total", door="smtp", outcome="accept") == 4
            and value(samples, "filterd_messages_total", door="policy", outcome="accept") == 6
            and value(samples, "filterd_sessions", door="policy") == 0
        )

    wait_for("every process's counts are scraped", all_counted, proc)
    samples = scrape(address)
    assert (
        value(samples, "filterd_refusals_total", door="smtp", stage="rcpt", outcome="reject") == 2
    )
    rcpt_calls = {"plugin": "example_tagger", "stage": "on_rcpt"}
    assert value(samples, "filterd_plugin_duration_seconds_count", **rcpt_calls) == 2 * 3 + 6
    message_calls = {"plugin": "example_tagger", "stage": "on_message"}
    assert value(samples, "filterd_plugin_duration_seconds_count", **message_calls) == 4
    assert value(samples, "filterd_plugin_duration_seconds_sum", **message_calls) > 0
    infinite = value(samples, "filterd_plugin_duration_seconds_bucket", le="+Inf", **message_calls)
    assert infinite == 4
    assert value(samples, "filterd_plugin_failures_total", failure="error", **message_calls) == 0
    assert value(samples, "filterd_processes") == 3
    assert value(samples, "filterd_reloads_total", result="ok") == 0
    assert value(samples, "filterd_spool_bytes") == 0
    assert value(samples, "filterd_sessions", door="smtp") == 0

    shown = status(proc)
    assert shown.returncode == 0, shown.stderr
    assert "processes: 3 (main " in shown.stdout
    assert re.search(r"^  smtp accept +4$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^  policy accept +6$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^  example_tagger on_message +4 calls, mean ", shown.stdout, re.M)
    assert f"metrics endpoint: http://{address}/metrics" in shown.stdout
    data = status_json(proc)
    assert len(data["server"]["processes"]) == 3  # type: ignore[index]
    messages = next(f for f in data["metrics"] if f["name"] == "filterd_messages")  # type: ignore[attr-defined]
    assert {(s["labels"]["door"], s["value"]) for s in messages["samples"]} == {
        ("smtp", 4),
        ("policy", 6),
    }

    # A worker killed with SIGKILL: what it counted stays, a new one takes its place.
    os.kill(smtp_worker, signal.SIGKILL)
    wait_for("the smtp worker is gone", lambda: gone(smtp_worker), proc)
    wait_for(
        "a new smtp worker is up", lambda: len(worker_pids(proc.output_text(), "smtp")) == 2, proc
    )
    samples = scrape(address)
    assert value(samples, "filterd_messages_total", door="smtp", outcome="accept") == 4
    assert value(samples, "filterd_processes") == 3
    client = smtplib.SMTP("127.0.0.1", smtp_port, timeout=30)
    client.sendmail("alice@example.org", ["bob@example.net"], MESSAGE)
    client.quit()
    wait_for(
        "the next message is counted on top",
        lambda: (
            value(scrape(address), "filterd_messages_total", door="smtp", outcome="accept") == 5
        ),
        proc,
    )


def test_no_endpoint_unless_configured_and_status_still_answers(
    filterd_factory: FilterdFactory,
) -> None:
    proc = filterd_factory(config(free_port(), free_port()))
    wait_for("both workers are up", lambda: settled(proc), proc)
    assert status_json(proc)["server"]["metrics_address"] is None  # type: ignore[index]
    shown = status(proc)
    assert shown.returncode == 0, shown.stderr
    assert "metrics endpoint: none" in shown.stdout
    assert "processes: 3 (" in shown.stdout
    assert "metrics on" not in proc.output_text()
    socket_path = proc.workdir / "var" / "run" / "filterd.sock"
    assert socket_path.is_socket()
    assert socket_path.stat().st_mode & 0o777 == 0o660

    proc.stop()
    assert not socket_path.exists(), "the control socket is removed when filterd stops"
    assert not (proc.workdir / "var").exists(), "and the directories made for it"
    gone_server = status(proc)
    assert gone_server.returncode == 3
    assert "no server answers on the control socket" in gone_server.stderr


def test_a_second_filterd_on_the_same_control_socket_does_not_start(
    filterd_factory: FilterdFactory, tmp_path: Path
) -> None:
    control = f'[control]\nsocket = "{tmp_path / "control.sock"}"'
    first = filterd_factory(config(free_port(), free_port(), control))
    wait_for("both workers are up", lambda: settled(first), first)
    # Its listeners are bound (a connection to them succeeds) before it finds the control
    # socket taken: it may exit during FilterdProcess.start or right after.
    second = FilterdProcess(config(free_port(), free_port(), control), tmp_path / "second")
    try:
        with contextlib.suppress(RuntimeError):  # "exited with 2 during startup"
            second.start()
        assert second.wait(WAIT) == 2, second.output_text()
    finally:
        second.stop()
    assert (
        f"filterd: another filterd answers on the control socket {tmp_path / 'control.sock'} "
        "(stop it, or give this one another [control] socket)"
    ) in second.output_text()
    assert status(first).returncode == 0, "the first one still answers"


def test_the_default_control_socket_does_not_stop_a_start(filterd_factory: FilterdFactory) -> None:
    """systemd starts services in /: a default path filterd cannot create is only a warning
    (here ./var is a file); one set in the configuration must work (see the test above)."""
    workdir = filterd_factory.base_dir / "run0"
    workdir.mkdir(parents=True)
    (workdir / "var").write_text("not a directory")
    proc = filterd_factory(config(free_port(), free_port()))
    wait_for("both workers are up", lambda: settled(proc), proc)
    assert "no control socket, filterd status will not answer: " in proc.output_text()
    assert status(proc).returncode == 3
