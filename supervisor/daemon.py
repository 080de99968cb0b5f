"""The running supervisor: spawns the stack, feeds each child's Lifecycle, carries out its actions.

One thread, one loop: poll the control socket, the broker link and a SIGCHLD wakeup pipe for
up to 50 ms; hand control requests to ``dispatch`` and broker reports to the lifecycles; reap
children; let every lifecycle see the clock; advance a shutdown if one is under way. Children
are process group leaders (signals reach their whole tree) and die with the supervisor
(PR_SET_PDEATHSIG). SIGTERM, SIGINT or SIGHUP does what the ``stop`` request does; a second
one SIGKILLs at once.

What to do when is decided in ``lifecycle`` (per child, pure) and ``policy`` (restart timing);
the verbs of the control socket are in ``dispatch``, ``attach`` and ``detach``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec
import zmq

from broker import frames as broker_frames
from supervisor import control, detach, dispatch
from supervisor.broker_link import BrokerLink
from supervisor.broker_view import BrokerView
from supervisor.child import Child, make_child
from supervisor.children import ChildSpec, child_specs, stop_phases
from supervisor.config import StackConfig
from supervisor.keys import prepare_stack_keys
from supervisor.lifecycle import Action, Answer, Log, Retire, Signal, Spawn, TellGone
from supervisor.placement import format_cpus, host_cpus, plan_cpus
from supervisor.policy import State
from supervisor.process import rotate_log
from supervisor.rundir import PidFileLock, RunDir
from workers.config import WorkerConfig

log = logging.getLogger("supervisor")

POLL_INTERVAL_S = 0.05
LOG_CHECK_INTERVAL_S = 5.0


class Supervisor:
    def __init__(
        self, cfg: StackConfig, env: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.run_dir = RunDir(Path(cfg.supervisor.run_dir))
        cfg = msgspec.structs.replace(cfg, broker=msgspec.structs.replace(
            cfg.broker, control=self.run_dir.broker_control_endpoint))
        self.cfg = cfg
        self.settings = cfg.supervisor
        self.clock = clock
        self.watch_interval_s = cfg.broker.heartbeat_interval_s
        self.view = BrokerView(stale_after_s=cfg.broker.heartbeat_interval_s * cfg.broker.liveness + 0.5)
        self.broker: BrokerLink | None = None
        self.sock: zmq.Socket | None = None  # the control socket, while running
        self.env = dict(env)
        self.host_cpus = host_cpus()  # the CPU plan splits these among the workers
        self.children: dict[str, Child] = {s.name: self.new_child(s) for s in child_specs(cfg)}
        self.stopping = False
        self._phases: list[list[str]] = []  # what is left to stop, phase by phase, once stopping
        self._stop_requested = False
        self._kill_requested = False  # a second SIGINT/SIGTERM: do not wait for graceful exits
        self._next_log_check = 0.0
        self._wake_r = -1  # read end of the SIGCHLD wakeup pipe, while running

    def run(self) -> int:
        """Run until stopped. 0 after a clean stop, 1 if the run dir is held by another supervisor."""
        self.run_dir.create()
        lock = PidFileLock(self.run_dir)
        if not lock.acquire():
            log.error("another supervisor (pid %s) runs in %s", self.run_dir.live_pid(), self.run_dir.path)
            return 1
        # SIGCHLD writes to this pipe and wakes the poll: a dead worker is reaped, and its
        # turns failed at the broker, at once rather than at the next poll timeout.
        self._wake_r, wake_w = os.pipe()
        for fd in (self._wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        try:
            prepare_stack_keys(self.cfg.broker)
            for child in self.children.values():
                self.run_dir.write_child_config(child.name, child.spec.config_json())
            self.run_dir.control_socket.unlink(missing_ok=True)  # left by a SIGKILLed supervisor
            self.sock = zmq.Context.instance().socket(zmq.ROUTER)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.bind(self.run_dir.control_endpoint)
            self.broker = BrokerLink(self.cfg.broker.control)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, self._on_signal)
            log.info("supervisor pid %d, run dir %s", os.getpid(), self.run_dir.path)
            now = self.clock()
            for child in list(self.children.values()):  # broker, workers, wsfront
                self.carry_out(child, child.life.start(), now)
            self._loop(self.sock, self.broker)
        finally:
            for child in self.children.values():  # only if the loop died: never leave orphans
                if child.process.alive:
                    child.process.kill()
            if self.sock is not None:
                self.sock.close()
            if self.broker is not None:
                self.broker.close()
            b = self.cfg.broker
            self.run_dir.remove_sockets((b.frontend, b.backend, b.control))
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(wake_w)
            lock.release()
        log.info("supervisor stopped")
        return 0

    def _loop(self, sock: zmq.Socket, broker: BrokerLink) -> None:
        poller = zmq.Poller()
        for source in (sock, broker.sock, self._wake_r):
            poller.register(source, zmq.POLLIN)
        next_watch = 0.0
        while True:
            ready = dict(poller.poll(int(POLL_INTERVAL_S * 1000)))
            if self._wake_r in ready:
                _drain_pipe(self._wake_r)
            if sock in ready:
                while (frames := _recv(sock)) is not None:
                    dispatch.handle(self, frames)
            if broker.sock in ready:
                for msg in broker.receive():
                    self._on_broker(msg)
            if self.clock() >= next_watch:
                broker.watch()
                next_watch = self.clock() + self.watch_interval_s
            if self._stop_requested and not self.stopping:
                self._begin_stop()
            now = self.clock()
            if self._kill_requested:
                self._kill_requested = False
                log.warning("second signal: SIGKILL to every process group")
                for child in self.children.values():
                    self.carry_out(child, child.life.kill_now(), now)
            self._step(now)
            if self.stopping and not any(c.life.alive for c in self.children.values()):
                return
            if now >= self._next_log_check:
                self._rotate_logs()
                self._next_log_check = now + LOG_CHECK_INTERVAL_S

    def _step(self, now: float) -> None:
        """Reap, hear the broker's view of the workers, let the clock run; then the shutdown."""
        for child in list(self.children.values()):
            if child.life.alive and child.process.poll() is not None:
                child.process.reap_group()
                self.carry_out(child, child.life.exited(now, child.process.returncode), now)
        for child in list(self.children.values()):
            life = child.life
            if child.spec.is_worker and life.state in (State.STARTING, State.RUNNING):
                if not life.policy.registered and self.view.worker(child.name, life.pid, now) is not None:
                    self.carry_out(child, life.registered(), now)
                self.carry_out(child, life.silent(self.view.silent_for(child.name, life.pid, now)), now)
            self.carry_out(child, life.tick(now), now)
        detach.forget_detached(self)
        if self.stopping and self._phases:
            if not any(c.life.alive for n in self._phases[0] if (c := self.children.get(n)) is not None):
                self._phases.pop(0)
                if self._phases:
                    self._stop_phase(self._phases[0], now)

    def _on_signal(self, signum: int, _frame: object) -> None:
        # acted on in the loop, never inside the handler
        if self._stop_requested:
            self._kill_requested = True
        self._stop_requested = True

    # ---- what dispatch, attach and detach use ----------------------------------------------

    @property
    def shutting_down(self) -> bool:
        """A stop of the whole stack was asked for (it may not have begun yet)."""
        return self.stopping or self._stop_requested

    def request_stop(self) -> None:
        self._stop_requested = True

    def broker_fresh(self, now: float) -> bool:
        """A broker answers now: a worker can be drained there."""
        return self.broker is not None and self.view.fresh(now)

    def new_child(self, spec: ChildSpec) -> Child:
        return make_child(spec, self.run_dir, self.env, self.settings)

    def workers(self) -> list[WorkerConfig]:
        return [c.spec.config for c in self.children.values()
                if isinstance(c.spec.config, WorkerConfig) and not c.life.detached]

    def carry_out(self, child: Child, actions: list[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, Log):
                log.log(action.level, action.text)
            elif isinstance(action, Spawn):
                self._spawn(child, now)
            elif isinstance(action, Signal):
                child.process.signal_group(action.signum)
            elif isinstance(action, TellGone):
                if self.broker is not None:
                    self.broker.worker_gone(child.name, action.pid, action.message)
            elif isinstance(action, Retire):
                if self.broker is None or not self.broker.retire(child.name, action.pid, action.grace_s, action.code):
                    self.carry_out(child, child.life.retire_unsent(now), now)
            elif isinstance(action, Answer):
                waiters, child.waiters = child.waiters, []
                for envelope in waiters:
                    self.reply(envelope, action.reply)

    def reply(self, envelope: list[bytes], reply: control.Reply) -> None:
        assert self.sock is not None
        self.sock.send_multipart([*envelope, control.encoder.encode(reply)])

    # ---- carrying out ----------------------------------------------------------------------

    def _spawn(self, child: Child, now: float) -> None:
        rotate_log(child.process.log_path, self.settings.log_max_bytes, self.settings.log_backups, in_use=False)
        if child.spec.is_worker:  # the plan for the workers there are now; running ones keep theirs
            child.process.cpus = plan_cpus(self.workers(), self.host_cpus).get(child.name)
        try:
            pid = child.process.spawn()
        except (OSError, subprocess.SubprocessError) as e:
            self.carry_out(child, child.life.spawn_failed(now, str(e)), now)
            return
        pinned = f" on cpus {format_cpus(child.process.cpus)}" if child.process.cpus else ""
        log.info("%s: started pid %d%s (%s)", child.name, pid, pinned, " ".join(child.process.argv[1:]))
        self.carry_out(child, child.life.spawned(now, pid), now)

    def _on_broker(self, msg: broker_frames.BrokerStatus | broker_frames.Retired) -> None:
        now = self.clock()
        if isinstance(msg, broker_frames.BrokerStatus):
            self.view.on_status(msg, now)
        elif (child := self.children.get(msg.name)) is not None:
            self.carry_out(child, child.life.retired(now, msg.pid, msg.finished, msg.failed), now)

    def _begin_stop(self) -> None:
        log.info("stopping the stack")
        self.stopping = True
        self._phases = stop_phases([c.spec for c in self.children.values()])
        now = self.clock()
        for child in self.children.values():
            self.carry_out(child, child.life.shutdown(), now)
        if self._phases:
            self._stop_phase(self._phases[0], now)

    def _stop_phase(self, names: list[str], now: float) -> None:
        log.info("stopping %s", ", ".join(names))
        for name in names:
            if (child := self.children.get(name)) is not None:
                self.carry_out(child, child.life.stop(now), now)

    def _rotate_logs(self) -> None:
        s = self.settings
        for child in self.children.values():
            rotate_log(child.process.log_path, s.log_max_bytes, s.log_backups, in_use=True)
        rotate_log(self.run_dir.log("supervisor"), s.log_max_bytes, s.log_backups, in_use=True)


def _recv(sock: zmq.Socket) -> list[bytes] | None:
    try:
        return sock.recv_multipart(zmq.NOBLOCK)
    except zmq.Again:
        return None


def _drain_pipe(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 512):
                return
        except BlockingIOError:
            return
