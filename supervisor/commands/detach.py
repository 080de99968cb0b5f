"""``detach NAME [--grace S]``: drain a worker like ``stop NAME`` (the broker routes nothing new
to it; its turns may finish for the grace, then fail with ``worker_lost``), stop it, and take it
out of the supervisor's set: it leaves ``status`` and is never restarted. Works on workers from
the config file too, until the supervisor starts again. Exit 0 gone, 1 failed (unknown name,
still there after the grace and stop timeout), 2 not a worker, 3 no supervisor.
"""

from __future__ import annotations

from supervisor import control
from supervisor.commands.status import EXIT_NOT_RUNNING
from supervisor.commands.stop import stop_drained
from supervisor.config import SupervisorSettings
from supervisor.rundir import RunDir


def run(run_dir: RunDir, settings: SupervisorSettings, name: str, grace_s: float | None = None) -> int:
    if run_dir.live_pid() is None:
        print(f"not running (run dir {run_dir.path})")
        return EXIT_NOT_RUNNING
    return stop_drained(run_dir, settings, control.DetachRequest(name=name, grace_s=grace_s),
                        ("detach", "detached"),
                        lambda info: info is None)
