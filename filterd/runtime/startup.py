"""What ``filterd run`` needs from the machine, checked before serving: one line per failure.

A configuration can be valid and still not start here: a port another process listens on, a
port below 1024 without the privilege, a directory the user cannot write, a next hop whose name
does not resolve, a TLS certificate or key that does not load, an smtp or lmtp listener that
other hosts can reach with no word on who may relay through it. Each such failure is a
``StartupError`` whose text names what failed and what to do; ``filterd run`` prints it as one
line (``filterd: ...``) and exits with status 2.

``check_before_serving`` runs before the event loop starts; ``open_listeners`` binds the
listening sockets and turns the errors raised while binding into the same kind of line.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import pwd
import socket
import ssl
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import trio

from filterd.config.load import locate_key
from filterd.config.schema import Config, ListenConfig, MaildirDelivery, RelayDelivery
from filterd.config.types import Endpoint
from filterd.delivery.delivery_tables import table_problem
from filterd.errors import FilterdError
from filterd.frontdoors.smtp.relay_control import client_list, startup_problem
from filterd.runtime.listeners import open_listener, remove_socket
from filterd.sdk.tables import TableError

__all__ = ["StartupError", "check_before_serving", "open_listeners", "open_milter_socket"]

EXIT_STARTUP = 2
"""``filterd run``'s exit status when it cannot start (as for a configuration error)."""

_PRIVILEGED_PORTS = 1024
PRIVATE = 0o700
"""Mode of the Maildir root, quarantine and spool directories filterd creates: they hold other
people's mail."""


class StartupError(FilterdError):
    """``filterd run`` cannot start; ``str()`` is the line to show (without ``filterd: ``)."""


def check_before_serving(
    config: Config, *, acting_as: Callable[[], AbstractContextManager[None]] = nullcontext
) -> None:
    """Everything that can be checked before binding: directories, the next hop's name,
    the milter listener's address. ``acting_as``: with the ids filterd will serve with
    (``Privileges.acting_as``), for all but the addresses, which are bound before the switch."""
    with acting_as():
        _check_files(config)
    for listen in config.listen:
        if listen.protocol == "milter":
            bindable(listen.address)


def _check_files(config: Config) -> None:
    """Directories filterd writes, the next hop's name, the TLS files it loads."""
    takes_mail = any(listen.protocol in ("smtp", "lmtp") for listen in config.listen)
    spools = any(listen.protocol != "policy" for listen in config.listen)
    if takes_mail and isinstance(config.delivery, MaildirDelivery):
        delivery = config.delivery
        writable_directory(delivery.base, "the Maildir root", delivery.base_key, mode=PRIVATE)
    problem = table_problem(config.delivery) if takes_mail and config.delivery else None
    if problem is not None:
        line = locate_key(config.source, ("delivery", problem.key, problem.index))
        where = f"{config.source}:{line}" if line is not None else config.source
        raise StartupError(f"{where}: {problem}")
    if takes_mail and "quarantine" in config.model_fields_set:
        # Only when configured: the default (relative to the working directory) is written
        # only if a plugin quarantines, and a failure then is a 4xx, not lost mail.
        writable_directory(
            config.quarantine.root, "the quarantine", "quarantine.root", mode=PRIVATE
        )
    if spools and config.limits.spool_dir is not None:
        writable_directory(
            config.limits.spool_dir, "the spool directory", "limits.spool_dir", mode=PRIVATE
        )
    if takes_mail and isinstance(config.delivery, RelayDelivery):
        resolvable_next_hop(config.delivery.next_hop)
        if config.delivery.starttls != "never" and config.delivery.tls_ca_file is not None:
            loadable_ca_file(config.delivery.tls_ca_file)
    for index, listen in enumerate(config.listen):
        if (relay_problem := startup_problem(listen, index)) is not None:
            raise StartupError(relay_problem)
        if listen.protocol in ("smtp", "lmtp"):
            openable_tables(config, index)
        if listen.tls_cert is not None and listen.tls_key is not None:
            loadable_certificate(listen.tls_cert, listen.tls_key, f"listen[{index}]")


async def open_listeners(listens: Sequence[ListenConfig]) -> list[trio.SocketListener]:
    """Bind every listener's socket, in order; a failure closes those already bound."""
    opened: list[trio.SocketListener] = []
    try:
        for listen in listens:
            try:
                opened.append(await open_listener(listen.address))
            except OSError as exc:
                raise StartupError(cannot_listen(listen.address, exc)) from None
    except BaseException:
        for listen, listener in zip(listens, opened, strict=False):
            listener.socket.close()
            if listen.address.kind == "unix":
                remove_socket(listen.address.path)
        raise
    return opened


