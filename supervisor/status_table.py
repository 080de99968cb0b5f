"""The ``status`` table: one line per process, cut to the terminal's width (pure)."""

from __future__ import annotations

from supervisor.control import StatusReply

COLUMNS = ("NAME", "KIND", "STATE", "PID", "UPTIME", "RESTARTS", "DEVICE", "INFLIGHT", "RSS", "DETAIL")


def format_uptime(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value, unit = float(n), "B"
    for bigger in ("K", "M", "G"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f}{unit}" if unit == "B" or value >= 100 else f"{value:.1f}{unit}"


def format_status(reply: StatusReply, width: int = 100) -> str:
    rows = [COLUMNS] + [
        (
            p.name,
            p.kind,
            p.state,
            "-" if p.pid is None else str(p.pid),
            format_uptime(p.uptime_s) if p.pid is not None else "-",
            str(p.restarts),
            (p.device or "-") + (f"[{p.cpus}]" if p.cpus else ""),  # cpu[1]: pinned to core 1
            "-" if p.in_flight is None else str(p.in_flight),
            format_bytes(p.rss_bytes),
            p.detail,
        )
        for p in reply.processes
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for r in rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1]
        line = line.rstrip()
        lines.append(line if len(line) <= width else line[: max(width - 3, 0)] + "...")
    head = f"supervisor pid {reply.supervisor_pid}" + (" (stopping)" if reply.stopping else "")
    return "\n".join([head, *lines])
