"""``attach --kind chat|tool [--engine E] [--model M] [--device D] [--name N] ...``: add a worker
to the running stack and wait until it registers with the broker (so turns route to it).

Unset fields are copied from the stack's first worker of the kind; a name is made up (chat-1
beside chat-0) if none is given. The worker lasts as long as this supervisor: ``supervisor.toml``
is not rewritten. If it exits or does not register within start_timeout_s, it is detached again.
Exit 0 attached and RUNNING, 1 failed (one line says why, then its log), 2 bad request, 3 no
supervisor.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from supervisor import control
from supervisor.commands import detach
from supervisor.commands.report import failure
from supervisor.commands.restart import wait_running
from supervisor.commands.status import EXIT_NOT_RUNNING
from supervisor.config import SupervisorSettings
from supervisor.rundir import RunDir

EXIT_USAGE = 2


def run(run_dir: RunDir, settings: SupervisorSettings, request: control.AttachRequest) -> int:
    if run_dir.live_pid() is None:
        print(f"not running (run dir {run_dir.path})")
        return EXIT_NOT_RUNNING
    if "/" in request.python:  # a path on our command line is relative to where we run
        request.python = os.path.abspath(os.path.expanduser(request.python))
    try:
        reply = control.call(run_dir.control_endpoint, request, timeout_s=10.0)
    except control.ControlUnavailable as e:
        failure(f"attach: {e}")
        return 1
    if isinstance(reply, control.Refused):
        failure(reply.message)
        return EXIT_USAGE
    if not isinstance(reply, control.Done):
        failure(f"attach: {getattr(reply, 'message', reply)}")
        return 1
    name = reply.name
    print(f"{name} attached (pid {reply.pid}); waiting for it to register with the broker")
    info, reason = wait_running(run_dir, name, settings.start_timeout_s, crash_fails=True)
    if reason is None and info is not None:
        print(f"{name} running (pid {info.pid}, device {info.device})")
        return 0
    failure(f"{name} did not come up: {reason}; detaching it",
            Path(info.log) if info is not None else run_dir.log(name))
    with contextlib.redirect_stdout(io.StringIO()):
        detach.run(run_dir, settings, name, grace_s=0.0)
    return 1
