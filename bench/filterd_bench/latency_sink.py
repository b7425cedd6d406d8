"""The latency pass's next hop: a minimal SMTP sink that stamps every message (see ``latency``).

    python latency_sink.py PORT STAMPS_FILE MAX_SECONDS [STATUS_FILE]

Listens on 127.0.0.1:PORT only; answers 250 to everything (354 to DATA, 221 to QUIT), offers
PIPELINING, and for each message keeps (envelope sender, monotonic time the end of data arrived,
monotonic time just before its 250 is sent). On SIGTERM or SIGINT, or after MAX_SECONDS, it
writes the stamps to STAMPS_FILE as JSON ({sender: [dot, reply]}) and exits. Standard library
only, so it runs as a plain script in its own process (its own interpreter lock: the client's
stamps are not delayed by the sink's work). At most MAX_STAMPS messages are kept.

With STATUS_FILE (bench/soak.py), each SIGUSR1 writes it (a temporary file renamed into place) as
JSON: {"dumps": how many SIGUSR1 so far, "messages": every message received, "stamps": as above},
and the sink goes on serving.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

MAX_STAMPS = 1_000_000
READ_LIMIT = 64 * 1024 * 1024  # the largest message it takes
EHLO_REPLY = b"250-latency-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
END_OF_DATA = b"\r\n.\r\n"


class Sink:
    def __init__(self) -> None:
        self.stamps: dict[str, tuple[float, float]] = {}
        self.messages = 0  # every end of data answered, stamped or not
        self.dumps = 0

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 latency-sink ESMTP\r\n")
        sender = ""
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"LHLO"):
                    writer.write(EHLO_REPLY)
                elif verb == b"MAIL":
                    sender = _address(line)
                    writer.write(b"250 2.1.0 Ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    await reader.readuntil(END_OF_DATA)
                    dot = time.monotonic()
                    self.messages += 1
                    if len(self.stamps) < MAX_STAMPS:
                        # stamped before the write (which sends at once: the buffer is empty),
                        # so the client's stamp of filterd's reply can only come later
                        self.stamps[sender] = (dot, time.monotonic())
                    writer.write(b"250 2.0.0 Ok: queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    break
                else:  # HELO, RCPT, RSET, NOOP, XFORWARD, ...
                    writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def write_status(self, path: Path) -> None:
        self.dumps += 1
        status = {"dumps": self.dumps, "messages": self.messages, "stamps": self.stamps}
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(status))
        temporary.replace(path)


def _address(line: bytes) -> str:
    start = line.find(b"<")
    end = line.find(b">", start + 1)
    return line[start + 1 : end].decode(errors="replace") if 0 <= start < end else ""


async def serve(sink: Sink, port: int, max_seconds: float, status: Path | None = None) -> None:
    """Until SIGTERM/SIGINT or ``max_seconds``; SIGUSR1 writes ``status``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if status is not None:
        loop.add_signal_handler(signal.SIGUSR1, sink.write_status, status)
    server = await asyncio.start_server(sink.session, "127.0.0.1", port, limit=READ_LIMIT)
    try:
        await asyncio.wait_for(stop.wait(), max_seconds)
    except TimeoutError:
        pass
    finally:
        server.close()


def main(argv: list[str]) -> int:
    port, out, max_seconds = int(argv[0]), Path(argv[1]), float(argv[2])
    status = Path(argv[3]) if len(argv) > 3 else None
    sink = Sink()
    try:
        asyncio.run(serve(sink, port, max_seconds, status))
    finally:
        out.write_text(json.dumps(sink.stamps))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
