"""Maildir files on disk, blocking (run in a worker thread): the steps of Postfix's virtual(8)
(src/virtual/maildir.c), and the shared primitives the quarantine uses too.

One delivery, ``deliver_file``:

1. create ``tmp/<sec>.P<pid>Q<n>.<host>`` (O_EXCL, 0600; ``tmp/`` made 0700 when missing).
   virtual(8) writes ``<sec>.P<pid>.<host>``, one delivery per process at a time; filterd
   delivers from several threads of one process, so ``Q<n>`` keeps their tmp names apart;
2. write the header lines and the message with LF line ends (mail_copy's "\\n"), fsync;
3. hard-link it to ``new/<sec>.V<st_dev hex>I<st_ino hex>M<usec>.<host>`` (``new/`` and
   ``cur/`` made 0700 when missing), fsync ``new/``; remove the tmp name.

Run as root with an owner (uid/gid from the maps), the file and every directory created for
it are given to that owner (``chown``): virtual(8) writes as the recipient's uid instead, which
a threaded process cannot do per thread.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filterd.model.spool import Spool

__all__ = [
    "PRIVATE_DIRECTORY",
    "FileJob",
    "MaildirWriteError",
    "deliver_file",
    "fsync_dir",
    "lf_line_ends",
    "mailbox_usage",
    "private_directories",
    "unique_name",
    "write_to_maildirs",
]

PRIVATE_DIRECTORY = 0o700
"""Mode of every directory filterd creates on the way to a Maildir: they hold other people's
mail (the files are 0600)."""

_counter = itertools.count()
HOSTNAME = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
"""The right part of Maildir names (with "/" and ":" written as the Maildir spec says)."""


class MaildirWriteError(Exception):
    """A delivery that failed: ``errno`` decides the reply, ``step`` says where, as virtual(8)
    words it (``create maildir file``, ``error writing message``, ``link to``)."""

    def __init__(self, step: str, error: OSError, path: Path | None = None) -> None:
        super().__init__(step, error)
        self.step = step
        self.errno = error.errno
        self.strerror = error.strerror or str(error)
        self.path = path


@dataclass(frozen=True, slots=True)
class FileJob:
    maildir: Path  # the Maildir (or the Maildir++ folder) the file goes to
    header: bytes  # Return-Path, X-Original-To, Delivered-To, LF-ended
    spool: Spool
    owner: tuple[int, int] | None = None  # (uid, gid), -1 for "leave as is"
    size_limit: int = 0  # mailbox_limit: 0 none
    quota: int = 0  # mailbox_quota of the whole mailbox: 0 none
    quota_root: Path | None = None  # the mailbox whose usage counts (the folder's parent)
    folder_marker: bool = False  # a Maildir++ folder: it gets a ``maildirfolder`` file


def unique_name() -> str:
    """``time.MusecPpidQn.host``: the name of a quarantine file."""
    now = time.time()
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{HOSTNAME}"


def private_directories(path: Path) -> list[Path]:
    """``mkdir -p -m 0700``: each missing directory of ``path`` is created 0700 (less the
    umask); those that exist are left as they are. The directories created, top first."""
    if path.is_dir():
        return []
    missing = [path, *itertools.takewhile(lambda parent: not parent.is_dir(), path.parents)]
    created = []
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIRECTORY)
            created.append(directory)
        except FileExistsError:
            if not directory.is_dir():
                raise
    return created


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lf_line_ends(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The message with each CRLF written LF, as Postfix stores and delivers it (a CR
    that ends a chunk waits for the next one)."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        carry = b"\r" if data.endswith(b"\r") else b""
        if carry:
            data = data[:-1]
        yield data.replace(b"\r\n", b"\n")
    if carry:
        yield carry


_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
_RETURN_PATH = re.compile(rb"return-path[ \t]*:", re.IGNORECASE)


def without_return_path(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The message without the Return-Path: fields of its header section (continuation lines
    too), as Postfix's cleanup(8) drops them: the delivery adds the one that counts. The header
    section ends at the first line that is neither a field nor a continuation (the empty line);
    from there on the chunks pass as they are."""
    pending = b""
    dropping = False
    in_header = True
    for chunk in chunks:
        if not in_header:
            yield chunk
            continue
        data = pending + chunk
        out = bytearray()
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                pending = data[start:]
                break
            line = data[start : end + 1]
            if line[:1] in (b" ", b"\t"):
                if not dropping:
                    out += line
            elif _FIELD.match(line):
                dropping = _RETURN_PATH.match(line) is not None
                if not dropping:
                    out += line
            else:
                in_header = False
                out += data[start:]
                pending = b""
                break
            start = end + 1
        if out:
            yield bytes(out)
    if pending:  # a last line without a line end, still in the header section
        continuation = pending[:1] in (b" ", b"\t")
        if not (dropping if continuation else _RETURN_PATH.match(pending)):
            yield pending


