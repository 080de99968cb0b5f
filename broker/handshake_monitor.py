"""Logs, on a CurveZMQ client (worker, front), the broker's refusals of it: the socket monitor's
events read by ``curve.HandshakeWatch``, each kind of refusal said once per ``LOG_EVERY_S``.

    monitor = monitor_refusals(sock)    # before sock.connect, so no event is missed
    task = asyncio.create_task(log_refusals(sock, monitor, keys.public, log))
"""

from __future__ import annotations

import logging
import time

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from .curve import CLIENT_EVENTS, HandshakeWatch, RefusalLog


def monitor_refusals(sock: zmq.asyncio.Socket) -> zmq.asyncio.Socket:
    return sock.get_monitor_socket(CLIENT_EVENTS)


async def log_refusals(sock: zmq.asyncio.Socket, monitor: zmq.asyncio.Socket, public_key: bytes,
                       log: logging.Logger) -> None:
    """Until cancelled; then the monitor is closed."""
    watch = HandshakeWatch(public_key.decode())
    said = RefusalLog()
    try:
        while True:
            msg = parse_monitor_message(await monitor.recv_multipart())
            line = watch.on_event(int(msg["event"]), int(msg["value"]),
                                  msg["endpoint"].decode(errors="replace"))
            if line is None:
                continue
            repeats = said.note((line,), time.monotonic())
            if repeats is not None:
                log.error("%s%s", line, f" ({repeats} more refusals since)" if repeats else "")
    finally:
        if not sock.closed:
            sock.disable_monitor()
        monitor.close(0)
