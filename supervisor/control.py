"""The control socket's messages (msgspec JSON over ZeroMQ) and a small blocking client.

The daemon binds a ROUTER (so it can answer a slow ``restart`` later without blocking the
others); clients use REQ, one request and one reply each.
"""

from __future__ import annotations

from typing import Literal, Union

import msgspec
import zmq


class StatusRequest(msgspec.Struct, tag="status"):
    pass


class StopRequest(msgspec.Struct, tag="stop"):
    """The whole stack (``name`` empty or "all"), or one process; a worker is drained first."""

    name: str = ""
    grace_s: float | None = None  # None: [supervisor] drain_grace_s


class RestartRequest(msgspec.Struct, tag="restart"):
    name: str
    grace_s: float | None = None  # a worker's drain; None: [supervisor] drain_grace_s


class AttachRequest(msgspec.Struct, tag="attach", kw_only=True):
    """A worker added at runtime. Unset fields come from the stack's first worker of the kind
    (a copy of it, engine settings included) or, without one, the ``[[workers]]`` defaults."""

    kind: Literal["chat", "tool"]
    name: str = ""  # "": KIND-N, the lowest N not taken
    engine: str = ""
    model: str = ""
    device: str = ""
    python: str = ""  # absolute, or a name on PATH
    capacity: int = 0  # 0: the template's (or the default)
    gpu_frac: float = 0.0  # 0: the single-process server's default split
    cpus: str = ""  # "": the supervisor's CPU plan; "none"; "0-3,6"


class DetachRequest(msgspec.Struct, tag="detach", kw_only=True):
    """Drain a worker like ``stop NAME``, then forget it: it leaves ``status`` and is not restarted."""

    name: str
    grace_s: float | None = None  # None: [supervisor] drain_grace_s


Request = Union[StatusRequest, StopRequest, RestartRequest, AttachRequest, DetachRequest]


class ProcessInfo(msgspec.Struct, kw_only=True):
    name: str
    kind: str  # broker | wsfront | chat | tool
    pid: int | None
    state: str  # policy.State value
    uptime_s: float
    restarts: int
    device: str = ""
    exit_code: int | None = None  # of its last exit; negative: killed by that signal
    detail: str = ""  # e.g. "exited with code 1; retry in 2.0s"
    log: str = ""  # path of its log file
    in_flight: int | None = None  # turns it runs, as the broker books them (broker: all of them)
    rss_bytes: int | None = None  # resident memory of its whole process group
    cpus: str = ""  # the cores it is pinned to ("0-2,5"); "": not pinned


class StatusReply(msgspec.Struct, tag="status", kw_only=True):
    supervisor_pid: int
    stopping: bool
    processes: list[ProcessInfo]


class Done(msgspec.Struct, tag="done", kw_only=True):
    message: str
    pid: int | None = None
    name: str = ""  # the process it is about (attach: the name it was given)


class Failed(msgspec.Struct, tag="failed", kw_only=True):
    message: str


class Refused(msgspec.Struct, tag="refused", kw_only=True):
    """The request itself is wrong (a bad attach field, a name taken): the CLI's usage error."""

    message: str


Reply = Union[StatusReply, Done, Failed, Refused]

request_decoder = msgspec.json.Decoder(Request)
reply_decoder = msgspec.json.Decoder(Reply)
encoder = msgspec.json.Encoder()


class ControlUnavailable(Exception):
    """No supervisor answered on the control socket in time."""


def call(endpoint: str, request: Request, timeout_s: float = 5.0) -> Reply:
    """Send one request, wait for its reply; ControlUnavailable if none comes in time."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(encoder.encode(request))
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise ControlUnavailable(f"no reply on {endpoint} within {timeout_s:g}s")
        return reply_decoder.decode(sock.recv())
    finally:
        sock.close()
