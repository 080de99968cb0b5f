"""The running supervisor: spawns the stack, watches it, restarts per policy, serves the control socket.

One thread, one loop: poll the control socket, the broker link and a SIGCHLD wakeup pipe
for up to 50 ms, reap children,
ask each child's RestartPolicy what is due, advance a shutdown if one is under way. Children
are process group leaders (signals reach their whole tree) and die with the supervisor
(PR_SET_PDEATHSIG). SIGTERM, SIGINT or SIGHUP does what the ``stop`` request does; a second
one SIGKILLs at once.

The broker link makes workers more than processes: a worker is RUNNING once the broker has
its Ready; its exit is told to the broker at once (its turns fail now, not at heartbeat
expiry); one the broker has not heard from for ``hang_timeout_s`` is SIGKILLed (and so
restarted); ``restart``/``stop`` of a worker first retires it at the broker (no new turns,
``drain_grace_s`` for the running ones) and signals it only once the broker says it is idle.

``attach`` adds a worker to the running set (spawned at once, RUNNING once registered);
``detach`` stops one the way ``stop NAME`` does and then forgets it. Both last as long as
this supervisor: the config file is not rewritten.
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
from supervisor import control
from supervisor.attach import attached_worker
from supervisor.broker_link import BrokerLink
from supervisor.broker_view import BrokerView
from supervisor.children import ChildSpec, child_specs, stop_phases
from broker.curve import is_tcp
from supervisor.config import ConfigError, StackConfig
from supervisor.keys import LOCAL_CLIENT, make_keys
from supervisor.placement import format_cpus, host_cpus, plan_cpus
from supervisor.policy import ALIVE, RestartPolicy, State
from supervisor.process import ChildProcess, child_env, cuda_visible_devices, group_rss, rotate_log
from supervisor.rundir import PidFileLock, RunDir
from workers.config import WorkerConfig

log = logging.getLogger("supervisor")

POLL_INTERVAL_S = 0.05
LOG_CHECK_INTERVAL_S = 5.0
RETIRE_MARGIN_S = 3.0  # past the drain grace, stop a worker even without the broker's Retired


class Child:
    """A spec, its process and its policy, plus what an operator is waiting for."""

    def __init__(self, spec: ChildSpec, process: ChildProcess, policy: RestartPolicy) -> None:
        self.spec = spec
        self.process = process
        self.policy = policy
        self.kill_at: float | None = None  # SIGKILL the group if still alive then
        self.restart_waiters: list[list[bytes]] = []  # control envelopes owed a reply
        self.retire_until: float | None = None  # draining at the broker; stop it by then
        self.hang_killed = False  # SIGKILLed as hung; not yet reaped
        self.detached = False  # forget it once it is down


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
        self.env = dict(env)
        self.host_cpus = host_cpus()  # the CPU plan splits these among the workers
        self.children: dict[str, Child] = {spec.name: self._child(spec) for spec in child_specs(cfg)}
        self._phases: list[list[str]] = []  # what is left to stop, phase by phase, once stopping
        self.stopping = False
        self._stop_requested = False
        self._kill_requested = False  # a second SIGINT/SIGTERM: do not wait for graceful exits
        self._next_log_check = 0.0
        self._wake_r = -1  # read end of the SIGCHLD wakeup pipe, while running

    def _child(self, spec: ChildSpec) -> Child:
        cuda = cuda_visible_devices(spec.device) if spec.is_worker else None
        process = ChildProcess(
            spec.name,
            spec.argv(self.run_dir.child_config(spec.name)),
            env=child_env(self.env, cuda_visible_devices=cuda),
            log_path=self.run_dir.log(spec.name),
        )
        policy = RestartPolicy(
            startsecs=self.settings.startsecs,
            startretries=self.settings.startretries,
            backoff_initial_s=self.settings.backoff_initial_s,
            backoff_max_s=self.settings.backoff_max_s,
            await_registration=spec.is_worker,
        )
        return Child(spec, process, policy)

    # ---- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped. 0 after a clean stop, 1 if the run dir is held by another supervisor."""
        self.run_dir.create()
        lock = PidFileLock(self.run_dir)
        if not lock.acquire():
            log.error("another supervisor (pid %s) runs in %s", self.run_dir.live_pid(), self.run_dir.path)
            return 1
        sock: zmq.Socket | None = None
        # SIGCHLD writes to this pipe and wakes the poll: a dead worker is reaped, and its
        # turns failed at the broker, at once rather than at the next poll timeout.
        self._wake_r, wake_w = os.pipe()
        for fd in (self._wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        try:
            self._prepare_keys()
            for child in self.children.values():
                _write_private(self.run_dir.child_config(child.spec.name), child.spec.config_json())
            self.run_dir.control_socket.unlink(missing_ok=True)  # left by a SIGKILLed supervisor
            sock = zmq.Context.instance().socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(self.run_dir.control_endpoint)
            self.broker = BrokerLink(self.cfg.broker.control)
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
            if self.broker is not None:
                self.broker.close()
            self._remove_sockets()
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(wake_w)
            lock.release()
        log.info("supervisor stopped")
        return 0

    def _loop(self, sock: zmq.Socket) -> None:
        assert self.broker is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self.broker.sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        next_watch = 0.0
        while True:
            ready = dict(poller.poll(int(POLL_INTERVAL_S * 1000)))
            if self._wake_r in ready:
                while True:
                    try:
                        if not os.read(self._wake_r, 512):
                            break
                    except BlockingIOError:
                        break
            if sock in ready:
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_request(sock, frames)
            if self.broker.sock in ready:
                for msg in self.broker.receive():
                    self._on_broker(msg)
            if self.clock() >= next_watch:
                self.broker.watch()
                next_watch = self.clock() + self.watch_interval_s
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
            self._watch_workers(now)
            self._advance(now)
            self._forget_detached()
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

    def _workers(self) -> list[WorkerConfig]:
        return [c.spec.config for c in self.children.values()
                if isinstance(c.spec.config, WorkerConfig) and not c.detached]

    def _spawn(self, child: Child, now: float) -> None:
        rotate_log(child.process.log_path, self.settings.log_max_bytes, self.settings.log_backups, in_use=False)
        if child.spec.is_worker:  # the plan for the workers there are now; running ones keep theirs
            child.process.cpus = plan_cpus(self._workers(), self.host_cpus).get(child.spec.name)
        try:
            pid = child.process.spawn()
        except (OSError, subprocess.SubprocessError) as e:
            log.error("%s: cannot start: %s", child.spec.name, e)
            child.policy.on_spawn(now)
            child.policy.on_exit(now, 127)
            return
        child.policy.on_spawn(now)
        child.kill_at = None
        child.hang_killed = False
        pinned = f" on cpus {format_cpus(child.process.cpus)}" if child.process.cpus else ""
        log.info("%s: started pid %d%s (%s)", child.spec.name, pid, pinned, " ".join(child.process.argv[1:]))

    def _reap(self, sock: zmq.Socket, now: float) -> None:
        for child in self.children.values():
            if child.policy.state not in ALIVE or child.process.poll() is None:
                continue
            code = child.process.returncode
            child.process.reap_group()
            name = child.spec.name
            if child.spec.is_worker and self.broker is not None and child.process.pid is not None:
                how = "exit code ?" if code is None else (
                    f"killed by signal {-code}" if code < 0 else f"exit code {code}")
                self.broker.worker_gone(name, child.process.pid,
                                        f"worker {name} (pid {child.process.pid}) died: {how}")
            requested = child.policy.state is State.STOPPING
            restart_at = child.policy.on_exit(now, code)
            if child.retire_until is not None:  # died while draining: it was on its way out
                child.retire_until = None
                if not child.restart_waiters:
                    child.policy.on_stop()  # a `stop NAME`: no restart
            if requested:
                log.info("%s: stopped (%s)", name, child.policy.describe(now) or "exit")
            elif restart_at is not None:
                log.warning("%s: exited (%s)", name, child.policy.describe(now))
            else:
                log.error("%s: %s; see %s", name, child.policy.describe(now), child.process.log_path)
            if child.restart_waiters and child.policy.state is not State.STOPPED:
                self._start_fresh(sock, child, now)

    def _advance(self, now: float) -> None:
        for child in self.children.values():
            if child.policy.tick(now) and not self.stopping:
                log.info("%s: restarting (restart %d)", child.spec.name, child.policy.restarts + 1)
                self._spawn(child, now)
            if child.retire_until is not None and now >= child.retire_until:
                log.warning("%s: no word from the broker on its drain; stopping it anyway", child.spec.name)
                self._stop_child(child, now)
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
        child.retire_until = None
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
        self._phases = stop_phases([c.spec for c in self.children.values()])
        now = self.clock()
        for child in self.children.values():
            if child.restart_waiters:
                self._start_fresh(sock, child, now)  # answers "supervisor is stopping"
            if child.policy.state is State.BACKOFF:
                child.policy.on_stop()  # nothing to signal: just no more restarts
        if self._phases:
            self._stop_phase(self._phases[0], now)

    # ---- workers at the broker -----------------------------------------------------------

    def _on_broker(self, msg: broker_frames.BrokerStatus | broker_frames.Retired) -> None:
        now = self.clock()
        if isinstance(msg, broker_frames.BrokerStatus):
            self.view.on_status(msg, now)
            return
        child = self.children.get(msg.name)
        if child is None or child.retire_until is None or child.process.pid != msg.pid:
            return
        log.info("%s: drained (%d turn(s) finished, %d failed); stopping it",
                 msg.name, msg.finished, msg.failed)
        self._stop_child(child, now)

    def _watch_workers(self, now: float) -> None:
        """Registration (STARTING -> RUNNING) and hangs, as the broker's reports show them."""
        hang = self.settings.hang_timeout_s
        for child in self.children.values():
            if not child.spec.is_worker or child.policy.state not in (State.STARTING, State.RUNNING):
                continue
            name, pid, policy = child.spec.name, child.process.pid, child.policy
            if not policy.registered and self.view.worker(name, pid, now) is not None:
                policy.on_registered()
                log.info("%s: registered with the broker", name)
            if hang <= 0 or not policy.registered or child.retire_until is not None or child.hang_killed:
                continue
            silent = self.view.silent_for(name, pid, now)
            if silent is not None and silent > hang:
                log.error("%s: the broker has not heard from pid %s for %.1fs (hang_timeout_s %g); "
                          "SIGKILL", name, pid, silent, hang)
                child.process.kill()
                child.hang_killed = True

    def _take_down(self, child: Child, now: float, grace_s: float, code: broker_frames.FailCode) -> None:
        """Stop a child; a worker registered with a live broker is retired there first, and
        signalled once the broker reports it idle (or the grace and a margin ran out)."""
        if child.retire_until is not None or child.policy.state is State.STOPPING:
            return  # already on its way down
        pid = child.process.pid
        if (child.spec.is_worker and child.policy.registered and pid is not None
                and child.policy.state in (State.STARTING, State.RUNNING)
                and self.view.fresh(now) and self.broker is not None
                and self.broker.retire(child.spec.name, pid, grace_s, code)):
            log.info("%s: draining (%gs grace)", child.spec.name, grace_s)
            child.retire_until = now + grace_s + RETIRE_MARGIN_S
            return
        self._stop_child(child, now)

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
            return
        if isinstance(request, control.StopRequest) and request.name in ("", "all"):
            self._stop_requested = True
            _send(sock, envelope, control.Done(message="stopping", pid=os.getpid()))
            return
        if isinstance(request, control.AttachRequest):
            _send(sock, envelope, self._attach(request))
            return
        child = self.children.get(request.name)
        if child is None:
            known = ", ".join(self.children)
            _send(sock, envelope, control.Failed(message=f"no process named {request.name!r} (have {known})"))
            return
        if self.stopping or self._stop_requested:
            _send(sock, envelope, control.Failed(message="supervisor is stopping"))
            return
        now = self.clock()
        grace = self.settings.drain_grace_s if request.grace_s is None else max(request.grace_s, 0.0)
        name = child.spec.name
        if isinstance(request, control.DetachRequest):
            _send(sock, envelope, self._detach(sock, child, now, grace))
            return
        if child.detached:
            _send(sock, envelope, control.Failed(message=f"{name} is being detached"))
            return
        if isinstance(request, control.StopRequest):
            log.info("%s: stop requested", name)
            if child.policy.state in ALIVE:
                self._take_down(child, now, grace, "worker_lost")
                _send(sock, envelope, control.Done(message=f"stopping {name}", pid=child.process.pid))
            else:
                child.policy.on_stop()  # BACKOFF: no more restarts
                _send(sock, envelope, control.Done(message=f"{name} is not running"))
            return
        log.info("%s: restart requested", name)
        child.restart_waiters.append(envelope)
        if child.policy.state in ALIVE:
            self._take_down(child, now, grace, "worker_restarting")
        else:  # not running: start it now
            self._start_fresh(sock, child, now)

    # ---- attach / detach ---------------------------------------------------------------------

    def _attach(self, request: control.AttachRequest) -> control.Reply:
        if self.stopping or self._stop_requested:
            return control.Failed(message="supervisor is stopping")
        try:
            config = attached_worker(self.cfg, self._workers(), request, taken=set(self.children),
                                     host_cpus=self.host_cpus)
        except ConfigError as e:
            return control.Refused(message=str(e))
        spec = ChildSpec(config.name, config.kind, "workers", config, config.device)
        child = self._child(spec)
        _write_private(self.run_dir.child_config(spec.name), spec.config_json())
        # workers before the front, as in the config: status lists them in that order
        front = {n: c for n, c in self.children.items() if c.spec.kind == "wsfront"}
        self.children = {**{n: c for n, c in self.children.items() if n not in front},
                         spec.name: child, **front}
        log.info("%s: attached (%s engine %s, model %s, device %s)", spec.name, config.kind,
                 config.resolved_engine(), config.model, config.device)
        self._spawn(child, self.clock())
        if not child.process.alive:
            return control.Failed(message=f"{spec.name}: {child.policy.describe(self.clock())}")
        return control.Done(message=f"{spec.name} attached", pid=child.process.pid, name=spec.name)

    def _detach(self, sock: zmq.Socket, child: Child, now: float, grace_s: float) -> control.Reply:
        name = child.spec.name
        if not child.spec.is_worker:
            return control.Refused(message=f"{name} is not a worker; only workers can be detached")
        log.info("%s: detach requested", name)
        child.detached = True
        waiters, child.restart_waiters = child.restart_waiters, []
        for envelope in waiters:  # a pending restart must not bring it back
            _send(sock, envelope, control.Failed(message=f"{name} was detached"))
        if child.policy.state in ALIVE:
            self._take_down(child, now, grace_s, "worker_lost")
        else:
            child.policy.on_stop()  # BACKOFF: no more restarts
        return control.Done(message=f"detaching {name}", pid=child.process.pid, name=name)

    def _forget_detached(self) -> None:
        """Detached workers that are down leave the set (and status)."""
        for name in [n for n, c in self.children.items()
                     if c.detached and c.policy.state not in ALIVE]:
            del self.children[name]
            self.run_dir.child_config(name).unlink(missing_ok=True)
            log.info("%s: detached", name)

    def status(self) -> control.StatusReply:
        now = self.clock()
        return control.StatusReply(
            supervisor_pid=os.getpid(),
            stopping=self.stopping or self._stop_requested,
            processes=[self._info(c, now) for c in self.children.values()],
        )

    def _info(self, c: Child, now: float) -> control.ProcessInfo:
        alive = c.process.alive
        pid = c.process.pid if alive else None
        detail = c.policy.describe(now)
        in_flight: int | None = None
        if c.spec.kind == "broker" and alive:
            in_flight = self.view.in_flight(now)
        elif c.spec.is_worker and alive:
            entry = self.view.worker(c.spec.name, pid, now)
            in_flight = entry.load if entry is not None else None
            if c.retire_until is not None:
                detail = "draining" + (f", {in_flight} in flight" if in_flight is not None else "")
            elif entry is None and c.policy.state in (State.STARTING, State.RUNNING):
                detail = ("not registered with the broker" if c.policy.registered
                          else "waiting to register with the broker")
        return control.ProcessInfo(
            name=c.spec.name,
            kind=c.spec.kind,
            pid=pid,
            state=c.policy.state.value,
            uptime_s=round(c.policy.uptime(now), 3),
            restarts=c.policy.restarts,
            device=c.spec.device,
            exit_code=c.policy.last_exit_code,
            detail=detail,
            log=str(c.process.log_path),
            in_flight=in_flight,
            rss_bytes=group_rss(pid) if pid is not None else None,
            cpus=format_cpus(c.process.cpus) if pid is not None else "",
        )

    # ---- files -------------------------------------------------------------------------------

    def _prepare_keys(self) -> None:
        """CurveZMQ keys for tcp:// endpoints: made where missing (never replaced), so the
        stack's own workers and front can connect; remote ones need a bundle of their own."""
        b = self.cfg.broker
        tcp = [ep for ep in (b.frontend, b.backend) if is_tcp(ep)]
        if not tcp:
            return
        if not b.curve_dir:
            log.warning("%s without CurveZMQ ([broker] curve_dir = \"none\"): anyone who can "
                        "reach it can register a worker or submit turns", ", ".join(tcp))
            return
        made = make_keys(b.curve_dir, [LOCAL_CLIENT])
        log.info("CurveZMQ on %s with the keys in %s%s", ", ".join(tcp), b.curve_dir,
                 f" (made: {', '.join(made)})" if made else "")

    def _rotate_logs(self) -> None:
        s = self.settings
        for child in self.children.values():
            rotate_log(child.process.log_path, s.log_max_bytes, s.log_backups, in_use=True)
        rotate_log(self.run_dir.log("supervisor"), s.log_max_bytes, s.log_backups, in_use=True)

    def _remove_sockets(self) -> None:
        self.run_dir.control_socket.unlink(missing_ok=True)
        for endpoint in (self.cfg.broker.frontend, self.cfg.broker.backend, self.cfg.broker.control):
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
