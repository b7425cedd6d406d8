"""A count of connections kept across processes: ``max_connections`` of a milter listener whose
processes all accept from one socket (so no single process sees every connection).

The count lives in a small shared memory file (``memfd``) that the main process creates and
passes to its workers: one 8-byte counter per process, which only that process changes.
Admitting a connection reads every counter and adds one to its own under an ``fcntl`` lock on
the file, so two processes never both take the last place; POSIX record locks belong to a
process, so a thread lock keeps the threads of one process apart, and a process that dies
holding the lock releases it. The main process clears the counter of a worker that died: its
connections died with it.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading

__all__ = ["SharedTally", "TallySlots"]

_COUNTER = struct.Struct("=q")


class SharedTally:
    """One process's view of the shared count (``slot``: 0 in the main process, n in worker n)."""

    def __init__(self, fd: int, slot: int) -> None:
        self.fd = fd
        self.slot = slot
        size = os.fstat(fd).st_size
        if size < (slot + 1) * _COUNTER.size:
            raise ValueError(f"the shared count has no slot {slot}")
        self.slots = size // _COUNTER.size
        self._map = mmap.mmap(fd, size)
        self._threads = threading.Lock()

    @classmethod
    def create(cls, slots: int) -> SharedTally:
        """A new count for ``slots`` processes, all at 0; this process has slot 0."""
        fd = os.memfd_create("filterd-connections", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, slots * _COUNTER.size)
            return cls(fd, 0)
        except BaseException:
            os.close(fd)
            raise

    def admit(self, limit: int) -> int | None:
        """Count one more connection of this process unless every process together has
        ``limit`` already: ``None`` when counted, else how many they have."""
        with self._threads, _Locked(self.fd):
            total = self.total()
            if total >= limit:
                return total
            self._add(self.slot, 1)
            return None

    def release(self) -> None:
        """One connection of this process has ended."""
        with self._threads, _Locked(self.fd):
            self._add(self.slot, -1)

    def clear(self, slot: int) -> None:
        """The process of ``slot`` is gone: its connections no longer count."""
        with self._threads, _Locked(self.fd):
            _COUNTER.pack_into(self._map, slot * _COUNTER.size, 0)

    def total(self) -> int:
        """Connections open in every process."""
        return sum(count for (count,) in _COUNTER.iter_unpack(self._map))

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)

    def _add(self, slot: int, delta: int) -> None:
        offset = slot * _COUNTER.size
        (count,) = _COUNTER.unpack_from(self._map, offset)
        _COUNTER.pack_into(self._map, offset, max(0, count + delta))


class _Locked:
    """An exclusive ``fcntl`` lock on the whole file while in the ``with`` block."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)


class TallySlots:
    """The slots of a shared count that no process holds. A worker takes one when it starts and
    gives it back once it has exited and its count is cleared, so that after a reload the
    workers of the new configuration never share a slot with those of the old one that are
    still finishing their connections. Slot 0 is the main process's."""

    def __init__(self, slots: int) -> None:
        self._free = list(range(slots - 1, 0, -1))  # taken from the end: 1, 2, 3...

    def take(self) -> int | None:
        """A free slot, or None when every one is held."""
        return self._free.pop() if self._free else None

    def give_back(self, slot: int) -> None:
        self._free.append(slot)
        self._free.sort(reverse=True)
