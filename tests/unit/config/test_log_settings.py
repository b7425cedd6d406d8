"""``[log]``: where the lines go, and the errors an administrator can act on."""

from __future__ import annotations

from pathlib import Path

from filterd.config.load import load_config
from tests.unit.config.test_load import MINIMAL, only_problem, write


def test_log_settings_load(tmp_path: Path) -> None:
    text = (
        '[log]\nlevel = "warning"\ndestination = "syslog"\nfacility = "local3"\n'
        'socket = "/run/other-log"\nsyslog_name = "filterd-in"\n' + MINIMAL
    )
    log = load_config(write(tmp_path, text)).log
    assert (log.level, log.destination, log.facility) == ("warning", "syslog", "local3")
    assert (log.socket, log.syslog_name) == (Path("/run/other-log"), "filterd-in")


def test_a_socket_without_a_socket_destination_is_refused(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, '[log]\nsocket = "/dev/log"\n' + MINIMAL)
    assert (error.line, error.key) == (2, "log.socket")
    assert error.message == (
        'socket is for destination = "syslog" or "journal", and destination is "stderr"'
    )
    assert error.hint == 'set destination = "syslog" (or "journal"), or remove socket'


def test_a_program_name_that_would_break_the_lines_is_refused(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, '[log]\nsyslog_name = "filterd in"\n' + MINIMAL)
    assert (error.line, error.key) == (2, "log.syslog_name")
    assert "letters, digits" in error.message
    assert error.hint == 'write a name such as syslog_name = "filterd-in"'


def test_an_unknown_destination_lists_the_valid_ones(tmp_path: Path) -> None:
    _, error = only_problem(tmp_path, '[log]\ndestination = "syslogd"\n' + MINIMAL)
    assert (error.line, error.key) == (2, "log.destination")
    assert "syslog" in error.message
    assert "journal" in error.message
