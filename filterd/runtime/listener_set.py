"""The listening sockets of a running filterd, which outlive a configuration: a reload keeps the
sockets whose address it keeps, opens the new ones before it commits and closes the ones given
up, while each new connection goes to the generation then current (``filterd.runtime.generation``).

- **smtp, lmtp, policy** (``ListenerSet``): one socket and one accept loop per listener, named by
  its address (``listener_keys``: a listener on port 0, which gets a port of its own, also by its
  place among those with the same address). An accepted connection is handed to the current
  generation's handler for that name, in that generation's nursery, so it runs with that
  generation's chain to its end whatever reloads come meanwhile.
- **milter** (``MilterDoor``): libmilter binds once per process and keeps running across
  reloads; a reload only gives it the new chain (``MilterBridge.swap``). With several
  processes the door keeps the shared listening socket, the shared connection count and its
  free slots, for the worker processes each generation starts.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import trio

from filterd.config.schema import MAX_PROCESSES, Config, ListenConfig
from filterd.frontdoors.milter.bridge import MilterBridge
from filterd.maillog import MailLog
from filterd.runtime.listeners import accept_each, bound_address, remove_socket
from filterd.runtime.startup import open_listeners, open_milter_socket
from filterd.runtime.tally import SharedTally, TallySlots

__all__ = ["ListenerInfo", "ListenerSet", "Listening", "MilterDoor", "listener_keys"]

log = MailLog("main")

TALLY_SLOTS = 4 * MAX_PROCESSES
"""Counters of a milter listener's shared count: the workers of the configuration in force and
of older ones still finishing their connections after reloads."""


@dataclass
class ListenerInfo:
    config: ListenConfig
    address: str  # as bound (the real port when 0 was asked for)


def listener_keys(listens: Sequence[ListenConfig]) -> list[str]:
    """A name for each listener that the next configuration's can be matched with: its address
    (unique, but for port 0), then ``#n`` for the n-th listener with the same one."""
    seen: Counter[str] = Counter()
    keys = []
    for listen in listens:
        address = str(listen.address)
        seen[address] += 1
        keys.append(address if seen[address] == 1 else f"{address}#{seen[address]}")
    return keys


class Dispatcher(Protocol):
    """What the accept loops hand connections to: the current generation."""

    def dispatch(self, key: str, stream: trio.SocketStream) -> None:
        """Start serving ``stream``, accepted on the listener named ``key``."""
        ...


@dataclass(eq=False)
class Listening:
    """One bound socket of an smtp, lmtp or policy listener, and its accept loop."""

    key: str
    config: ListenConfig
    listener: trio.SocketListener
    address: str  # as bound (the real port when 0 was asked for)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)  # its accept loop has ended

    @property
    def info(self) -> ListenerInfo:
        return ListenerInfo(self.config, self.address)

    def close(self) -> None:
        self.listener.socket.close()
        if self.config.address.kind == "unix":
            remove_socket(self.config.address.path)


