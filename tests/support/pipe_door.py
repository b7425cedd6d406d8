"""A private Postfix whose content filter is a pipe(8) transport: filterd's pipe door, or any
other command (the seed's ``spamc -e sendmail`` for the benchmark).

As in Postfix's FILTER_README ("simple content filter"): the inbound smtpd gets
``-o content_filter=<transport>:dummy``, the transport is a pipe(8) service running the command
as an unprivileged user, and the command reinjects through sendmail(1), whose mail pickup does
not filter again. ``<transport>_destination_recipient_limit = 1`` (one recipient per command)
unless told otherwise.

pipe(8) refuses to run a command as root, so the command runs as ``nobody``; this checkout's
Python may sit below /root, where nobody cannot go: ``filterd_command`` writes a small script
that runs filterd with a Python nobody can run (the system's, with the virtualenv's packages).

postdrop, which sendmail(1) runs, is set-gid: for any user but root it accepts a configuration
directory (MAIL_CONFIG) only when the default one's main.cf (/etc/postfix/main.cf, absent on
this machine) lists it in alternate_config_directories. So this Postfix runs in a mount
namespace of its own whose /etc/postfix has such a main.cf (``PostfixInstance``'s
``sendmail_for_all``), and the commands it runs as nobody can reinject through sendmail(1) as
on a real mail server; the reinjection smtpd is there too, for a command that hands mail on
over SMTP.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from tests.support.postfix import PostfixInstance

NOBODY = pwd.getpwnam("nobody")
SYSTEM_PYTHON = Path("/usr/bin/python3")
TRANSPORT = "filterd"


def _runs_as_nobody(python: str, prelude: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", prelude + "import filterd.cli.pipe"],
            cwd="/",
            capture_output=True,
            timeout=60,
            user=NOBODY.pw_uid,
            group=NOBODY.pw_gid,
            extra_groups=[],
        )
    except PermissionError:
        return False
    return done.returncode == 0


def filterd_command(directory: Path) -> Path:
    """A script in ``directory`` that runs ``filterd`` (its arguments passed on) as nobody can."""
    site = sysconfig.get_paths()["purelib"]  # the virtualenv's packages (editable filterd)
    prelude = f"import site, sys; site.addsitedir({json.dumps(site)}); "  # no ' for sh
    for python in (sys.executable, str(SYSTEM_PYTHON)):
        if os.geteuid() != 0 or _runs_as_nobody(python, prelude):
            break
    else:
        raise RuntimeError(f"no Python that user nobody can run filterd with (site {site})")
    code = prelude + "from filterd.cli.main import main; sys.exit(main())"
    script = directory / "filterd"
    script.write_text(f"#!/bin/sh\nexec {python} -c '{code}' \"$@\"\n")
    script.chmod(0o755)
    return script


def pipe_service(
    argv: str, *, transport: str = TRANSPORT, flags: str = "Rq", maxproc: int | None = None
) -> str:
    """The master.cf entry of a pipe(8) transport running ``argv`` as nobody, at most
    ``maxproc`` at a time (default: Postfix's default_process_limit)."""
    limit = "-" if maxproc is None else str(maxproc)
    return (
        f"{transport} unix  -       n       n       -       {limit:<7} pipe\n"
        f"  flags={flags} user={NOBODY.pw_name} null_sender=\n"
        f"  argv={argv}\n"
    )


def postfix_with_pipe(
    base_dir: Path,
    argv: str,
    *,
    transport: str = TRANSPORT,
    main_cf_extra: Mapping[str, str] | None = None,
    concurrency: int | None = None,
) -> PostfixInstance:
    """A built (not started) Postfix whose inbound smtpd filters through a pipe(8) transport
    running ``argv`` (pipe(8)'s macros ``${sender}``, ``${recipient}``... expanded by it). The
    reinjection smtpd of deploy/postfix's snippet listens on ``instance.reinject_port``.
    ``concurrency``: that many commands at a time, from the first message on (the transport's
    maxproc and its destination concurrency, without slow start); default: Postfix's."""
    instance = PostfixInstance(
        base_dir,
        main_cf_extra=main_cf_extra,
        smtpd_options={"content_filter": f"{transport}:dummy"},
        sendmail_for_all=True,
    )
    instance.build()
    # Written after build(), whose check would call a parameter of a transport that its
    # master.cf does not have yet unused.
    with (instance.config_dir / "master.cf").open("a") as master_cf:
        master_cf.write("\n" + pipe_service(argv, transport=transport, maxproc=concurrency))
    with (instance.config_dir / "main.cf").open("a") as main_cf:
        main_cf.write(f"{transport}_destination_recipient_limit = 1\n")
        if concurrency is not None:
            main_cf.write(
                f"{transport}_destination_concurrency_limit = {concurrency}\n"
                f"{transport}_initial_destination_concurrency = {concurrency}\n"
            )
    instance._backdate_config()  # as build() leaves them: no wait for a settling file
    return instance
