"""bench/run.py's results: the specification's targets (each checked: met, not met, not
measured) and the printed report.

Targets (issue "Every front door on every core, measured at production settings"), for each
load shape; "filterd" is the production filterd (``processes = N``, else ``processes = 1``):

- 4 KiB x 50 sessions: filterd >= 2 x the best Haraka; 100 KiB x 50: >= 1.5 x; 100 KiB x 1:
  >= 20 x;
- 4 KiB x 50: ``processes = N`` >= 1.7 x ``processes = 1``; log ``info`` costs < 5 % of the
  rate at ``warning``;
- p99 of the added latency at half the maximum load < 5 ms (p50 for information);
- RSS growth for one 100 MB message < 16 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from filterd_bench.latency import Distribution
from filterd_bench.smtp_matrix import CELLS, SHAPES, Cell, Shape, cells, size_label

HARAKA_KEYS = ("haraka1", "haraka2", "haraka2nd")
HARAKA_TARGETS = ((4 * 1024, 50, 2.0), (100 * 1024, 50, 1.5), (100 * 1024, 1, 20.0))
PROCESSES_TARGET = (4 * 1024, 50, 1.7)
LOG_COST_TARGET = (4 * 1024, 50, 0.05)
LATENCY_P99_MS = 5.0
RSS_TARGET_MIB = 16.0
OTHER_CPU_WARNING = 15.0  # % of a core used by other processes that makes a run suspect


@dataclass
class LatencyResult:
    target: str  # the filterd measured (label)
    sessions: int
    size: int
    rig_max_rate: float  # closed loop through filterd into the latency sink
    matrix_max_rate: float | None  # the same filterd, same cell, smtp-source into smtp-sink
    paced_rate: float  # half the lower of the two
    achieved_rate: float = 0.0
    lag_ms: float = 0.0  # the latest start after a message's due time
    requested: int = 0
    completed: int = 0
    added: Distribution | None = None
    turnaround: Distribution | None = None
    unmatched: int = 0
    negative: int = 0
    error: str = ""


@dataclass
class LogSummary:
    level: str
    lines: int
    bytes: int
    messages: int  # "from=<...>, size=..." lines: one per message filterd took
    first: list[str] = field(default_factory=list)  # warning-level logs: their first lines


@dataclass
class Check:
    what: str
    value: float | None
    met: bool | None  # None: not measured
    specified: bool = True  # False: for information, not one of the specification's targets
    unit: str = ""  # of the value, as printed
    note: str = ""


@dataclass
class Results:
    machine: dict[str, str]
    options: dict[str, object]
    labels: dict[str, str] = field(default_factory=dict)  # target key -> column title
    production: str = "filterd-p1"  # the key of the production filterd
    refused: str = ""  # filterd's words when it refused processes = N
    cells: list[Cell] = field(default_factory=list)
    memory_kib: dict[str, dict[str, int]] = field(default_factory=dict)  # filterds, after
    logs: dict[str, LogSummary] = field(default_factory=dict)
    haraka: str = ""  # version, or why it did not run
    latency: LatencyResult | None = None
    big_message: dict[str, object] = field(default_factory=dict)
    targets: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things that went wrong besides the cells

    def cell(self, target: str, shape: Shape, size: int, sessions: int) -> Cell | None:
        for cell in self.cells:
            if (cell.target, cell.shape, cell.size, cell.sessions) == (
                target,
                shape,
                size,
                sessions,
            ):
                return cell
        return None

    def rate(self, target: str, shape: Shape, size: int, sessions: int) -> float | None:
        cell = self.cell(target, shape, size, sessions)
        return cell.rate if cell is not None else None

    def ran(self) -> set[str]:
        return {cell.target for cell in self.cells}

    def best_haraka(self, shape: Shape, size: int, sessions: int) -> tuple[str, float] | None:
        rates = [(key, self.rate(key, shape, size, sessions)) for key in HARAKA_KEYS]
        measured = [(key, rate) for key, rate in rates if rate]
        return max(measured, key=lambda pair: pair[1]) if measured else None


# ----------------------------------------------------------------------------------- targets
def check_targets(results: Results) -> list[Check]:
    checks: list[Check] = []
    ran = results.ran()
    production = results.production
    name = results.labels.get(production, production)
    for shape in SHAPES:
        if production in ran and any(key in ran for key in HARAKA_KEYS):
            for size, sessions, minimum in HARAKA_TARGETS:
                filterd = results.rate(production, shape, size, sessions)
                best = results.best_haraka(shape, size, sessions)
                ratio = filterd / best[1] if filterd and best else None
                checks.append(
                    Check(
                        f"{shape}, {size_label(size)} x {sessions}: {name} >= {minimum:g} x "
                        f"the best Haraka" + (f" ({results.labels[best[0]]})" if best else ""),
                        _round(ratio, 2),
                        ratio >= minimum if ratio is not None else None,
                        unit=" x",
                    )
                )
        checks.append(_processes_check(results, shape))
        if "filterd-p1" in ran and "filterd-warn" in ran:
            size, sessions, maximum = LOG_COST_TARGET
            info = results.rate("filterd-p1", shape, size, sessions)
            warning = results.rate("filterd-warn", shape, size, sessions)
            cost = 1 - info / warning if info and warning else None
            checks.append(
                Check(
                    f"{shape}, {size_label(size)} x {sessions}: log info costs < {maximum:.0%} "
                    f"(1 - f-p1 / f-p1-warn)",
                    _round(cost * 100 if cost is not None else None, 1),
                    cost < maximum if cost is not None else None,
                    unit=" %",
                )
            )
        if "filterd-warn" in ran and "filterd-ref" in ran:
            size, sessions = CELLS[0]
            chain = results.rate("filterd-warn", shape, size, sessions)
            empty = results.rate("filterd-ref", shape, size, sessions)
            cost = 1 - chain / empty if chain and empty else None
            checks.append(
                Check(
                    f"{shape}, {size_label(size)} x {sessions}: the seed chain's cost "
                    f"(1 - f-p1-warn / f-ref)",
                    _round(cost * 100 if cost is not None else None, 1),
                    None if cost is None else True,
                    specified=False,
                    unit=" %",
                )
            )
    checks += _latency_checks(results.latency)
    checks += _rss_checks(results.big_message)
    return [check for check in checks if check.what]


def _processes_check(results: Results, shape: Shape) -> Check:
    size, sessions, minimum = PROCESSES_TARGET
    ran = results.ran()
    where = f"{shape}, {size_label(size)} x {sessions}: "
    if "filterd-p1" not in ran:
        return Check("", None, None)
    if "filterd" not in ran:
        why = "refused by this filterd (see above)" if results.refused else "not run"
        return Check(f"{where}processes = N >= {minimum:g} x processes = 1", None, None, note=why)
    many = results.rate("filterd", shape, size, sessions)
    one = results.rate("filterd-p1", shape, size, sessions)
    ratio = many / one if many and one else None
    return Check(
        f"{where}{results.labels['filterd']} >= {minimum:g} x f-p1",
        _round(ratio, 2),
        ratio >= minimum if ratio is not None else None,
        unit=" x",
    )


def _latency_checks(latency: LatencyResult | None) -> list[Check]:
    if latency is None:
        return []
    where = (
        f"added latency at {latency.paced_rate:,.0f} msg/s (half the maximum), "
        f"{size_label(latency.size)} x {latency.sessions}, {latency.target}"
    )
    added = latency.added
    note = latency.error
    return [
        Check(
            f"{where}: p99 < {LATENCY_P99_MS:g} ms",
            _round(added.p99 if added else None, 2),
            added.p99 < LATENCY_P99_MS if added and not note else None,
            unit=" ms",
            note=note,
        ),
        Check(
            f"{where}: p50",
            _round(added.p50 if added else None, 2),
            None if added is None else True,
            specified=False,
            unit=" ms",
        ),
    ]


def _rss_checks(big: dict[str, object]) -> list[Check]:
    growth = big.get("growth_mib")
    size = big.get("message_bytes")
    if not isinstance(size, int):
        return []
    what = f"RSS growth for one {size / 2**20:.0f} MiB message < {RSS_TARGET_MIB:g} MiB"
    if not isinstance(growth, float):
        return [Check(what, None, None, note=str(big.get("error", "")))]
    return [Check(what, growth, growth < RSS_TARGET_MIB, unit=" MiB")]


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# ------------------------------------------------------------------------------------ report
def report(results: Results) -> str:
    ran = results.ran()
    columns = [key for key in results.labels if key in ran]
    if not columns:
        return "no throughput measured" + _tail(results)
    ratios = _ratio_columns(results, ran)
    head = ["shape", "body", "sessions"]
    rate_rows = [[*head, *(results.labels[c] for c in columns), *ratios]]
    cpu_rows = [[*head, *(results.labels[c] for c in columns)]]
    other_rows = [list(row) for row in cpu_rows]
    for shape, size, sessions in cells():
        where = [shape, size_label(size), str(sessions)]
        found = [results.cell(c, shape, size, sessions) for c in columns]
        values = [ratio(shape, size, sessions) for ratio in ratios.values()]
        rate_rows.append([*where, *(_rate_text(cell) for cell in found), *values])
        cpu_rows.append([*where, *(_cpu(c.server_cpu_percent if c else None) for c in found)])
        other_rows.append([*where, *(_cpu(c.other_cpu_percent if c else None) for c in found)])
    lines = [
        "messages/second (smtp-source [-d] -s SESSIONS -l BODY; one transaction per message; "
        "persistent: -d, per-message: a new connection for each):"
    ]
    lines += format_table(rate_rows)
    lines += [
        "",
        "ratios: f/H = the production filterd / the best Haraka of the row; pN/p1 = "
        "processes = N / processes = 1; info % = 1 - f-p1 / f-p1-warn (the cost of log info); "
        "chain % = 1 - f-p1-warn / f-ref (the seed chain's cost)",
        "",
        "server CPU, % of one core (the whole process group: direct is smtp-sink; a Haraka "
        "cluster and a filterd with several processes count every process):",
    ]
    lines += format_table(cpu_rows)
    lines += ["", "other processes' CPU during each cell, % of one core (not the benchmark's):"]
    lines += format_table(other_rows)
    return "\n".join(lines) + _tail(results)


class _Ratio:
    def __init__(self, results: Results, top: str, bottom: str, cost: bool = False) -> None:
        self.results, self.top, self.bottom, self.cost = results, top, bottom, cost

    def __call__(self, shape: Shape, size: int, sessions: int) -> str:
        top = self.results.rate(self.top, shape, size, sessions)
        if self.bottom == "best-haraka":
            best = self.results.best_haraka(shape, size, sessions)
            bottom = best[1] if best else None
        else:
            bottom = self.results.rate(self.bottom, shape, size, sessions)
        if not top or not bottom:
            return "-"
        return f"{(1 - top / bottom) * 100:.1f}" if self.cost else f"{top / bottom:.2f}"


RatioColumn = dict[str, _Ratio]


def _ratio_columns(results: Results, ran: set[str]) -> RatioColumn:
    columns: RatioColumn = {}
    if results.production in ran and any(key in ran for key in HARAKA_KEYS):
        columns["f/H"] = _Ratio(results, results.production, "best-haraka")
    if "filterd" in ran and "filterd-p1" in ran:
        columns["pN/p1"] = _Ratio(results, "filterd", "filterd-p1")
    if "filterd-p1" in ran and "filterd-warn" in ran:
        columns["info %"] = _Ratio(results, "filterd-p1", "filterd-warn", cost=True)
    if "filterd-warn" in ran and "filterd-ref" in ran:
        columns["chain %"] = _Ratio(results, "filterd-warn", "filterd-ref", cost=True)
    return columns


def _tail(results: Results) -> str:
    lines = [""]
    if results.haraka:
        lines.append(f"Haraka: {results.haraka}")
    for key, memory in results.memory_kib.items():
        lines.append(
            f"{results.labels.get(key, key)} memory after its cells: peak RSS (VmHWM) "
            f"{memory['VmHWM'] / 1024:.1f} MiB, RSS (VmRSS) {memory['VmRSS'] / 1024:.1f} MiB"
            + (f" (largest of {memory['processes']} processes)" if memory["processes"] > 1 else "")
        )
    for key, log in results.logs.items():
        lines.append(
            f"{results.labels.get(key, key)} log (level {log.level}, to a file): {log.lines:,} "
            f"line(s), {log.bytes / 2**20:.1f} MiB"
            + (f", {log.lines / log.messages:.1f} lines per message" if log.messages else "")
        )
        lines.extend(f"    {line}" for line in log.first)
    lines += _latency_lines(results.latency)
    big = results.big_message
    if "growth_mib" in big:
        lines.append(
            f"one {int(str(big['message_bytes'])) / 2**20:.0f} MiB message through "
            f"{big.get('target')}: RSS growth {big['growth_mib']} MiB (VmHWM after - VmRSS "
            f"before, of the process that took it), reply after {big.get('seconds')} s"
        )
    elif big:
        lines.append(f"large message: FAILED: {big.get('error')}")
    busy = sorted(c.other_cpu_percent for c in results.cells if c.other_cpu_percent is not None)
    if busy and busy[len(busy) // 2] > OTHER_CPU_WARNING:
        lines.append(
            f"WARNING: other processes used {busy[len(busy) // 2]:.0f}% of a core (median over "
            f"the cells) during the measurements: these figures are disturbed"
        )
    lines.extend(results.notes)
    problems = [cell for cell in results.cells if cell.error]
    if problems:
        lines.append("problems (* in the table: rate of a run that stopped early):")
        lines.extend(
            f"  {results.labels.get(c.target, c.target)} {c.shape} {size_label(c.size)} x "
            f"{c.sessions}: {c.error}"
            for c in problems
        )
    if results.targets:
        lines += ["", "targets:"]
        lines += format_table(
            [["target", "figure", "status"], *(_check_row(check) for check in results.targets)],
            left=(0,),
        )
        notes = [check for check in results.targets if check.note]
        lines.extend(f"  note on '{check.what}': {check.note}" for check in notes)
    return "\n".join(lines)


def _latency_lines(latency: LatencyResult | None) -> list[str]:
    if latency is None:
        return []
    lines = [
        f"latency pass ({latency.target}, {size_label(latency.size)} messages over "
        f"{latency.sessions} persistent sessions into bench/filterd_bench/latency_sink.py): "
        f"maximum {latency.rig_max_rate:,.0f} msg/s closed-loop"
        + (
            f" (smtp-source into smtp-sink: {latency.matrix_max_rate:,.0f})"
            if latency.matrix_max_rate
            else ""
        )
        + f"; paced at {latency.paced_rate:,.0f} msg/s, achieved {latency.achieved_rate:,.0f} "
        f"({latency.completed}/{latency.requested} messages, latest start "
        f"{latency.lag_ms:.1f} ms after its due time)"
    ]
    if latency.added:
        lines.append(
            f"  added latency (filterd's 250 - the next hop's): {latency.added.describe()}"
        )
    if latency.turnaround:
        lines.append(
            f"  end-of-data turnaround (client's '.' to filterd's 250): "
            f"{latency.turnaround.describe()}"
        )
    if latency.unmatched or latency.negative:
        lines.append(
            f"  {latency.unmatched} message(s) without the sink's stamp, {latency.negative} "
            f"negative added latencies"
        )
    if latency.error:
        lines.append(f"  PROBLEM: {latency.error}")
    return lines


def _check_row(check: Check) -> list[str]:
    status = {True: "met", False: "NOT met", None: "not measured"}[check.met]
    if not check.specified:
        status = "(information)" if check.met is not None else "not measured"
    value = "-" if check.value is None else f"{check.value:g}{check.unit}"
    return [check.what, value, status]


def format_table(rows: list[list[str]], left: tuple[int, ...] = ()) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            text.ljust(width) if i in left else text.rjust(width)
            for i, (text, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def _rate_text(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    if cell.rate is None:
        return "FAILED"
    return f"{cell.rate:,.0f}" + ("*" if cell.partial else "")


def _cpu(percent: float | None) -> str:
    return "-" if percent is None else f"{percent:.0f}"
