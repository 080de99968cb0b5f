"""Every frame that crosses a ZeroMQ socket inside the stack, and their codec.

Frames are msgspec Structs tagged by class name and encoded as MessagePack arrays
(``array_like``), so a token frame costs a few bytes of framing. Nothing else in the
code base defines wire messages; front, broker and workers all import from here.

Socket layout (ZeroMQ multipart, identity frames added/removed by ROUTER sockets):

- front DEALER -> broker ROUTER: ``[payload]`` with a FrontFrame.
- broker ROUTER -> front DEALER: ``[payload]``: a WorkerFrame forwarded untouched
  (``Deltas``/``Finished``/``ToolResult``) or a BrokerFrame (``Failed``, ``BrokerStatus``).
- worker DEALER -> broker ROUTER: ``[payload]`` control frame, decoded by the broker, or
  ``[front_id, payload]`` output frame forwarded to that front without decoding.
- broker ROUTER -> worker DEALER: ``[front_id, payload]`` for a ``Submit`` (the front's
  identity is the reply envelope the worker puts on its output frames), ``[payload]`` for the
  other BrokerToWorker frames. The broker's ``Heartbeat`` tells a worker the broker is alive.
- supervisor DEALER -> broker ROUTER (the control socket, ipc in the run dir only):
  ``[payload]`` with a SupervisorFrame; the broker answers ``Watch`` with a ``BrokerStatus``
  and a ``Retire`` with ``Retired`` once the worker holds no turn.
"""

from __future__ import annotations

from typing import Literal, Union

import msgspec

from pipeline.sampling import Sampling

# A worker's Ready carries the version of these frames it speaks; the broker refuses another
# one (a worker on another host left at an older release) with a log line naming both.
PROTOCOL_VERSION = 3

Kind = Literal["chat", "tool"]
FinishReason = Literal["stop", "length", "cancelled", "error"]
# Why a request failed: the broker's ``Failed`` codes, then those a worker puts on a
# ``Finished``/``ToolResult`` with reason "error". The front maps each to a client code.
FailCode = Literal["no_worker", "worker_lost", "worker_restarting", "queue_timeout", "overloaded",
                   "bad_request"]
WorkerCode = Literal["", "worker_lost", "draining", "bad_request", "internal_error",
                     "chat_prompt_too_long", "invalid_sampling", "invalid_message"]


class _Frame(msgspec.Struct, tag=True, array_like=True, omit_defaults=True):
    pass


# ---------------------------------------------------------------- jobs (payload of Submit)


class ChatJob(_Frame):
    """A chat turn, still in parts: the worker renders it with its own model's template."""

    persona: str
    history: str
    utterance: str
    max_tokens: int
    sampling: Sampling = msgspec.field(default_factory=Sampling)
    # Dynamic context (time, place, app state) that goes after the persona and before the
    # history, so the persona's prefix stays the same across turns (and cached).
    runtime_text: str = ""


class ToolJob(_Frame):
    """A tool decision on the user's utterance, in the light of the recent conversation."""

    utterance: str
    history: str = ""  # the transcript before the utterance; the worker keeps its newest part


Job = Union[ChatJob, ToolJob]


# ---------------------------------------------------------------- front -> broker


class Submit(_Frame):
    request_id: str
    session_id: str
    job: Job

    @property
    def kind(self) -> Kind:
        """Which kind of worker serves it: the job says, so the two cannot disagree."""
        return "chat" if type(self.job) is ChatJob else "tool"


class Cancel(_Frame):
    """Abort the named requests (by id: two connections may carry the same session id)."""

    request_ids: list[str] = []


class FrontHeartbeat(_Frame):
    pass


# ---------------------------------------------------------------- broker -> worker


class Drain(_Frame):
    """Finish in-flight work, accept nothing new."""


class Shutdown(_Frame):
    pass


class Reregister(_Frame):
    """The broker does not know this worker (it restarted, or expired it): send Ready again."""


# ---------------------------------------------------------------- worker -> broker (control)


