"""One child's life in the stack as a pure state machine: events and the clock in, actions out.

RestartPolicy owns the states and the restart timing (backoff, give-up); this adds what a child
goes through around them: a worker drained at the broker before it is stopped, SIGKILL once
SIGTERM has had ``stop_timeout_s``, the hang verdict on a worker the broker no longer hears, an
operator's restart waiting for the old process to exit, detaching, and the stack's shutdown.
Every method returns the actions the daemon must carry out, in order; none does I/O itself.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass

from broker.frames import FailCode
from supervisor import control
from supervisor.config import SupervisorSettings
from supervisor.exit_reason import exit_reason
from supervisor.policy import ALIVE, RestartPolicy, State

RETIRE_MARGIN_S = 3.0  # past the drain grace, stop a worker even without the broker's Retired
SPAWN_FAILED = 127  # the exit code a process that could not be started counts as (as a shell's)


@dataclass(frozen=True)
class Spawn:
    """Start the process now, then report ``spawned`` or ``spawn_failed``."""


@dataclass(frozen=True)
class Signal:
    """Send ``signum`` to the child's whole process group."""

    signum: signal.Signals


@dataclass(frozen=True)
class TellGone:
    """Tell the broker this worker process is gone (``WorkerGone``): its turns fail now."""

    pid: int
    message: str


@dataclass(frozen=True)
class Retire:
    """Ask the broker to drain this worker; report ``retire_unsent`` if it cannot be sent."""

    pid: int
    grace_s: float
    code: FailCode


@dataclass(frozen=True)
class Log:
    level: int
    text: str


@dataclass(frozen=True)
class Answer:
    """Reply to every operator waiting on this child's restart."""

    reply: control.Done | control.Failed


Action = Spawn | Signal | TellGone | Retire | Log | Answer


