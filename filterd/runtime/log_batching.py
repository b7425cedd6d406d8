"""One write(2) per turn of the event loop for the log's lines, not one per line.

At ``info`` filterd writes a few lines per message; to a file (stderr) that was one system
call each, now one per loop turn for all of them (docs/benchmarks.md: what it saves).
``LineBatching``, a trio instrument given to ``trio.run`` by
``filterd run`` and by each worker process, holds the loop thread's lines
(``filterd.maillog.batch_lines``) and writes them before each wait for I/O
(``before_io_wait``): a line reaches the file in the same turn of the loop that wrote it,
before filterd waits for anything, and when the loop ends (``after_run``: a stop by SIGTERM,
a crash) the held lines are written before anything else. Only a process killed outright
(SIGKILL) can lose the lines of the turn it was in; the mail is never at stake (the log is
not the queue). Lines from other threads (a plugin's) are written at once, as before.
"""

from __future__ import annotations

import trio

from filterd.maillog import batch_lines, flush_lines, unbatch_lines


class LineBatching(trio.abc.Instrument):
    """Batch the loop thread's log lines; flush them once per loop turn and at the end."""

    def before_run(self) -> None:
        batch_lines()

    def before_io_wait(self, timeout: float) -> None:
        del timeout
        flush_lines()

    def after_run(self) -> None:
        unbatch_lines()
