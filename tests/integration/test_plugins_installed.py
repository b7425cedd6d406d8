"""A third-party plugin installed by entry point, run by a real filterd process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.test_process import Client
from tests.support.filterd_proc import filterd_process
from tests.support.nexthop import smtp_sink
from tests.support.postfix import free_port

CHAIN = """
[[chain]]
plugin = "example_tagger"
config = { header = "X-Example-Tag", text = "seen by the example", refuse_prefix = "nobody" }
"""


def config(port: int, next_hop: int, chain: str = CHAIN) -> str:
    return f"""
[[listen]]
address = "127.0.0.1:{port}"
hostname = "filterd.test"
[limits]
shutdown_grace = "2s"
[delivery]
method = "relay"
next_hop = "127.0.0.1:{next_hop}"
{chain}
"""


def test_example_plugin_runs_through_a_real_listener(tmp_path: Path) -> None:
    with smtp_sink(tmp_path) as sink:
        port = free_port()
        with filterd_process(config(port, sink.port), tmp_path / "run") as proc:
            client = Client(port)
            assert (client.reply() or "").startswith("220")
            client.send(b"EHLO c.example\r\n")
            client.reply()
            client.send(b"MAIL FROM:<a@b.example>\r\n")
            assert (client.reply() or "").startswith("250")
            client.send(b"RCPT TO:<nobody@d.example>\r\n")
            assert client.reply() == "550 5.7.1 <nobody@d.example>: refused by example_tagger"
            client.send(b"RCPT TO:<somebody@d.example>\r\n")
            assert (client.reply() or "").startswith("250")
            client.send(b"DATA\r\n")
            client.reply()
            client.send(b"Subject: hello\r\n\r\nbody\r\n.\r\n")
            assert (client.reply() or "").startswith("250")
            (dump,) = sink.dumps()
            log = proc.output_text()
    assert b"X-Example-Tag: seen by the example" in dump
    assert "plugin example_tagger started" in log
    assert "example_tagger: on_message continue findings=example.subject_length=5" in log


def test_unknown_plugin_is_a_config_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "filterd.toml"
    path.write_text(config(free_port(), 1, '[[chain]]\nplugin = "no_such_plugin"\n'))
    done = subprocess.run(
        [sys.executable, "-m", "filterd", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert f"{path}:11: chain[0].plugin: no plugin called 'no_such_plugin'" in done.stderr


def test_bad_plugin_config_names_the_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "filterd.toml"
    chain = '[[chain]]\nplugin = "example_tagger"\n[chain.config]\nheadr = "X-A"\n'
    path.write_text(config(free_port(), 1, chain))
    done = subprocess.run(
        [sys.executable, "-m", "filterd", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert f'{path}:13: chain[0].config.headr: unknown key "headr"' in done.stderr
    assert "did you mean header?" in done.stderr
