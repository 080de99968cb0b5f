"""``status``: the stack's processes as a table, or as a JSON list of objects (name, kind, pid,
state, uptime_s, restarts, device, exit_code, detail, log, in_flight, rss_bytes, cpus: the cores
it is pinned to, "" if none; the table shows them after the device, ``cpu[1]``). A worker is
RUNNING once the broker has registered it; ``in_flight`` is what the broker books on it (for the
broker: on all workers; null when unknown). Exit 0 all RUNNING, 1 not, 3 no supervisor."""

from __future__ import annotations

import shutil
import sys

import msgspec

from supervisor import control
from supervisor.rundir import RunDir
from supervisor.status_table import format_status

EXIT_NOT_RUNNING = 3  # LSB: program is not running


def run(run_dir: RunDir, *, as_json: bool) -> int:
    pid = run_dir.live_pid()
    if pid is None:
        if as_json:
            print("[]")
        else:
            print(f"not running (run dir {run_dir.path})")
        return EXIT_NOT_RUNNING
    try:
        reply = control.call(run_dir.control_endpoint, control.StatusRequest(), timeout_s=5.0)
    except control.ControlUnavailable as e:
        print(f"error: supervisor pid {pid} does not answer: {e}", file=sys.stderr)
        return 1
    if not isinstance(reply, control.StatusReply):
        print(f"error: unexpected reply {reply}", file=sys.stderr)
        return 1
    if as_json:
        print(msgspec.json.encode(reply.processes).decode())
    else:
        print(format_status(reply, shutil.get_terminal_size((100, 24)).columns))
    all_running = not reply.stopping and all(p.state == "RUNNING" for p in reply.processes)
    return 0 if all_running else 1
