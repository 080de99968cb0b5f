"""``restart NAME``: stop one child (SIGTERM, then SIGKILL after stop_timeout_s) and start it again.

Waits until the new process is RUNNING (alive for startsecs; a worker may still be loading its
model then). Exit 0 restarted, 1 failed (unknown name, gave up, timeout), 3 no supervisor.
"""

from __future__ import annotations

import time
from pathlib import Path

from supervisor import control
from supervisor.commands.report import failure
from supervisor.commands.status import EXIT_NOT_RUNNING
from supervisor.config import SupervisorSettings
from supervisor.rundir import RunDir


def run(run_dir: RunDir, settings: SupervisorSettings, name: str) -> int:
    if run_dir.live_pid() is None:
        print(f"not running (run dir {run_dir.path})")
        return EXIT_NOT_RUNNING
    try:
        reply = control.call(
            run_dir.control_endpoint, control.RestartRequest(name=name), timeout_s=settings.stop_timeout_s + 10
        )
    except control.ControlUnavailable as e:
        failure(f"restart {name}: {e}")
        return 1
    if isinstance(reply, control.Failed):
        failure(f"restart {name}: {reply.message}", run_dir.log(name))
        return 1
    deadline = time.monotonic() + settings.start_timeout_s
    while time.monotonic() < deadline:
        try:
            status = control.call(run_dir.control_endpoint, control.StatusRequest(), timeout_s=5.0)
        except control.ControlUnavailable as e:
            failure(f"restart {name}: {e}")
            return 1
        info = next(p for p in status.processes if p.name == name) if isinstance(status, control.StatusReply) else None
        if info is None:
            failure(f"restart {name}: unexpected reply {status}")
            return 1
        if info.state == "RUNNING":
            print(f"{name} restarted (pid {info.pid})")
            return 0
        if info.state in ("FATAL", "EXITED", "STOPPED"):
            failure(f"{name} did not come back: {info.state} {info.detail}".rstrip(), Path(info.log))
            return 1
        time.sleep(0.1)
    failure(f"{name} not RUNNING after {settings.start_timeout_s:g}s", run_dir.log(name))
    return 1