class Ready(_Frame):
    name: str
    kind: Kind
    engine: str
    model: str
    capacity: int
    pid: int
    device: str
    protocol: int = 0  # PROTOCOL_VERSION of the worker; 0 = a release from before it was sent


class Heartbeat(_Frame):
    load: int = 0


class Finished(_Frame):
    """The last frame of a chat request (forwarded to the front after the broker books it)."""

    request_id: str
    reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    code: WorkerCode = ""  # with reason "error": why
    message: str = ""
    cached_tokens: int = 0  # prompt tokens the engine found in its prefix cache


class ToolResult(_Frame):
    """The last (and only) frame of a tool request: the worker's decision (``yes``, from its
    threshold and positive label), the label it read and the positive label's probability."""

    request_id: str
    label: str
    score: float
    yes: bool = False
    reason: FinishReason = "stop"
    code: WorkerCode = ""
    message: str = ""


# ---------------------------------------------------------------- worker -> front (forwarded)


class Delta(msgspec.Struct, array_like=True):
    request_id: str
    text: str
    tokens: int


class Deltas(_Frame):
    """Every delta one engine step produced for one front, in one frame."""

    items: list[Delta]


# ---------------------------------------------------------------- broker -> front


class Failed(_Frame):
    request_id: str
    code: FailCode
    message: str


class WorkerInfo(msgspec.Struct, array_like=True):
    name: str
    kind: Kind
    engine: str
    model: str
    capacity: int
    load: int
    pid: int
    device: str
    state: str
    silent_s: float = 0.0  # since the broker last heard from it


class BrokerStatus(_Frame):
    """Sent to a front in answer to its heartbeat: what the broker can serve right now."""

    workers: list[WorkerInfo]
    queued: int = 0
    # Random per broker process: a new value means the broker restarted and forgot every
    # request it held (a restart can be quicker than the silence a peer would notice).
    epoch: int = 0


# ---------------------------------------------------------------- supervisor <-> broker


class Watch(_Frame):
    """Supervisor -> broker, every heartbeat interval: answer with a ``BrokerStatus`` (which
    workers are registered, their in-flight load, how long each has been silent)."""


class WorkerGone(_Frame):
    """Supervisor -> broker: this worker process exited. Its turns fail with ``worker_lost``
    now, not at heartbeat expiry; a ``pid`` other than the registered one is ignored."""

    name: str
    pid: int
    message: str = ""


class Retire(_Frame):
    """Supervisor -> broker: route nothing new to this worker and let its turns finish; what
    still runs after ``grace_s`` fails with ``code``. Answered with ``Retired``."""

    name: str
    pid: int
    grace_s: float
    code: FailCode = "worker_restarting"


class Retired(_Frame):
    """Broker -> supervisor: the retiring worker holds no turn any more; stop it now."""

    name: str
    pid: int
    finished: int = 0  # turns that ended on their own during the grace period
    failed: int = 0  # turns failed with the Retire's code when the grace period ran out


FrontFrame = Union[Submit, Cancel, FrontHeartbeat]
BrokerToWorker = Union[Submit, Cancel, Drain, Shutdown, Reregister, Heartbeat]
WorkerControl = Union[Ready, Heartbeat, Finished, ToolResult]
ToFront = Union[Deltas, Finished, ToolResult, Failed, BrokerStatus]
SupervisorFrame = Union[Watch, WorkerGone, Retire]
ToSupervisor = Union[BrokerStatus, Retired]

_encoder = msgspec.msgpack.Encoder()
encode = _encoder.encode

front_decoder = msgspec.msgpack.Decoder(FrontFrame)
worker_decoder = msgspec.msgpack.Decoder(BrokerToWorker)
control_decoder = msgspec.msgpack.Decoder(WorkerControl)
to_front_decoder = msgspec.msgpack.Decoder(ToFront)
supervisor_decoder = msgspec.msgpack.Decoder(SupervisorFrame)
to_supervisor_decoder = msgspec.msgpack.Decoder(ToSupervisor)
