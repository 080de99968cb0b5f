"""The front's link to the broker: one DEALER socket shared by every connection.

Frames from the broker are dispatched by request id to the connection that submitted
the request; the broker's status answers to our heartbeats drive ``/healthz``. A broker
silent for ``liveness`` heartbeat intervals (killed, hung), or one that answers as a new
process (another ``epoch`` in its status), has lost every request we sent it: those fail with
``worker_lost`` rather than wait forever. ZeroMQ reconnects to a restarted broker by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import msgspec
import zmq
import zmq.asyncio

from broker import frames
from broker.curve import ClientKeys, secure_client
from broker.handshake_monitor import log_refusals, monitor_refusals

log = logging.getLogger("wsfront.backend")

ToSession = frames.Delta | frames.Finished | frames.ToolResult | frames.Failed


class Receiver(Protocol):
    def deliver(self, frame: ToSession) -> None: ...


class BrokerLink:
    """The socket is a plain (blocking-API) ZeroMQ socket read from the event loop: its FD is
    edge-triggered and says only that the socket's events changed, so every wakeup, and every
    send (a send can consume the edge that announced input), is followed by reading until
    ``EVENTS`` has no ``POLLIN`` left, so no frame waits for the next edge."""

    def __init__(self, endpoint: str, heartbeat_interval_s: float = 0.25, liveness: int = 12,
                 curve: ClientKeys | None = None, send_hwm: int = 100_000) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, send_hwm)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.curve = curve
        self._monitor: zmq.asyncio.Socket | None = None
        if curve is not None:
            secure_client(self.sock, curve)
            # the broker's refusals, in our log (read through an asyncio shadow socket)
            self._monitor = zmq.asyncio.Socket.from_socket(monitor_refusals(self.sock))
        self.sock.connect(endpoint)
        self.interval = heartbeat_interval_s
        self.stale_after = heartbeat_interval_s * liveness
        self.routes: dict[str, Receiver] = {}
        self.status: frames.BrokerStatus | None = None
        self.status_at = 0.0
        self.heard_at = time.monotonic()  # any frame from the broker
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_due = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.getsockopt(zmq.FD), self._drain)
        self._tasks = [asyncio.create_task(self._beat())]
        self._drain_soon()  # frames may be waiting already
        if self._monitor is not None and self.curve is not None:
            self._tasks.append(asyncio.create_task(
                log_refusals(self.sock, self._monitor, self.curve.public, log)))

    async def close(self) -> None:
        if self._loop is not None and not self.sock.closed:
            self._loop.remove_reader(self.sock.getsockopt(zmq.FD))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._monitor is not None and not self._monitor.closed:  # never started
            self._monitor.close(0)
        self.sock.close(0)
        self.ctx.term()

    def send(self, frame: frames.Submit | frames.Cancel, owner: Receiver) -> None:
        if isinstance(frame, frames.Submit):
            self.routes[frame.request_id] = owner
        if not self._send_now(frames.encode(frame)) and isinstance(frame, frames.Submit):
            # The broker is gone and the pipe is full. Answered later, never from inside
            # send: the owner may be in the middle of carrying out the actions that made it.
            self.routes.pop(frame.request_id, None)
            asyncio.get_running_loop().call_soon(owner.deliver, frames.Failed(
                frame.request_id, "no_worker", "the broker is unreachable"))

    def _send_now(self, payload: bytes) -> bool:
        """Send without waiting; False if the pipe is full. Input that came meanwhile is read
        at the end of this tick (never from inside send: the caller is mid-way through its
        actions)."""
        try:
            self.sock.send(payload, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False
        finally:
            self._drain_soon()

    def _drain_soon(self) -> None:
        if not self._drain_due and self._loop is not None:
            self._drain_due = True
            self._loop.call_soon(self._drain)

    def forget(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            self.routes.pop(rid, None)

    def ready_kinds(self) -> dict[str, int] | None:
        """Ready workers per kind as the broker last reported, None if the broker is silent."""
        if self.status is None or time.monotonic() - self.status_at > self.stale_after:
            return None
        counts = {"chat": 0, "tool": 0}
        for worker in self.status.workers:
            if worker.state == "ready":
                counts[worker.kind] += 1
        return counts

    def worker_loads(self) -> list[dict[str, object]]:
        if self.status is None:
            return []
        return [{"name": w.name, "kind": w.kind, "state": w.state, "load": w.load,
                 "capacity": w.capacity, "pid": w.pid} for w in self.status.workers]

    async def _beat(self) -> None:
        beat = frames.encode(frames.FrontHeartbeat())
        while True:
            self._send_now(beat)  # a full pipe: the broker is gone; the next beat tries again
            await asyncio.sleep(self.interval)
            self._fail_if_broker_lost()

    def _fail_if_broker_lost(self) -> None:
        if not self.routes or time.monotonic() - self.heard_at <= self.stale_after:
            return
        if self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return  # frames are waiting: it was our loop that stalled, not the broker
        self._fail_all(f"the broker has not answered for {time.monotonic() - self.heard_at:.1f}s")

    def _fail_all(self, why: str) -> None:
        lost = dict(self.routes)
        self.routes.clear()  # the same dict: _read holds it
        if lost:
            log.warning("%s: failing %d request(s) in flight", why, len(lost))
        for rid, owner in lost.items():
            owner.deliver(frames.Failed(rid, "worker_lost", f"{why}; the turn was lost"))

    def _drain(self) -> None:
        """Every frame waiting on the socket, in order."""
        self._drain_due = False
        sock, decode, routes = self.sock, frames.to_front_decoder.decode, self.routes
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                payload = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.heard_at = time.monotonic()
            try:
                msg = decode(payload)
            except msgspec.DecodeError as exc:
                log.warning("undecodable frame from broker: %s", exc)
                continue
            if isinstance(msg, frames.Deltas):
                for item in msg.items:
                    owner = routes.get(item.request_id)
                    if owner is not None:
                        owner.deliver(item)
            elif isinstance(msg, frames.BrokerStatus):
                if self.status is not None and msg.epoch != self.status.epoch:
                    self._fail_all("the broker restarted")
                self.status, self.status_at = msg, time.monotonic()
            else:  # the last frame of a request
                owner = routes.pop(msg.request_id, None)
                if owner is not None:
                    owner.deliver(msg)