class Lifecycle:
    def __init__(self, name: str, *, worker: bool, settings: SupervisorSettings, log_path: str = "") -> None:
        self.name = name
        self.worker = worker  # workers register with the broker, drain, can hang and be detached
        self.log_path = log_path  # named when it gives up
        self.stop_timeout_s = settings.stop_timeout_s
        self.hang_timeout_s = settings.hang_timeout_s
        self.policy = RestartPolicy(
            startsecs=settings.startsecs,
            startretries=settings.startretries,
            backoff_initial_s=settings.backoff_initial_s,
            backoff_max_s=settings.backoff_max_s,
            await_registration=worker,
        )
        self.pid: int | None = None  # of the last process spawned
        self.kill_at: float | None = None  # SIGKILL if still alive then (after a SIGTERM)
        self.retire_until: float | None = None  # draining at the broker; stop it by then
        self.hang_killed = False  # SIGKILLed as hung; not yet reaped
        self.restart_pending = False  # an operator waits for a fresh start
        self.detached = False  # forget it once it is down
        self.shutting_down = False  # the whole stack stops: no more restarts

    @property
    def state(self) -> State:
        return self.policy.state

    @property
    def alive(self) -> bool:
        return self.policy.state in ALIVE

    @property
    def draining(self) -> bool:
        return self.retire_until is not None

    def _log(self, level: int, text: str) -> Log:
        return Log(level, f"{self.name}: {text}")

    # ---- the process -------------------------------------------------------------------------

    def start(self) -> list[Action]:
        """The supervisor starts (or ``attach`` adds) this child."""
        return [Spawn()]

    def spawned(self, now: float, pid: int) -> list[Action]:
        self.policy.on_spawn(now)
        self.pid = pid
        self.kill_at = None
        self.hang_killed = False
        return self._answer(control.Done(message=f"{self.name} restarted", pid=pid))

    def spawn_failed(self, now: float, error: str) -> list[Action]:
        """It could not even be started (no such interpreter, say): a failure like any exit."""
        self.policy.on_spawn(now)
        self.policy.on_exit(now, SPAWN_FAILED)
        out: list[Action] = [self._log(logging.ERROR, f"cannot start: {error}")]
        return out + self._answer(control.Failed(message=f"{self.name}: {self.policy.describe(now)}"))

    def exited(self, now: float, code: int | None) -> list[Action]:
        """The process was reaped with ``code`` (negative: killed by that signal)."""
        out: list[Action] = []
        if self.worker and self.pid is not None:  # its turns fail now, not at heartbeat expiry
            out.append(TellGone(self.pid, f"worker {self.name} (pid {self.pid}) {exit_reason(code)}"))
        requested = self.state is State.STOPPING
        restart_at = self.policy.on_exit(now, code)
        self.kill_at = None
        if self.retire_until is not None:  # died while draining: it was on its way out
            self.retire_until = None
            if not self.restart_pending:
                self.policy.on_stop()  # a `stop NAME`: no restart
        if requested:
            out.append(self._log(logging.INFO, f"stopped ({exit_reason(code)})"))
        elif restart_at is not None:
            out.append(self._log(logging.WARNING, self.policy.describe(now) or exit_reason(code)))
        else:
            out.append(self._log(logging.ERROR, f"{self.policy.describe(now) or exit_reason(code)}; "
                                                f"see {self.log_path}"))
        if self.restart_pending:
            out += self._fresh_start()
        return out

    def tick(self, now: float) -> list[Action]:
        """The clock: a restart whose backoff passed, a drain that ran out, a SIGKILL that is due."""
        out: list[Action] = []
        if self.policy.tick(now) and not self.shutting_down:
            out += [self._log(logging.INFO, f"restarting (restart {self.policy.restarts + 1})"), Spawn()]
        if self.retire_until is not None and now >= self.retire_until:
            out.append(self._log(logging.WARNING, "no word from the broker on its drain; stopping it anyway"))
            out += self.stop(now)
        if self.state is State.STOPPING and self.kill_at is not None and now >= self.kill_at:
            out += [self._log(logging.WARNING, f"still alive {self.stop_timeout_s:.0f}s after SIGTERM; SIGKILL"),
                    Signal(signal.SIGKILL)]
            self.kill_at = None
        return out

    # ---- what the broker says ----------------------------------------------------------------

    def registered(self) -> list[Action]:
        """The broker has this process's Ready: a worker may count as RUNNING now."""
        if not self.worker or self.state not in (State.STARTING, State.RUNNING) or self.policy.registered:
            return []
        self.policy.on_registered()
        return [self._log(logging.INFO, "registered with the broker")]

    def silent(self, silent_s: float | None) -> list[Action]:
        """The broker has not heard from this process for ``silent_s`` (None: nothing can be
        said). Past ``hang_timeout_s`` a registered worker is hung: SIGKILL, and so restarted."""
        hang = self.hang_timeout_s
        if (not self.worker or self.state not in (State.STARTING, State.RUNNING) or hang <= 0
                or not self.policy.registered or self.retire_until is not None or self.hang_killed
                or silent_s is None or silent_s <= hang):
            return []
        self.hang_killed = True
        return [self._log(logging.ERROR, f"the broker has not heard from pid {self.pid} for {silent_s:.1f}s "
                                         f"(hang_timeout_s {hang:g}); SIGKILL"),
                Signal(signal.SIGKILL)]

    def retired(self, now: float, pid: int, finished: int, failed: int) -> list[Action]:
        """The broker's ``Retired``: the draining process is idle, so it is stopped now."""
        if self.retire_until is None or pid != self.pid:
            return []  # not draining, or about an older process
        out: list[Action] = [self._log(logging.INFO, f"drained ({finished} turn(s) finished, {failed} failed); "
                                                     "stopping it")]
        return out + self.stop(now)

    def retire_unsent(self, now: float) -> list[Action]:
        """No broker took the ``Retire``: stop it without a drain."""
        if self.retire_until is None:
            return []
        out: list[Action] = [self._log(logging.WARNING, "the broker took no Retire; stopping it without a drain")]
        return out + self.stop(now)

    # ---- what an operator (or the shutdown) asks ---------------------------------------------

    def stop(self, now: float) -> list[Action]:
        """Stop it without a drain: SIGTERM now, SIGKILL after ``stop_timeout_s``."""
        self.retire_until = None
        if self.state is State.STOPPING:
            return []  # already signalled; keep its deadline
        if self.policy.on_stop():
            self.kill_at = now + self.stop_timeout_s
            return [Signal(signal.SIGTERM)]
        return []  # not running; a BACKOFF restart is cancelled

    def stop_requested(self, now: float, grace_s: float, broker_fresh: bool) -> list[Action]:
        """``stop NAME``: down (drained first, if a worker) and no restart."""
        out: list[Action] = [self._log(logging.INFO, "stop requested")]
        if self.alive:
            return out + self._take_down(now, grace_s, "worker_lost", broker_fresh)
        self.policy.on_stop()  # BACKOFF: no more restarts
        return out

    def restart_requested(self, now: float, grace_s: float, broker_fresh: bool) -> list[Action]:
        """``restart NAME``: down (drained first, if a worker), then a fresh start; ``Answer`` follows."""
        out: list[Action] = [self._log(logging.INFO, "restart requested")]
        self.restart_pending = True
        if self.alive:
            return out + self._take_down(now, grace_s, "worker_restarting", broker_fresh)
        return out + self._fresh_start()  # not running: start it now

    def detach_requested(self, now: float, grace_s: float, broker_fresh: bool) -> list[Action]:
        """``detach NAME``: like ``stop NAME``; once it is down the daemon forgets it."""
        out: list[Action] = [self._log(logging.INFO, "detach requested")]
        self.detached = True
        out += self._answer(control.Failed(message=f"{self.name} was detached"))  # must not bring it back
        if self.alive:
            return out + self._take_down(now, grace_s, "worker_lost", broker_fresh)
        self.policy.on_stop()
        return out

    def shutdown(self) -> list[Action]:
        """The stack stops: no more restarts; the daemon stops each child in its phase (``stop``)."""
        self.shutting_down = True
        out = self._answer(control.Failed(message="supervisor is stopping"))
        if self.state is State.BACKOFF:
            self.policy.on_stop()  # nothing to signal: just no more restarts
        return out

    def kill_now(self) -> list[Action]:
        """A second SIGINT/SIGTERM to the supervisor: do not wait for a graceful exit."""
        if not self.alive:
            return []
        self.policy.on_stop()
        return [Signal(signal.SIGKILL)]

    # ---- internals ---------------------------------------------------------------------------

    def _take_down(self, now: float, grace_s: float, code: FailCode, broker_fresh: bool) -> list[Action]:
        """A worker registered with a live broker is retired there first, and stopped once the
        broker reports it idle (or the grace and a margin ran out); anything else is stopped."""
        if self.retire_until is not None or self.state is State.STOPPING:
            return []  # already on its way down
        if (self.worker and self.policy.registered and self.pid is not None and broker_fresh
                and self.state in (State.STARTING, State.RUNNING)):
            self.retire_until = now + grace_s + RETIRE_MARGIN_S
            return [self._log(logging.INFO, f"draining ({grace_s:g}s grace)"), Retire(self.pid, grace_s, code)]
        return self.stop(now)

    def _fresh_start(self) -> list[Action]:
        """An operator restart: a fresh set of retries, spawned now (``spawned`` answers)."""
        if self.shutting_down:
            return self._answer(control.Failed(message="supervisor is stopping"))
        self.policy.reset()
        return [Spawn()]

    def _answer(self, reply: control.Done | control.Failed) -> list[Action]:
        if not self.restart_pending:
            return []
        self.restart_pending = False
        return [Answer(reply)]