class ListenerSet:
    """The smtp, lmtp and policy listeners' sockets, by ``listener_keys`` name."""

    def __init__(self, listenings: Sequence[Listening]) -> None:
        self.by_key = {listening.key: listening for listening in listenings}
        self.generation: Dispatcher | None = None  # where new connections go
        self._nursery: trio.Nursery | None = None
        self._stopping = trio.Event()

    @classmethod
    async def bind(cls, config: Config) -> ListenerSet:
        """Bind every smtp, lmtp and policy listener of ``config`` (``StartupError`` if one
        cannot be: those already bound are closed)."""
        return cls(await _bind(config.listen, set()))

    @property
    def infos(self) -> list[ListenerInfo]:
        return [listening.info for listening in self.by_key.values()]

    async def bind_new(self, config: Config) -> list[Listening]:
        """Bind the listeners of ``config`` that are not bound yet (for a reload, which adds
        them with ``replace``; ``StartupError`` if one cannot be bound, nothing kept)."""
        return await _bind(config.listen, set(self.by_key))

    def given_up(self, config: Config) -> list[Listening]:
        """The sockets that ``config`` no longer has."""
        kept = set(_keys(config.listen))
        return [each for key, each in self.by_key.items() if key not in kept]

    async def accept(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run an accept loop per socket until ``stop``; a reload adds and ends loops."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for listening in self.by_key.values():
                nursery.start_soon(self._accept, listening)
            task_status.started()
            await self._stopping.wait()  # open for the loops a reload adds, even with none

    async def stop(self) -> None:
        """Stop accepting on every socket and close them (the sessions go on)."""
        self._stopping.set()
        for listening in self.by_key.values():
            listening.scope.cancel()
        for listening in self.by_key.values():
            await listening.done.wait()
            await listening.listener.aclose()

    async def stop_given_up(self, config: Config) -> list[Listening]:
        """Before a reload switches to ``config``: end the accept loops of the sockets it no
        longer has (once this returns, none of them hands over another connection)."""
        gone = self.given_up(config)
        for listening in gone:
            listening.scope.cancel()
        for listening in gone:
            await listening.done.wait()
        return gone

    def replace(self, config: Config, new: Sequence[Listening], gone: Sequence[Listening]) -> None:
        """A reload switched to ``config``: close the sockets given up (``stop_given_up``), take
        the new ones (``bind_new``) and start their accept loops."""
        assert self._nursery is not None, "accept() runs"
        for listening in gone:
            del self.by_key[listening.key]
            listening.close()
            log.plain(f"no longer listening on {listening.address}")
        for key, listen in zip(_keys(config.listen), _sockets(config.listen), strict=True):
            if key in self.by_key:
                self.by_key[key].config = listen  # the same address; maybe other settings
        for listening in new:
            self.by_key[listening.key] = listening
            self._nursery.start_soon(self._accept, listening)
            log.plain(f"listening on {listening.address} ({listening.config.protocol})")

    def close(self) -> None:
        """Close every socket (closed already, unless serving never began) and remove the unix
        sockets."""
        for listening in self.by_key.values():
            listening.close()

    async def _accept(self, listening: Listening) -> None:
        try:
            with listening.scope:
                await accept_each(listening.listener, partial(self._dispatch, listening.key))
        finally:
            listening.done.set()

    def _dispatch(self, key: str, stream: trio.SocketStream) -> None:
        assert self.generation is not None, "a generation serves before accepting begins"
        self.generation.dispatch(key, stream)


def _sockets(listens: Sequence[ListenConfig]) -> list[ListenConfig]:
    return [listen for listen in listens if listen.protocol != "milter"]


def _keys(listens: Sequence[ListenConfig]) -> list[str]:
    return listener_keys(_sockets(listens))


async def _bind(listens: Sequence[ListenConfig], bound: set[str]) -> list[Listening]:
    wanted = [
        (key, listen)
        for key, listen in zip(_keys(listens), _sockets(listens), strict=True)
        if key not in bound
    ]
    opened = await open_listeners([listen for _, listen in wanted])
    return [
        Listening(key, listen, listener, bound_address(listener, listen.address))
        for (key, listen), listener in zip(wanted, opened, strict=True)
    ]


@dataclass(eq=False)
class MilterDoor:
    """The milter listener (at most one: libmilter runs once per process). With several
    processes, the socket they all accept from (bound here), their shared connection count and
    its free slots; with one, libmilter binds the address itself. ``bridge``: where the main
    process's libmilter takes its chain, once it runs."""

    config: ListenConfig
    listening: socket.socket | None = None
    tally: SharedTally | None = None
    slots: TallySlots | None = None
    bridge: MilterBridge | None = None

    @classmethod
    def of(cls, config: Config, *, bind: bool = False) -> MilterDoor | None:
        """The milter listener of ``config``, its shared socket bound (``StartupError``): with
        several processes, or with ``bind`` (before privileges are dropped: libmilter then
        accepts from it instead of binding the address itself)."""
        listen = next((each for each in config.listen if each.protocol == "milter"), None)
        if listen is None:
            return None
        door = cls(listen)
        if listen.process_count > 1 or bind:
            door.listening = open_milter_socket(listen.address)
        if listen.process_count > 1:
            door.tally = SharedTally.create(TALLY_SLOTS)
            door.slots = TallySlots(TALLY_SLOTS)
        return door

    @property
    def info(self) -> ListenerInfo:
        return ListenerInfo(self.config, str(self.config.address))

    def copy(self) -> socket.socket | None:
        """A copy of the shared socket for libmilter or a worker pool (None with one process,
        or once stopping)."""
        if self.listening is None or self.listening.fileno() < 0:
            return None
        return self.listening.dup()

    def stop_accepting(self) -> None:
        """Stopping: close this copy of the shared socket (libmilter and the workers close
        theirs), so that once they are all closed new connections are refused."""
        if self.listening is not None:
            self.listening.close()

    def close(self) -> None:
        """filterd has stopped: close the shared count, remove the unix socket (libmilter has
        closed its copy, and bound it itself with one process)."""
        self.stop_accepting()
        if self.tally is not None:
            self.tally.close()
        if self.config.address.kind == "unix":
            remove_socket(self.config.address.path)
