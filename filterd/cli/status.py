"""``filterd status``: ask the running server, through its control socket, for its figures and
print them (``--json``: as the server gave them).

The socket is ``[control] socket`` of the configuration (``-c``), or ``--socket``. No server
answering there is exit status 3 (as an init script's ``status`` says "not running") with a
line saying what was tried.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from filterd.config.schema import Config
from filterd.runtime.recording import METRICS

__all__ = ["EXIT_NOT_RUNNING", "ask", "render", "status"]

EXIT_NOT_RUNNING = 3
TIMEOUT = 10.0

# The server's own figures, shown in the heading rather than as metrics.
_HEADING = {
    "filterd_processes",
    "filterd_start_time_seconds",
    "filterd_uptime_seconds",
    "filterd_config_loaded_timestamp_seconds",
    "filterd_reloads",
}
_TITLES = {
    "filterd_messages": "messages (door, outcome)",
    "filterd_refusals": "refused before the content (door, stage, outcome)",
    "filterd_plugin_duration_seconds": "plugin calls (plugin, stage)",
    "filterd_plugin_failures": "plugin failures (plugin, stage, failure)",
    "filterd_next_hop_errors": "next-hop errors (stage)",
    "filterd_sessions": "open connections (door)",
    "filterd_spool_bytes": "bytes in spools",
}


def status(config: Config, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path = Path(args.socket) if args.socket else config.control.socket
    try:
        answer = ask(path, "status")
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        print(
            f"filterd: no server answers on the control socket {path}: {reason} (is filterd "
            "running? Give its configuration with -c, or its socket with --socket)",
            file=err,
        )
        return EXIT_NOT_RUNNING
    try:
        data = json.loads(answer)
    except ValueError:
        print(f"filterd: the server at {path} answered something else than status", file=err)
        return 1
    if args.json:
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        out.write(render(data))
    return 0


def ask(path: Path, command: str) -> bytes:
    """Send ``command`` on the control socket at ``path``; the whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    if not chunks:
        raise OSError("the connection closed without an answer")
    return b"".join(chunks)


def render(data: dict[str, Any]) -> str:
    """The status for a person to read."""
    return "".join(f"{line}\n" for line in _lines(data))


def _lines(data: dict[str, Any]) -> Iterator[str]:
    server = data.get("server", {})
    reloads = server.get("reloads", {})
    processes = server.get("processes", [])
    yield f"filterd {server.get('version', '?')}, pid {server.get('pid', '?')}"
    yield (
        f"up {_duration(server.get('uptime_seconds', 0))} (since {_when(server.get('started_at'))})"
    )
    yield (
        f"configuration: {server.get('config_file', '?')}, loaded at "
        f"{_when(server.get('config_loaded_at'))} (reloads: {reloads.get('ok', 0)} done, "
        f"{reloads.get('refused', 0)} refused)"
    )
    shown = ", ".join(f"{p['role']} {p['pid']}" for p in processes)
    yield f"processes: {len(processes)} ({shown})"
    address = server.get("metrics_address")
    yield f"metrics endpoint: {f'http://{address}/metrics' if address else 'none'}"
    for family in data.get("metrics", []):
        name = family["name"]
        if name in _HEADING:
            continue
        yield ""
        yield f"{_TITLES.get(name, name)}:"
        order = METRICS[name][1] if name in METRICS else ()
        if family["type"] == "histogram":
            rows = list(_histogram_rows(family["samples"], order))
        else:
            rows = [(_labels(s["labels"], order), _number(s["value"])) for s in family["samples"]]
        if not rows:
            yield "  none yet"
        width = max((len(label) for label, _ in rows), default=0)
        for label, value in rows:
            yield f"  {label.ljust(width)}  {value}" if label else f"  {value}"


def _histogram_rows(
    samples: list[dict[str, Any]], order: tuple[str, ...]
) -> Iterator[tuple[str, str]]:
    """Per label set: calls, mean, and the bucket 95 % of the calls fit in."""
    groups: dict[str, dict[str, Any]] = {}
    for sample in samples:
        labels = {k: v for k, v in sample["labels"].items() if k != "le"}
        group = groups.setdefault(_labels(labels, order), {"buckets": []})
        kind = sample["name"].rsplit("_", 1)[-1]
        if kind == "bucket":
            group["buckets"].append((float(sample["labels"]["le"]), sample["value"]))
        else:
            group[kind] = sample["value"]
    for label, group in groups.items():
        count = group.get("count", 0)
        if not count:
            continue
        mean = group.get("sum", 0.0) / count
        bound = next((le for le, n in sorted(group["buckets"]) if n >= 0.95 * count), float("inf"))
        p95 = "more" if bound == float("inf") else f"<= {_seconds(bound)}"
        yield label, f"{_number(count)} calls, mean {_seconds(mean)}, 95% {p95}"


def _labels(labels: dict[str, str], order: tuple[str, ...]) -> str:
    """The label values, in the metric's order of label names (then any other)."""
    keys = [k for k in order if k in labels] + sorted(k for k in labels if k not in order)
    return " ".join(labels[key] for key in keys)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _seconds(value: float) -> str:
    return f"{value * 1000:.2f} ms" if value < 1 else f"{value:.2f} s"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if days or hours else []
    parts += [f"{minutes}m"] if days or hours or minutes else []
    return " ".join([*parts, f"{secs}s"])


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(timestamp))