def open_milter_socket(address: Endpoint) -> socket.socket:
    """The listening socket of a milter listener with several processes, bound as libmilter
    binds it (``mi_milteropen``: IPv4 unless an IPv6 address, SO_REUSEADDR, a stale unix socket
    removed first), and non-blocking: every process's libmilter waits for a connection on it
    and then accepts, and the processes that lose the race get EAGAIN, which libmilter retries,
    instead of blocking in ``accept``."""
    try:
        if address.kind == "unix":
            remove_socket(address.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockaddr: str | tuple[object, ...] = address.path
        else:
            family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
            infos = socket.getaddrinfo(
                address.host, address.port, family=family, type=socket.SOCK_STREAM
            )
            family, kind, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except OSError as exc:
        raise StartupError(cannot_listen(address, exc)) from None
    try:
        sock.bind(sockaddr)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise StartupError(cannot_listen(address, exc)) from None
    sock.setblocking(False)
    return sock


# --- listening sockets --------------------------------------------------------------------------


def cannot_listen(address: Endpoint, exc: OSError) -> str:
    """The line for a socket that cannot be bound (or, for a host name, resolved)."""
    what = f"cannot listen on {address}"
    if isinstance(exc, socket.gaierror):
        return (
            f'{what}: cannot resolve "{address.host}": {_reason(exc)} (give an IP address, or a '
            "name this machine resolves: /etc/hosts or DNS)"
        )
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        if address.kind == "tcp" and 0 < address.port < _PRIVILEGED_PORTS:
            fix = "ports below 1024 need root or CAP_NET_BIND_SERVICE"
        elif address.kind == "unix":
            fix = f"let user {_user()} write to {_parent(address.path)}, or choose another path"
        else:
            fix = "a security policy forbids this port: choose another one"
        return f"{what}: permission denied ({fix})"
    if code == errno.EADDRINUSE:
        if address.kind == "unix":
            return (
                f"{what}: a file that is not a socket is in the way (remove it, or choose "
                "another path)"
            )
        return (
            f"{what}: address already in use (another process listens there: stop it, or give "
            "this [[listen]] another port)"
        )
    if code == errno.EADDRNOTAVAIL:
        return (
            f"{what}: address not available (no interface of this machine has "
            f"{address.host}: give one of its addresses, such as 127.0.0.1)"
        )
    if code in (errno.ENOENT, errno.ENOTDIR) and address.kind == "unix":
        return f"{what}: {_parent(address.path)} is not a directory (create it first)"
    return f"{what}: {_reason(exc)} (check the address in [[listen]])"


def bindable(address: Endpoint) -> None:
    """Bind a throwaway socket where a listener will bind (libmilter binds its own later)."""
    if address.kind == "unix":
        try:
            _probe_write(Path(_parent(address.path)))
        except OSError as exc:
            raise StartupError(cannot_listen(address, exc)) from None
        if os.path.lexists(address.path) and not Path(address.path).is_socket():
            raise StartupError(cannot_listen(address, OSError(errno.EADDRINUSE, "in use")))
        if _someone_listens(address.path):
            raise StartupError(
                f"cannot listen on {address}: another process listens on this socket (stop it, "
                "or give this [[listen]] another path)"
            )
        return
    # libmilter binds IPv6 only for an IPv6 address ("inet6:"), anything else as IPv4.
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, family=family, type=socket.SOCK_STREAM
        )
        family, kind, proto, _, sockaddr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
    except OSError as exc:
        raise StartupError(cannot_listen(address, exc)) from None


# --- directories and the next hop ---------------------------------------------------------------


def writable_directory(path: Path, what: str, key: str, *, mode: int = 0o777) -> None:
    """Create ``path`` if it is missing (``mode``, less the umask) and check that a file can be
    created in it."""
    shown = f"{path} ({key})" if path.is_absolute() else f'{path.absolute()} ({key} = "{path}")'
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        _probe_write(path)
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            reason = "it exists and is not a directory"
        elif exc.errno == errno.ENOTDIR:
            reason = "a part of its path is a file, not a directory"
        else:
            reason = _reason(exc)
        raise StartupError(
            f"cannot write to {what} {shown}: {reason} (give a directory that user "
            f"{_user()} can create and write to)"
        ) from None


def openable_tables(config: Config, index: int) -> None:
    """The lookup tables in a listener's ``mynetworks`` open (their files read and checked)."""
    try:
        client_list(config.listen[index].mynetworks)
    except TableError as exc:
        line = locate_key(config.source, ("listen", index, "mynetworks"))
        where = f"{config.source}:{line}" if line is not None else config.source
        raise StartupError(f"{where}: listen[{index}].mynetworks: {exc}") from None


def resolvable_next_hop(next_hop: Endpoint) -> None:
    """A next hop named by a host name must resolve (an address or a unix socket need not)."""
    if next_hop.kind != "tcp" or _is_address(next_hop.host):
        return
    try:
        socket.getaddrinfo(next_hop.host, next_hop.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN:
            fix = (
                "no DNS server answered: is the network up? Start filterd after it "
                "(After=network-online.target), or give the next hop's IP address"
            )
        else:
            fix = "give its IP address, or a name this machine resolves: /etc/hosts or DNS"
        raise StartupError(
            f'cannot resolve the next hop "{next_hop.host}" (delivery.next_hop): {_reason(exc)} '
            f"({fix})"
        ) from None


# --- TLS files ----------------------------------------------------------------------------------


def loadable_certificate(cert: Path, key: Path, table: str) -> None:
    """A listener's STARTTLS certificate chain and key load (as the listener will load them)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot load the TLS certificate {cert} and key {key} ({table}.tls_cert, "
            f"{table}.tls_key): {_tls_reason(exc)} (give a PEM certificate chain and the PEM "
            "private key that goes with it)"
        ) from None


def loadable_ca_file(path: Path) -> None:
    """The relay's CA bundle loads."""
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot load the CA file {path} (delivery.tls_ca_file): {_tls_reason(exc)} (give "
            "a PEM bundle of CA certificates)"
        ) from None


def _tls_reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"not usable PEM ({exc.reason or exc.library or 'unreadable'})"
    return _reason(exc)


def _someone_listens(path: str) -> bool:
    """Whether a process accepts connections on the unix socket ``path`` (libmilter would
    remove it and take the path over)."""
    if not Path(path).is_socket():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _probe_write(directory: Path) -> None:
    fd, name = tempfile.mkstemp(prefix=".filterd-startup-check-", dir=directory)
    os.close(fd)
    os.unlink(name)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _reason(exc: OSError) -> str:
    text = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    text = text or type(exc).__name__
    return text[0].lower() + text[1:]


def _parent(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def _user() -> str:
    uid = os.geteuid()
    try:
        return f'"{pwd.getpwuid(uid).pw_name}"'
    except KeyError:
        return f"uid {uid}"
