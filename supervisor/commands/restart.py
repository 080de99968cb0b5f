"""``restart NAME|KIND|all [--grace S]``: restart processes, one at a time.

A worker is drained first: the broker routes nothing new to it and lets its turns finish for
the grace period (``--grace``, default ``[supervisor] drain_grace_s``; what still runs then
fails with ``worker_restarting``); then it is stopped (SIGTERM, SIGKILL after stop_timeout_s)
and started again. Each restart waits until the new process is RUNNING (a worker: registered
with the broker, so turns route to it again) before the next begins. KIND (``chat``, ``tool``)
restarts every worker of that kind, so the others keep serving meanwhile; ``all`` restarts the
workers, then the broker, then the front (whose restart drops the WebSocket connections).
Exit 0 restarted, 1 failed (unknown name, gave up, timeout), 3 no supervisor.
"""

from __future__ import annotations

import time
from pathlib import Path

from supervisor import control
from supervisor.commands.report import failure
from supervisor.commands.status import EXIT_NOT_RUNNING
from supervisor.config import SupervisorSettings
from supervisor.rundir import RunDir

KINDS = ("chat", "tool")


def run(run_dir: RunDir, settings: SupervisorSettings, target: str, grace_s: float | None = None) -> int:
    if run_dir.live_pid() is None:
        print(f"not running (run dir {run_dir.path})")
        return EXIT_NOT_RUNNING
    try:
        names = targets(fetch_status(run_dir), target)
    except (control.ControlUnavailable, LookupError) as e:
        failure(f"restart {target}: {e}")
        return 1
    for name in names:
        code = _restart_one(run_dir, settings, name, grace_s)
        if code:
            return code
    return 0


def fetch_status(run_dir: RunDir) -> control.StatusReply:
    reply = control.call(run_dir.control_endpoint, control.StatusRequest(), timeout_s=5.0)
    if not isinstance(reply, control.StatusReply):
        raise control.ControlUnavailable(f"unexpected reply {reply}")
    return reply


def targets(status: control.StatusReply, target: str) -> list[str]:
    """The processes ``target`` names, in restart order (an unknown name is left for the
    supervisor to refuse, with the list of known ones)."""
    procs = status.processes
    if any(p.name == target for p in procs):
        return [target]
    workers = [p.name for p in procs if p.kind in KINDS]
    if target in (*KINDS, "wsfront"):  # a kind: every process of it (several fronts too)
        names = [p.name for p in procs if p.kind == target]
        if not names:
            raise LookupError(f"no {target} workers")
        return names
    if target == "all":
        return workers + [p.name for p in procs if p.kind == "broker"] + [
            p.name for p in procs if p.kind == "wsfront"]
    return [target]


def _restart_one(run_dir: RunDir, settings: SupervisorSettings, name: str, grace_s: float | None) -> int:
    grace = settings.drain_grace_s if grace_s is None else grace_s
    try:
        reply = control.call(run_dir.control_endpoint, control.RestartRequest(name=name, grace_s=grace_s),
                             timeout_s=grace + settings.stop_timeout_s + 15)
    except control.ControlUnavailable as e:
        failure(f"restart {name}: {e}")
        return 1
    if isinstance(reply, control.Failed):
        failure(f"restart {name}: {reply.message}", run_dir.log(name))
        return 1
    info, reason = wait_running(run_dir, name, settings.start_timeout_s)
    if info is None or reason is not None:
        failure(f"restart {name}: {reason}" if info is None else f"{name} did not come back: {reason}",
                run_dir.log(name) if info is None else Path(info.log))
        return 1
    print(f"{name} restarted (pid {info.pid})")
    return 0


def wait_running(
    run_dir: RunDir, name: str, timeout_s: float, *, crash_fails: bool = False
) -> tuple[control.ProcessInfo | None, str | None]:
    """Poll until ``name`` is RUNNING: (its info, None); or (its last info if any, why not).
    ``crash_fails``: an exit on the way (BACKOFF, a restart) is a failure too, as for ``start``."""
    deadline = time.monotonic() + timeout_s
    info: control.ProcessInfo | None = None
    while time.monotonic() < deadline:
        try:
            status = fetch_status(run_dir)
        except control.ControlUnavailable as e:
            return info, str(e)
        info = next((p for p in status.processes if p.name == name), None)
        if info is None:
            return None, "the supervisor no longer lists it"
        if info.state == "RUNNING":
            return info, None
        if info.state in ("FATAL", "EXITED", "STOPPED") or (
                crash_fails and (info.state == "BACKOFF" or info.restarts > 0)):
            return info, f"{info.state} {info.detail}".rstrip()
        time.sleep(0.1)
    return info, f"not RUNNING after {timeout_s:g}s"
