"""When to restart a child: supervisord's process states and backoff, with the clock passed in.

STARTING -> RUNNING once alive ``startsecs`` (and, for a policy that awaits registration, a
worker, once the broker has its Ready: ``on_registered``). Every unrequested death is restarted after a delay
that doubles per consecutive crash (``backoff_initial_s`` .. ``backoff_max_s``); a run that lasted
``backoff_max_s`` (and startsecs) resets it, since such a child restarts no faster than that anyway.
Deaths before startsecs are fast failures: after ``startretries`` in a row the child is FATAL
(no more restarts until an operator asks). STOPPING -> EXITED is a requested stop: no restart.
"""

from __future__ import annotations

import enum

from supervisor.exit_reason import exit_reason


class State(str, enum.Enum):
    STOPPED = "STOPPED"  # never started
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"  # died; waiting to be restarted
    STOPPING = "STOPPING"  # asked to stop; waiting for it to exit
    EXITED = "EXITED"  # stopped on request
    FATAL = "FATAL"  # gave up after startretries fast failures


ALIVE = (State.STARTING, State.RUNNING, State.STOPPING)


class RestartPolicy:
    """One child's state. Every method takes ``now`` (seconds, any monotonic origin)."""

    def __init__(
        self,
        *,
        startsecs: float,
        startretries: int,
        backoff_initial_s: float,
        backoff_max_s: float,
        await_registration: bool = False,
    ) -> None:
        self.startsecs = startsecs
        self.startretries = startretries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.await_registration = await_registration
        self.registered = False  # since the last spawn
        self.state = State.STOPPED
        self.spawned_at: float | None = None
        self.restart_at: float | None = None
        self.fast_failures = 0  # consecutive deaths before startsecs
        self.crashes = 0  # consecutive short runs: the backoff exponent
        self.spawns = 0
        self.last_exit_code: int | None = None

    @property
    def restarts(self) -> int:
        return max(self.spawns - 1, 0)

    def uptime(self, now: float) -> float:
        if self.state not in ALIVE or self.spawned_at is None:
            return 0.0
        return max(now - self.spawned_at, 0.0)

    def on_spawn(self, now: float) -> None:
        self.state = State.STARTING
        self.spawned_at = now
        self.restart_at = None
        self.spawns += 1
        self.registered = False

    def on_registered(self) -> None:
        """The broker has this process's Ready: a worker may count as RUNNING now."""
        if self.state in (State.STARTING, State.RUNNING):
            self.registered = True

    def tick(self, now: float) -> bool:
        """Advance timers; True when a restart is due now (the caller spawns, then on_spawn)."""
        if (self.state is State.STARTING and self.spawned_at is not None
                and now - self.spawned_at >= self.startsecs
                and (self.registered or not self.await_registration)):
            self.state = State.RUNNING
            self.fast_failures = 0
        return self.state is State.BACKOFF and self.restart_at is not None and now >= self.restart_at

    def on_exit(self, now: float, code: int | None) -> float | None:
        """The child is gone. Returns when to restart it, or None (requested stop, or FATAL)."""
        self.last_exit_code = code
        if self.state is State.STOPPING:
            self.state = State.EXITED
            return None
        ran = now - self.spawned_at if self.spawned_at is not None else 0.0
        if self.state is State.RUNNING or ran >= self.startsecs:
            self.fast_failures = 0
        else:
            self.fast_failures += 1
            if self.fast_failures >= self.startretries:
                self.state = State.FATAL
                self.restart_at = None
                return None
        self.crashes = 1 if ran >= max(self.startsecs, self.backoff_max_s) else self.crashes + 1
        delay = min(self.backoff_initial_s * 2 ** (self.crashes - 1), self.backoff_max_s)
        self.state = State.BACKOFF
        self.restart_at = now + delay
        return self.restart_at

    def on_stop(self) -> bool:
        """An operator or shutdown asks it to stop. True if a live process must be signalled."""
        if self.state in (State.STARTING, State.RUNNING, State.STOPPING):
            self.state = State.STOPPING
            return True
        if self.state is State.BACKOFF:
            self.state = State.EXITED
            self.restart_at = None
        return False

    def reset(self) -> None:
        """An operator restart: forget fast failures so a FATAL child gets a fresh set of retries."""
        self.fast_failures = 0
        self.crashes = 0
        self.restart_at = None
        if self.state not in ALIVE:
            self.state = State.STOPPED

    def describe(self, now: float) -> str:
        """A short reason for the status table, e.g. "exited with code 1; retry in 2.0s"."""
        code = self.last_exit_code
        exit_text = "" if code is None else exit_reason(code)
        if self.state is State.BACKOFF and self.restart_at is not None:
            return f"{exit_text}; retry in {max(self.restart_at - now, 0.0):.1f}s".lstrip("; ")
        if self.state is State.FATAL:
            return f"{exit_text}; gave up after {self.fast_failures} fast failures".lstrip("; ")
        if self.state is State.EXITED:
            return exit_text
        return ""
