"""The running supervisor: spawns the stack, watches it, restarts per policy, serves the control socket.

One thread, one loop: poll the control socket for ~50 ms, reap children, ask each child's
RestartPolicy what is due, advance a shutdown if one is under way. Children are process group
leaders (signals reach their whole tree) and die with the supervisor (PR_SET_PDEATHSIG).
SIGTERM, SIGINT or SIGHUP does what the ``stop`` request does; a second one SIGKILLs at once.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import zmq

from supervisor import control
from supervisor.children import ChildSpec, child_specs, stop_phases
from supervisor.config import StackConfig
from supervisor.policy import ALIVE, RestartPolicy, State
from supervisor.process import ChildProcess, child_env, cuda_visible_devices, rotate_log
from supervisor.rundir import PidFileLock, RunDir

log = logging.getLogger("supervisor")

POLL_INTERVAL_S = 0.05
LOG_CHECK_INTERVAL_S = 5.0


class Child:
    """A spec, its process and its policy, plus what an operator is waiting for."""

    def __init__(self, spec: ChildSpec, process: ChildProcess, policy: RestartPolicy) -> None:
        self.spec = spec
        self.process = process
        self.policy = policy
        self.kill_at: float | None = None  # SIGKILL the group if still alive then
        self.restart_waiters: list[list[bytes]] = []  # control envelopes owed a reply


class Supervisor:
    def __init__(
        self, cfg: StackConfig, env: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = cfg
        self.settings = cfg.supervisor
        self.run_dir = RunDir(Path(cfg.supervisor.run_dir))
        self.clock = clock
        self.children: dict[str, Child] = {}
        for spec in child_specs(cfg):
            cuda = cuda_visible_devices(spec.device) if spec.is_worker else None
            process = ChildProcess(
                spec.name,
                spec.argv(self.run_dir.child_config(spec.name)),
                env=child_env(env, cuda_visible_devices=cuda),
                log_path=self.run_dir.log(spec.name),
            )
            policy = RestartPolicy(
                startsecs=self.settings.startsecs,
                startretries=self.settings.startretries,
                backoff_initial_s=self.settings.backoff_initial_s,
                backoff_max_s=self.settings.backoff_max_s,
            )
            self.children[spec.name] = Child(spec, process, policy)
        self._phases = stop_phases([c.spec for c in self.children.values()])
        self.stopping = False
        self._stop_requested = False
        self._kill_requested = False  # a second SIGINT/SIGTERM: do not wait for graceful exits
        self._next_log_check = 0.0

    # ---- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped. 0 after a clean stop, 1 if the run dir is held by another supervisor."""
        self.run_dir.create()
        lock = PidFileLock(self.run_dir)
        if not lock.acquire():
            log.error("another supervisor (pid %s) runs in %s", self.run_dir.live_pid(), self.run_dir.path)
            return 1
        sock: zmq.Socket | None = None
        try:
            for child in self.children.values():
                _write_private(self.run_dir.child_config(child.spec.name), child.spec.config_json())
            self.run_dir.control_socket.unlink(missing_ok=True)  # left by a SIGKILLed supervisor
            sock = zmq.Context.instance().socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(self.run_dir.control_endpoint)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, self._on_signal)
            log.info("supervisor pid %d, run dir %s", os.getpid(), self.run_dir.path)
            now = self.clock()
            for child in self.children.values():  # broker, workers, wsfront
                self._spawn(child, now)
            self._loop(sock)
        finally:
            for child in self.children.values():  # only if the loop died: never leave orphans
                if child.process.alive:
                    child.process.kill()
            if sock is not None:
                sock.close()
            self._remove_sockets()
            lock.release()
        log.info("supervisor stopped")
        return 0

    def _loop(self, sock: zmq.Socket) -> None:
        while True:
            if sock.poll(int(POLL_INTERVAL_S * 1000), zmq.POLLIN):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_request(sock, frames)
            if self._stop_requested and not self.stopping:
                self._begin_stop(sock)
            if self._kill_requested:
                self._kill_requested = False
                log.warning("second signal: SIGKILL to every process group")
                for child in self.children.values():
                    if child.process.alive:
                        child.policy.on_stop()
                        child.process.kill()
            now = self.clock()
            self._reap(sock, now)
            self._advance(now)
            if self.stopping and not any(c.policy.state in ALIVE for c in self.children.values()):
                return
            if now >= self._next_log_check:
                self._rotate_logs()
                self._next_log_check = now + LOG_CHECK_INTERVAL_S

    def _on_signal(self, signum: int, _frame: object) -> None:
        # acted on in the loop, never inside the handler
        if self._stop_requested:
            self._kill_requested = True
        self._stop_requested = True

    # ---- children ----------------------------------------------------------------------------

    def _spawn(self, child: Child, now: float) -> None:
        rotate_log(child.process.log_path, self.settings.log_max_bytes, self.settings.log_backups, in_use=False)
        try:
            pid = child.process.spawn()
        except OSError as e:
            log.error("%s: cannot start: %s", child.spec.name, e)
            child.policy.on_spawn(now)
            child.policy.on_exit(now, 127)
            return
        child.policy.on_spawn(now)
        child.kill_at = None
        log.info("%s: started pid %d (%s)", child.spec.name, pid, " ".join(child.process.argv[1:]))

    def _reap(self, sock: zmq.Socket, now: float) -> None:
        for child in self.children.values():
            if child.policy.state not in ALIVE or child.process.poll() is None:
                continue
            code = child.process.returncode
            child.process.reap_group()
            requested = child.policy.state is State.STOPPING
            restart_at = child.policy.on_exit(now, code)
            name = child.spec.name
            if requested:
                log.info("%s: stopped (%s)", name, child.policy.describe(now) or "exit")
            elif restart_at is not None:
                log.warning("%s: exited (%s)", name, child.policy.describe(now))
            else:
                log.error("%s: %s; see %s", name, child.policy.describe(now), child.process.log_path)
            if child.restart_waiters and child.policy.state is State.EXITED:
                self._start_fresh(sock, child, now)

    def _advance(self, now: float) -> None:
        for child in self.children.values():
            if child.policy.tick(now) and not self.stopping:
                log.info("%s: restarting (restart %d)", child.spec.name, child.policy.restarts + 1)
                self._spawn(child, now)
            if child.policy.state is State.STOPPING and child.kill_at is not None and now >= child.kill_at:
                name, timeout = child.spec.name, self.settings.stop_timeout_s
                log.warning("%s: still alive %.0fs after SIGTERM; SIGKILL", name, timeout)
                child.process.kill()
                child.kill_at = None
        if self.stopping and self._phases:
            if not any(self.children[n].policy.state in ALIVE for n in self._phases[0]):
                self._phases.pop(0)
                if self._phases:
                    self._stop_phase(self._phases[0], now)

    def _stop_child(self, child: Child, now: float) -> None:
        if child.policy.state is State.STOPPING:
            return  # already signalled; keep its deadline
        if child.policy.on_stop():
            child.process.terminate()
            child.kill_at = now + self.settings.stop_timeout_s

    def _stop_phase(self, names: list[str], now: float) -> None:
        log.info("stopping %s", ", ".join(names))
        for name in names:
            self._stop_child(self.children[name], now)

    def _start_fresh(self, sock: zmq.Socket, child: Child, now: float) -> None:
        """An operator restart: a fresh set of retries, spawned now, and the waiters answered."""
        waiters, child.restart_waiters = child.restart_waiters, []
        if self.stopping:
            reply: control.Reply = control.Failed(message="supervisor is stopping")
        else:
            child.policy.reset()
            self._spawn(child, now)
            if child.process.alive:
                reply = control.Done(message=f"{child.spec.name} restarted", pid=child.process.pid)
            else:
                reply = control.Failed(message=f"{child.spec.name}: {child.policy.describe(now)}")
        for envelope in waiters:
            _send(sock, envelope, reply)

    def _begin_stop(self, sock: zmq.Socket) -> None:
        log.info("stopping the stack")
        self.stopping = True
        now = self.clock()
        for child in self.children.values():
            if child.restart_waiters:
                self._start_fresh(sock, child, now)  # answers "supervisor is stopping"
            if child.policy.state is State.BACKOFF:
                child.policy.on_stop()  # nothing to signal: just no more restarts
        if self._phases:
            self._stop_phase(self._phases[0], now)

    # ---- control socket ----------------------------------------------------------------------

    def _on_request(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        envelope, body = frames[:-1], frames[-1]
        try:
            request = control.request_decoder.decode(body)
        except Exception as e:  # a bad client must not take the supervisor down
            _send(sock, envelope, control.Failed(message=f"bad request: {e}"))
            return
        if isinstance(request, control.StatusRequest):
            _send(sock, envelope, self.status())
        elif isinstance(request, control.StopRequest):
            self._stop_requested = True
            _send(sock, envelope, control.Done(message="stopping", pid=os.getpid()))
        else:
            child = self.children.get(request.name)
            if child is None:
                known = ", ".join(self.children)
                _send(sock, envelope, control.Failed(message=f"no process named {request.name!r} (have {known})"))
            elif self.stopping or self._stop_requested:
                _send(sock, envelope, control.Failed(message="supervisor is stopping"))
            else:
                log.info("%s: restart requested", child.spec.name)
                child.restart_waiters.append(envelope)
                now = self.clock()
                self._stop_child(child, now)
                if child.policy.state is not State.STOPPING:  # not running: start it now
                    self._start_fresh(sock, child, now)

    def status(self) -> control.StatusReply:
        now = self.clock()
        return control.StatusReply(
            supervisor_pid=os.getpid(),
            stopping=self.stopping or self._stop_requested,
            processes=[
                control.ProcessInfo(
                    name=c.spec.name,
                    kind=c.spec.kind,
                    pid=c.process.pid if c.process.alive else None,
                    state=c.policy.state.value,
                    uptime_s=round(c.policy.uptime(now), 3),
                    restarts=c.policy.restarts,
                    device=c.spec.device,
                    exit_code=c.policy.last_exit_code,
                    detail=c.policy.describe(now),
                    log=str(c.process.log_path),
                )
                for c in self.children.values()
            ],
        )

    # ---- files -------------------------------------------------------------------------------

    def _rotate_logs(self) -> None:
        s = self.settings
        for child in self.children.values():
            rotate_log(child.process.log_path, s.log_max_bytes, s.log_backups, in_use=True)
        rotate_log(self.run_dir.log("supervisor"), s.log_max_bytes, s.log_backups, in_use=True)

    def _remove_sockets(self) -> None:
        self.run_dir.control_socket.unlink(missing_ok=True)
        for endpoint in (self.cfg.broker.frontend, self.cfg.broker.backend):
            if endpoint.startswith("ipc://"):
                path = Path(endpoint[len("ipc://"):])
                if path.parent == self.run_dir.path:
                    path.unlink(missing_ok=True)


def _send(sock: zmq.Socket, envelope: list[bytes], reply: control.Reply) -> None:
    sock.send_multipart([*envelope, control.encoder.encode(reply)])


def _write_private(path: Path, data: bytes) -> None:
    """Mode 0600 from the first byte: the child configs hold the API key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # it may have existed with looser bits
    with os.fdopen(fd, "wb") as f:
        f.write(data)
