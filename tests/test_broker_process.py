"""``python -m broker`` as a real process, with real DEALER sockets playing front and worker."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import pytest
import zmq

from broker import frames
from broker.frames import ChatJob, Delta, Deltas, Finished, Ready, Submit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def broker():
    run = tempfile.mkdtemp(prefix="ts-b-", dir="/tmp")
    front_ep, back_ep = f"ipc://{run}/front.ipc", f"ipc://{run}/workers.ipc"
    proc = subprocess.Popen([sys.executable, "-m", "broker", "--frontend", front_ep,
                             "--backend", back_ep], cwd=ROOT)
    ctx = zmq.Context()
    yield ctx, front_ep, back_ep
    proc.terminate()
    assert proc.wait(5) == 0
    ctx.destroy(0)


def dealer(ctx: zmq.Context, endpoint: str, identity: bytes | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(endpoint)
    return sock


def recv(sock: zmq.Socket, timeout_s: float = 3.0, skip=(frames.Heartbeat, frames.BrokerStatus)):
    """The next frame that is not a heartbeat/status, within the deadline."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if not sock.poll(left * 1000):
            break
        parts = sock.recv_multipart()
        decoder = frames.to_front_decoder if sock.getsockopt(zmq.IDENTITY) == b"" else frames.worker_decoder
        msg = decoder.decode(parts[-1])
        if not isinstance(msg, skip):
            return parts, msg
    raise TimeoutError("no frame")


def test_turn_is_routed_streamed_and_finished_through_the_broker(broker):
    ctx, front_ep, back_ep = broker
    worker = dealer(ctx, back_ep, b"chat-0")
    worker.send(frames.encode(Ready("chat-0", "chat", "hf", "tiny", 4, os.getpid(), "cpu",
                                          frames.PROTOCOL_VERSION)))
    front = dealer(ctx, front_ep)
    submit = Submit("r1", "s1", ChatJob("p", "", "hi", 5))
    # The worker may register just after the submit: the broker queues it meanwhile.
    front.send(frames.encode(submit))
    parts, msg = recv(worker)
    assert msg == submit and len(parts) == 2
    front_id = parts[0]
    worker.send_multipart([front_id, frames.encode(Deltas([Delta("r1", "Hi", 1)]))])
    worker.send(frames.encode(Finished("r1", "stop", 3, 1)))
    assert recv(front)[1] == Deltas([Delta("r1", "Hi", 1)])
    assert recv(front)[1] == Finished("r1", "stop", 3, 1)


def test_worker_that_goes_silent_fails_its_requests_with_worker_lost(broker):
    ctx, front_ep, back_ep = broker
    worker = dealer(ctx, back_ep, b"chat-0")
    worker.send(frames.encode(Ready("chat-0", "chat", "hf", "tiny", 4, os.getpid(), "cpu",
                                          frames.PROTOCOL_VERSION)))
    front = dealer(ctx, front_ep)
    front.send(frames.encode(Submit("r1", "s1", ChatJob("p", "", "hi", 5))))
    recv(worker)
    worker.close(0)  # no more heartbeats, as if it were killed
    started = time.monotonic()
    _, failed = recv(front, timeout_s=6.0)  # expiry is 3 s (BrokerConfig.liveness)
    assert failed == frames.Failed("r1", "worker_lost", failed.message)
    assert time.monotonic() - started < 4.0


def test_front_heartbeat_is_answered_with_broker_status(broker):
    ctx, front_ep, back_ep = broker
    worker = dealer(ctx, back_ep, b"tool-0")
    worker.send(frames.encode(Ready("tool-0", "tool", "classifier", "tiny", 8, os.getpid(), "cpu",
                                          frames.PROTOCOL_VERSION)))
    front = dealer(ctx, front_ep)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        front.send(frames.encode(frames.FrontHeartbeat()))
        _, status = recv(front, skip=())
        if status.workers:
            assert status.workers[0].name == "tool-0" and status.workers[0].state == "ready"
            return
    pytest.fail("worker never showed up in BrokerStatus")
