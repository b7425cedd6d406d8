"""The connection count that a milter listener's processes share (``filterd.runtime.tally``);
across real processes: tests/integration/test_milter_processes.py."""

from __future__ import annotations

import os

import pytest

from filterd.runtime.tally import SharedTally


def test_every_process_counts_towards_the_limit() -> None:
    main = SharedTally.create(3)
    worker = SharedTally(os.dup(main.fd), 2)  # as a worker attaches to the inherited memfd
    try:
        assert main.admit(3) is None
        assert worker.admit(3) is None
        assert worker.admit(3) is None
        assert main.total() == worker.total() == 3
        assert main.admit(3) == 3  # refused: three in all
        worker.release()
        assert main.admit(3) is None  # the worker's place is free again
        assert main.admit(3) == 3
    finally:
        worker.close()
        main.close()


def test_a_dead_workers_connections_are_cleared() -> None:
    main = SharedTally.create(2)
    worker = SharedTally(os.dup(main.fd), 1)
    try:
        assert worker.admit(2) is None
        assert worker.admit(2) is None
        assert main.admit(2) == 2
        main.clear(1)  # the worker died: its connections died with it
        assert main.admit(2) is None
        assert main.total() == 1
    finally:
        worker.close()
        main.close()


def test_a_count_never_goes_below_zero() -> None:
    tally = SharedTally.create(1)
    try:
        tally.release()
        assert tally.total() == 0
    finally:
        tally.close()


def test_a_slot_beyond_the_count_is_refused() -> None:
    main = SharedTally.create(2)
    try:
        with pytest.raises(ValueError, match="no slot 2"):
            SharedTally(main.fd, 2)
    finally:
        main.close()
