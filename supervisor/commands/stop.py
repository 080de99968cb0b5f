"""``stop [NAME|all] [--grace S]``: ordered graceful shutdown over the control socket, or one
process; idempotent like ``systemctl stop``.

Whole stack: exit 0 when nothing of it runs any more (also when it was not running, or when a
process had to be SIGKILLed: a warning says so); 1 when something could not be stopped.
One process (``stop chat-0``): a worker is drained like for ``restart`` (turns still running
after the grace fail with ``worker_lost``), then stopped, and stays stopped (EXITED) until
``restart NAME``; exit 0 once it is down, 1 if it is not down in time or unknown, 3 no supervisor.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

from supervisor import control
from supervisor.commands.report import failure
from supervisor.commands.status import EXIT_NOT_RUNNING
from supervisor.config import SupervisorSettings
from supervisor.process import pid_alive
from supervisor.rundir import RunDir

EXIT_USAGE = 2


def run(run_dir: RunDir, settings: SupervisorSettings, name: str = "", grace_s: float | None = None) -> int:
    pid = run_dir.live_pid()
    if name not in ("", "all"):
        if pid is None:
            print(f"not running (run dir {run_dir.path})")
            return EXIT_NOT_RUNNING
        return _stop_one(run_dir, settings, name, grace_s)
    if pid is None:
        print("not running")
        return 0
    children: dict[str, int] = {}
    try:
        status = control.call(run_dir.control_endpoint, control.StatusRequest(), timeout_s=5.0)
        if isinstance(status, control.StatusReply):
            children = {p.name: p.pid for p in status.processes if p.pid is not None}
        control.call(run_dir.control_endpoint, control.StopRequest(), timeout_s=5.0)
    except control.ControlUnavailable:
        if pid > 0:  # SIGTERM does what the stop request does
            print(f"warning: supervisor pid {pid} does not answer; sending SIGTERM", file=sys.stderr)
            _signal(pid, signal.SIGTERM)
    # front, workers, broker each get stop_timeout_s before SIGKILL; then a margin
    if not wait_gone(run_dir, pid, settings.stop_timeout_s * 3 + 10):
        print(f"warning: supervisor pid {pid} did not exit; SIGKILL", file=sys.stderr)
        _signal(pid, signal.SIGKILL)  # its children get SIGKILL too (PR_SET_PDEATHSIG)
        wait_gone(run_dir, pid, 5)
    leftovers = {name: cpid for name, cpid in children.items() if pid_alive(cpid)}
    if leftovers:
        named = ", ".join(f"{name} (pid {cpid})" for name, cpid in leftovers.items())
        print(f"warning: killing what was left: {named}", file=sys.stderr)
        for cpid in leftovers.values():
            _killpg(cpid)
    alive = [f"{name} (pid {cpid})" for name, cpid in leftovers.items() if _still_alive_after(cpid, 5)]
    if (pid > 0 and pid_alive(pid)) or alive:
        print(f"error: still running: {', '.join(alive) or f'supervisor pid {pid}'}", file=sys.stderr)
        return 1
    print("stopped")
    return 0


def _stop_one(run_dir: RunDir, settings: SupervisorSettings, name: str, grace_s: float | None) -> int:
    return stop_drained(run_dir, settings, control.StopRequest(name=name, grace_s=grace_s), ("stop", "stopped"),
                        lambda info: info is None or info.state not in ("STARTING", "RUNNING", "STOPPING", "BACKOFF"))


def stop_drained(
    run_dir: RunDir, settings: SupervisorSettings, request: control.StopRequest | control.DetachRequest,
    verbs: tuple[str, str], down: Callable[[control.ProcessInfo | None], bool],
) -> int:
    """Ask the supervisor to drain and stop ``request.name``; wait until ``down`` says so of
    its status row (None: no longer listed). Exit 0, 1 failed, 2 refused."""
    name, (verb, done) = request.name, verbs
    try:
        reply = control.call(run_dir.control_endpoint, request)
    except control.ControlUnavailable as e:
        failure(f"{verb} {name}: {e}")
        return 1
    if not isinstance(reply, control.Done):
        failure(f"{verb} {name}: {getattr(reply, 'message', reply)}")
        return EXIT_USAGE if isinstance(reply, control.Refused) else 1
    grace = settings.drain_grace_s if request.grace_s is None else request.grace_s
    timeout = grace + settings.stop_timeout_s + 10
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = control.call(run_dir.control_endpoint, control.StatusRequest(), timeout_s=5.0)
        except control.ControlUnavailable as e:
            failure(f"{verb} {name}: {e}")
            return 1
        info = next((p for p in status.processes if p.name == name), None) \
            if isinstance(status, control.StatusReply) else None
        if down(info):
            print(f"{name} {done}")
            return 0
        time.sleep(0.1)
    failure(f"{name} still running after {timeout:g}s", run_dir.log(name))
    return 1


def wait_gone(run_dir: RunDir, pid: int, timeout_s: float) -> bool:
    """Until the supervisor released its run dir and its pid is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if run_dir.live_pid() is None and (pid <= 0 or not pid_alive(pid)):
            return True
        time.sleep(0.05)
    return False


def _still_alive_after(pid: int, timeout_s: float) -> bool:
    """True if ``pid`` is still alive after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.05)
    return False


def _signal(pid: int, sig: int) -> None:
    if pid > 0:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
