"""How a child's exit is worded, in one place: status details, supervisor log lines, the
broker's ``WorkerGone`` message (and so a client's ``worker_lost`` error) and ``start``'s reason."""

from __future__ import annotations

import signal


def exit_reason(code: int | None) -> str:
    """A return code as Popen gives it (negative: the signal): 1 -> "exited with code 1",
    -9 -> "killed by SIGKILL"."""
    if code is None:
        return "exited, status unknown"
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:  # a real-time signal has no name
        return f"killed by signal {-code}"