def mailbox_usage(mailbox: Path) -> int:
    """Bytes in the messages of a Maildir and of its Maildir++ folders (new/ and cur/)."""
    total = 0
    folders = [mailbox]
    try:
        folders += [entry for entry in mailbox.iterdir() if entry.name.startswith(".")]
    except FileNotFoundError:
        return 0
    for folder in folders:
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(folder / sub))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # moved or removed meanwhile
    return total


def _give(paths: Iterable[Path], owner: tuple[int, int] | None) -> None:
    if owner is not None:
        for path in paths:
            os.chown(path, *owner)


def _make(path: Path, owner: tuple[int, int] | None) -> None:
    _give(private_directories(path), owner)


def deliver_file(job: FileJob) -> str:
    """One Maildir file as virtual(8) writes it (see the module); its name in ``new/``.
    Raises ``MaildirWriteError``; nothing is left in ``tmp/`` then."""
    now = time.time()
    seconds, usec = int(now), int(now % 1 * 1e6)
    tmp_dir, new_dir = job.maildir / "tmp", job.maildir / "new"
    tmp = tmp_dir / f"{seconds}.P{os.getpid()}Q{next(_counter)}.{HOSTNAME}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:
            _make(tmp_dir, job.owner)
            fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise MaildirWriteError("create maildir file", exc, tmp) from exc
    try:
        try:
            written = _write(fd, job, tmp)
            stat = os.fstat(fd)
        finally:
            os.close(fd)
        _check_size(job, written, tmp)
        name = f"{seconds}.V{stat.st_dev:x}I{stat.st_ino:x}M{usec}.{HOSTNAME}"
        target = new_dir / name
        try:
            try:
                os.link(tmp, target)
            except FileNotFoundError:
                _make(job.maildir / "cur", job.owner)
                _make(new_dir, job.owner)
                os.link(tmp, target)
            if job.folder_marker:
                _folder_marker(job)
            fsync_dir(new_dir)
        except OSError as exc:
            raise MaildirWriteError("link to", exc, target) from exc
        return name
    finally:
        tmp.unlink(missing_ok=True)


def _write(fd: int, job: FileJob, tmp: Path) -> int:
    if job.owner is not None:
        os.fchown(fd, *job.owner)
    written = 0
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(job.header)
            written += len(job.header)
            for chunk in without_return_path(lf_line_ends(job.spool.chunks())):
                out.write(chunk)
                written += len(chunk)
                if job.size_limit and written > job.size_limit:
                    raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
            out.flush()
            os.fsync(fd)
    except OSError as exc:
        raise MaildirWriteError("error writing message", exc, tmp) from exc
    return written


def _check_size(job: FileJob, size: int, tmp: Path) -> None:
    """The per-mailbox quota: the mailbox's messages and this one within ``job.quota``."""
    if job.quota and mailbox_usage(job.quota_root or job.maildir) + size > job.quota:
        error = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        raise MaildirWriteError("error writing message", error, tmp)


def _folder_marker(job: FileJob) -> None:
    marker = job.maildir / "maildirfolder"
    if not marker.exists():
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        _give([marker], job.owner)


# --- the quarantine's writer (one file, linked into several Maildirs, content as received) --


def _ensure_maildir(path: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        private_directories(path / sub)


def write_to_maildirs(mailboxes: list[Path], spool: Spool, header: bytes) -> list[str]:
    """Blocking (run it in a thread): ``header`` + the message into every Maildir, written
    once into the first one's ``tmp/``, fsynced, linked into every ``new/``. The file names."""
    for box in mailboxes:
        _ensure_maildir(box)
    name = unique_name()
    size = len(header) + spool.total_size
    tmp = mailboxes[0] / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=True) as out:
            out.write(header)
            for chunk in spool.chunks():
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        names = []
        for box in mailboxes:
            final = f"{name},S={size}"
            target = box / "new" / final
            try:
                os.link(tmp, target)
            except FileExistsError:
                final = f"{unique_name()},S={size}"
                target = box / "new" / final
                os.link(tmp, target)
            fsync_dir(box / "new")
            names.append(final)
        return names
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
