"""The broker process: ROUTER sockets for fronts, workers and (optionally) the supervisor,
around a ``WorkerTable``.

Output frames from workers (``[front_id, payload]``) are forwarded by envelope without
being decoded; only control frames (single part), front and supervisor frames are decoded.
With a ``curve_dir``, the tcp:// endpoints are CurveZMQ servers: this loop also answers the
ZAP requests (``broker.curve`` decides) and logs every refused client.
"""

from __future__ import annotations

import logging
import secrets
import signal
import time

import msgspec
import zmq

from zmq.utils.monitor import recv_monitor_message

from . import curve, frames
from .config import BrokerConfig
from .heap import freeze_startup_heap
from .table import Action, Refused, ToFront, ToSupervisor, WorkerTable

log = logging.getLogger("broker")

_BATCH = 512  # frames read from one socket before looking at the other and the clock


class Broker:
    def __init__(self, config: BrokerConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        self.table = WorkerTable(config.heartbeat_interval_s, config.liveness,
                                 config.queue_max, config.queue_timeout_s,
                                 epoch=secrets.randbits(63))
        self.ctx = context or zmq.Context.instance()
        self.zap: zmq.Socket | None = None
        self._monitors: dict[zmq.Socket, str] = {}  # handshake failures, per CURVE endpoint
        self._refusals = curve.RefusalLog()
        self._server_keys: tuple[bytes, bytes] | None = None
        if config.curve_dir and (curve.is_tcp(config.frontend) or curve.is_tcp(config.backend)):
            self._server_keys = curve.load_server(config.curve_dir)
            self.zap = self.ctx.socket(zmq.REP)  # bound before any handshake can need it
            self.zap.setsockopt(zmq.LINGER, 0)
            self.zap.bind(curve.ZAP_ENDPOINT)
        self.front = self._router(config.frontend, "fronts")
        self.back = self._router(config.backend, "workers")
        self.back.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted worker reclaims its name
        self.control = self._router(config.control) if config.control else None
        self._running = True

    def _router(self, endpoint: str, domain: str = "") -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable sends raise instead of vanishing
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        if self._server_keys is not None and domain and curve.is_tcp(endpoint):
            curve.secure_server(sock, *self._server_keys, domain=domain)
            self._monitors[sock.get_monitor_socket(curve.HANDSHAKE_FAILURES)] = domain
        sock.bind(endpoint)
        return sock

    def stop(self, *_: object) -> None:
        self._running = False

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        if self.control is not None:
            poller.register(self.control, zmq.POLLIN)
        for sock in (self.zap, *self._monitors):
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
        interval = self.config.heartbeat_interval_s
        next_beat = time.monotonic()
        log.info("broker serving fronts on %s, workers on %s", self.config.frontend, self.config.backend)
        if self.zap is not None:
            secured = [ep for ep in (self.config.frontend, self.config.backend) if curve.is_tcp(ep)]
            log.info("CurveZMQ on %s: clients need a key from %s/%s", ", ".join(secured),
                     self.config.curve_dir, curve.CLIENTS_DIR)
        while self._running:
            timeout_ms = max(0.0, next_beat - time.monotonic()) * 1000
            ready = dict(poller.poll(timeout_ms))
            if self.back in ready:
                self._read_workers()
            if self.front in ready:
                self._read_fronts()
            if self.control is not None and self.control in ready:
                self._read_supervisor(self.control)
            if self.zap is not None and self.zap in ready:
                self._answer_zap(self.zap)
            for monitor, domain in self._monitors.items():
                if monitor in ready:
                    self._read_monitor(monitor, domain)
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + interval
                self._send(self.table.heartbeats())
                self._send(self.table.expire(now))
        for monitor in self._monitors:
            monitor.close(0)
        for sock in (self.front, self.back, self.control, self.zap):
            if sock is not None:
                sock.close(0)

    # ------------------------------------------------------------ inbound

    def _read_workers(self) -> None:
        table = self.table
        for _ in range(_BATCH):
            try:
                parts = self.back.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            identity = parts[0]
            now = time.monotonic()
            if len(parts) == 3:  # [identity, front_id, payload]: output, forwarded untouched
                if table.touch_worker(identity, now):
                    self._to_front(parts[1], parts[2])
                continue
            try:
                msg = frames.control_decoder.decode(parts[-1])
            except msgspec.DecodeError as exc:
                log.warning("undecodable frame from worker %r: %s", identity, exc)
                continue
            if isinstance(msg, frames.Heartbeat):
                self._send(table.on_heartbeat(identity, msg.load, now))
            elif isinstance(msg, frames.Ready):
                log.info("worker %s ready: kind=%s engine=%s model=%s capacity=%d pid=%d device=%s",
                         msg.name, msg.kind, msg.engine, msg.model, msg.capacity, msg.pid, msg.device)
                self._send(table.on_ready(identity, msg, now))
            else:  # Finished / ToolResult: forward, then free the slot
                front = table.front_of(msg.request_id)
                if front is not None:
                    self._to_front(front, parts[-1])
                self._send(table.on_done(identity, msg.request_id, now))

    def _read_fronts(self) -> None:
        table = self.table
        for _ in range(_BATCH):
            try:
                identity, payload = self.front.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue  # not [identity, payload]
            now = time.monotonic()
            try:
                msg = frames.front_decoder.decode(payload)
            except msgspec.DecodeError as exc:
                log.warning("undecodable frame from front %r: %s", identity, exc)
                continue
            if isinstance(msg, frames.Submit):
                self._send(table.on_submit(identity, msg, payload, now))
            elif isinstance(msg, frames.Cancel):
                self._send(table.on_cancel(identity, msg, now))
            else:
                self._send(table.on_front_heartbeat(identity, now))

    def _read_supervisor(self, sock: zmq.Socket) -> None:
        while True:
            try:
                identity, payload = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            now = time.monotonic()
            try:
                msg = frames.supervisor_decoder.decode(payload)
            except msgspec.DecodeError as exc:
                log.warning("undecodable frame from the supervisor: %s", exc)
                continue
            if isinstance(msg, frames.Watch):
                self._send(self.table.on_watch(identity, now))
            elif isinstance(msg, frames.WorkerGone):
                actions = self.table.on_worker_gone(msg, now)
                log.info("worker %s (pid %d) is gone: %s; %d turn(s) failed", msg.name, msg.pid,
                         msg.message or "exited", sum(isinstance(a, ToFront) for a in actions))
                self._send(actions)
            else:
                log.info("retiring worker %s (pid %d): %gs for its turns to finish",
                         msg.name, msg.pid, msg.grace_s)
                self._send(self.table.on_retire(identity, msg, now))

    def _answer_zap(self, sock: zmq.Socket) -> None:
        while True:
            try:
                request = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply, refusal = curve.zap_reply(request, lambda: curve.allowed_clients(self.config.curve_dir))
            sock.send_multipart(reply)
            if refusal is not None:
                self._log_refusal(refusal)

    def _read_monitor(self, sock: zmq.Socket, domain: str) -> None:
        while True:
            try:
                event = recv_monitor_message(sock, zmq.NOBLOCK)
            except zmq.Again:
                return
            self._log_refusal(curve.handshake_failure(event, domain))

    def _log_refusal(self, line: str) -> None:
        repeats = self._refusals.note((line,), time.monotonic())
        if repeats is not None:
            log.warning("%s%s", line, f" (and {repeats} more times since it was last logged)" if repeats else "")

    # ------------------------------------------------------------ outbound

    def _send(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, ToFront):
                self._to_front(action.identity, action.payload)
                continue
            if isinstance(action, Refused):
                self._log_refusal(action.reason)
                continue
            if isinstance(action, ToSupervisor):
                if self.control is not None:
                    try:
                        self.control.send_multipart((action.identity, action.payload), zmq.NOBLOCK)
                    except zmq.ZMQError as exc:  # it asks again every heartbeat
                        log.debug("cannot reach the supervisor: %s", exc)
                continue
            try:
                self.back.send_multipart((action.identity, *action.parts), zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # worker gone or its pipe is full; expiry handles it
                log.debug("cannot reach worker %r: %s", action.identity, exc)

    def _to_front(self, identity: bytes, payload: bytes) -> None:
        try:
            self.front.send_multipart((identity, payload), zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # front gone: its clients are gone too
            log.debug("cannot reach front %r: %s", identity, exc)


def serve(config: BrokerConfig) -> None:
    broker = Broker(config)
    signal.signal(signal.SIGTERM, broker.stop)
    signal.signal(signal.SIGINT, broker.stop)
    freeze_startup_heap(log)
    broker.run()
    log.info("broker stopped")
