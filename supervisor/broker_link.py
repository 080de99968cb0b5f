"""The supervisor's DEALER to the broker's control socket (ipc in the run dir).

Sends never block and never queue for a broker that is not there (``IMMEDIATE``): a frame
about a worker is only worth something to the broker that knows that worker, and ``Watch``
is repeated every heartbeat anyway. ZeroMQ reconnects by itself after a broker restart.
"""

from __future__ import annotations

import logging

import msgspec
import zmq

from broker import frames

log = logging.getLogger("supervisor")


class BrokerLink:
    def __init__(self, endpoint: str, context: zmq.Context | None = None) -> None:
        self.sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self.sock.connect(endpoint)

    def close(self) -> None:
        self.sock.close(0)

    def watch(self) -> None:
        self._send(frames.Watch())

    def worker_gone(self, name: str, pid: int, message: str) -> None:
        self._send(frames.WorkerGone(name, pid, message))

    def retire(self, name: str, pid: int, grace_s: float, code: frames.FailCode) -> bool:
        return self._send(frames.Retire(name, pid, grace_s, code))

    def receive(self) -> list[frames.BrokerStatus | frames.Retired]:
        """Every frame waiting on the socket, decoded."""
        out: list[frames.BrokerStatus | frames.Retired] = []
        while True:
            try:
                payload = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                out.append(frames.to_supervisor_decoder.decode(payload))
            except msgspec.DecodeError as exc:
                log.warning("undecodable frame from the broker: %s", exc)

    def _send(self, frame: frames.Watch | frames.WorkerGone | frames.Retire) -> bool:
        try:
            self.sock.send(frames.encode(frame), zmq.NOBLOCK)
            return True
        except zmq.Again:  # no broker connected right now
            return False
