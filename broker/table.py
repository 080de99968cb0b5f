"""The broker's routing table: workers, fronts, in-flight requests and the wait queue.

Pure: every method takes the time as an argument and returns the messages to send, as
``ToWorker``/``ToFront`` actions; the ZeroMQ loop in ``broker.loop`` only carries them out.
Ideas from the ZeroMQ guide's Paranoid Pirate and Majordomo brokers: workers announce
``Ready``, both sides heartbeat, a silent worker is expired after ``liveness`` intervals,
and each kind of worker has its own queue. The supervisor adds what heartbeats cannot know:
a worker that exited (``on_worker_gone``: its turns fail at once) and one to retire for a
restart (``on_retire``: drained, then failed after a grace period, then ``Retired``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from . import frames
from .frames import Cancel, Failed, Kind, Ready, Retired, Submit

KINDS: tuple[Kind, ...] = ("chat", "tool")
AFFINITY_SLACK = 4  # a session's worker keeps it while no more than this busier than the idlest
AFFINITY_MAX = 100_000  # sessions remembered


class ToWorker(NamedTuple):
    identity: bytes
    parts: tuple[bytes, ...]


class ToFront(NamedTuple):
    identity: bytes
    payload: bytes


class ToSupervisor(NamedTuple):
    identity: bytes
    payload: bytes


class Refused(NamedTuple):
    """A worker the broker will not register; the loop logs ``reason`` (rate-limited)."""

    identity: bytes
    reason: str


Action = ToWorker | ToFront | ToSupervisor | Refused


@dataclass
class Retiring:
    supervisor: bytes  # who asked, and is owed the Retired
    deadline: float
    code: frames.FailCode
    finished: int = 0


@dataclass
class WorkerEntry:
    identity: bytes
    ready: Ready
    expires_at: float
    heard_at: float
    requests: set[str] = field(default_factory=set)
    draining: bool = False
    retiring: Retiring | None = None
    reported_load: int = 0

    @property
    def free(self) -> int:
        return self.ready.capacity - len(self.requests)


@dataclass
class InFlight:
    front: bytes
    worker: bytes
    session_id: str


@dataclass
class Queued:
    front: bytes
    submit: Submit
    payload: bytes
    deadline: float


class WorkerTable:
    def __init__(self, heartbeat_interval_s: float = 0.25, liveness: int = 4,
                 queue_max: int = 256, queue_timeout_s: float = 10.0, epoch: int = 0) -> None:
        self.epoch = epoch  # told in every status: which incarnation of the broker this is
        self.expiry_s = heartbeat_interval_s * liveness
        self.queue_max = queue_max
        self.queue_timeout_s = queue_timeout_s
        self.workers: dict[bytes, WorkerEntry] = {}
        self.fronts: dict[bytes, float] = {}  # identity -> expires_at
        self.inflight: dict[str, InFlight] = {}
        self.queues: dict[str, deque[Queued]] = {kind: deque() for kind in KINDS}
        # Kinds that had a worker since this broker started: a turn that waited in vain for
        # one of them (restarting, busy) timed out; for the others there is no worker at all.
        self.kinds_seen: set[str] = set()
        # session id -> the chat worker that served it last: its prefix cache holds the
        # session's persona and history (warm_persona / warm_history land there too).
        self.affinity: dict[str, bytes] = {}

    # ------------------------------------------------------------ workers

    def on_ready(self, identity: bytes, ready: Ready, now: float) -> list[Action]:
        if ready.protocol != frames.PROTOCOL_VERSION:
            # Its frames would be misread both ways: never route to it. The loop logs this.
            return [Refused(identity, f"worker {ready.name} (pid {ready.pid}) speaks frame "
                            f"protocol {ready.protocol}, this broker {frames.PROTOCOL_VERSION}: "
                            "run the same release on both sides")]
        actions: list[Action] = []
        old = self.workers.get(identity)
        if old is not None and old.ready.pid != ready.pid:
            # Same name, new process: the old one died before we noticed.
            actions += self._drop_worker(old, "worker_lost",
                                         f"worker {old.ready.name} (pid {old.ready.pid}) was replaced")
            old = None
        if old is None:
            self.workers[identity] = WorkerEntry(identity, ready, now + self.expiry_s, now)
        else:  # the same process again (it lost touch with us): a drain it got still holds
            old.ready, old.expires_at, old.heard_at = ready, now + self.expiry_s, now
        self.kinds_seen.add(ready.kind)
        actions += self._dispatch_queued(ready.kind, now)
        return actions

    def on_heartbeat(self, identity: bytes, load: int, now: float) -> list[Action]:
        if not self.touch_worker(identity, now):
            return [ToWorker(identity, (frames.encode(frames.Reregister()),))]
        self.workers[identity].reported_load = load
        return []

    def touch_worker(self, identity: bytes, now: float) -> bool:
        """Any frame from a worker proves it alive; False if the worker is unknown."""
        entry = self.workers.get(identity)
        if entry is None:
            return False
        entry.expires_at, entry.heard_at = now + self.expiry_s, now
        return True

    def on_done(self, identity: bytes, request_id: str, now: float) -> list[Action]:
        """A worker's ``Finished``/``ToolResult``: free its slot, give it queued work.
        The caller forwards the frame to ``front_of(request_id)`` before calling this."""
        flight = self.inflight.pop(request_id, None)
        if not self.touch_worker(identity, now):
            return []
        entry = self.workers[identity]
        entry.requests.discard(request_id)
        if flight is None:
            return []
        if entry.retiring is not None:
            entry.retiring.finished += 1
            return self._retired(entry) if not entry.requests else []
        return self._dispatch_queued(entry.ready.kind, now)

    def front_of(self, request_id: str) -> bytes | None:
        flight = self.inflight.get(request_id)
        return flight.front if flight else None

    def on_drain(self, name: str) -> list[Action]:
        entry = self._named(name)
        if entry is None:
            return []
        entry.draining = True
        return [ToWorker(entry.identity, (frames.encode(frames.Drain()),))]

    # ------------------------------------------------------------ supervisor

    def on_watch(self, supervisor: bytes, now: float) -> list[Action]:
        return [ToSupervisor(supervisor, frames.encode(self.status(now)))]

    def on_worker_gone(self, gone: frames.WorkerGone, now: float) -> list[Action]:
        """The supervisor reaped the worker's process: no need to wait for heartbeat expiry."""
        entry = self._named(gone.name, gone.pid)
        if entry is None:
            return []
        return self._drop_worker(entry, "worker_lost", gone.message
                                 or f"worker {gone.name} (pid {gone.pid}) exited")

    def on_retire(self, supervisor: bytes, retire: frames.Retire, now: float) -> list[Action]:
        """Drain the worker for a restart or stop: its turns may finish until ``grace_s``
        (``expire`` fails the rest), then ``Retired`` tells the supervisor to stop it."""
        entry = self._named(retire.name, retire.pid)
        if entry is None:  # not registered: nothing runs there
            return [ToSupervisor(supervisor, frames.encode(Retired(retire.name, retire.pid)))]
        actions = self.on_drain(retire.name)
        entry.retiring = Retiring(supervisor, now + retire.grace_s, retire.code)
        if not entry.requests:
            actions += self._retired(entry)
        return actions

    # ------------------------------------------------------------ fronts

    def on_front_heartbeat(self, identity: bytes, now: float) -> list[Action]:
        self.fronts[identity] = now + self.expiry_s
        return [ToFront(identity, frames.encode(self.status(now)))]

    def on_submit(self, front: bytes, submit: Submit, payload: bytes, now: float) -> list[Action]:
        self.fronts[front] = now + self.expiry_s
        if submit.request_id in self.inflight:
            return [ToFront(front, frames.encode(Failed(
                submit.request_id, "bad_request", "request_id is already in flight")))]
        worker = self._pick(submit.kind, submit.session_id)
        if worker is not None:
            return [self._assign(worker, front, submit, payload)]
        if sum(len(q) for q in self.queues.values()) >= self.queue_max:
            return [ToFront(front, frames.encode(Failed(
                submit.request_id, "overloaded",
                f"every {submit.kind} worker is busy and the queue is full")))]
        self.queues[submit.kind].append(Queued(front, submit, payload, now + self.queue_timeout_s))
        return []

    def on_cancel(self, front: bytes, cancel: Cancel, now: float) -> list[Action]:
        """Abort on every worker that holds the named requests.

        Queued requests are simply dropped (the front already ended the turn); in-flight
        ones stay booked until their worker answers with ``Finished(cancelled)``.
        """
        self.fronts[front] = now + self.expiry_s
        wanted = set(cancel.request_ids)
        for kind, queue in self.queues.items():
            self.queues[kind] = deque(q for q in queue if not (
                q.front == front and q.submit.request_id in wanted))
        per_worker: dict[bytes, list[str]] = {}
        for request_id in wanted:
            flight = self.inflight.get(request_id)
            if flight is not None and flight.front == front:
                per_worker.setdefault(flight.worker, []).append(request_id)
        return [ToWorker(worker, (frames.encode(Cancel(ids)),))
                for worker, ids in per_worker.items()]

    # ------------------------------------------------------------ time

    def expire(self, now: float) -> list[Action]:
        """Drop silent workers and fronts, end retirements whose grace ran out, fail queued
        turns that waited too long."""
        actions: list[Action] = []
        for entry in [w for w in self.workers.values() if w.expires_at < now]:
            actions += self._drop_worker(entry, "worker_lost",
                                         f"worker {entry.ready.name} stopped responding")
        for entry in [w for w in self.workers.values()
                      if w.retiring is not None and w.retiring.deadline < now]:
            actions += self._end_grace(entry)
        for front in [f for f, t in self.fronts.items() if t < now]:
            actions += self._drop_front(front, now)
        for kind, queue in self.queues.items():
            while queue and queue[0].deadline < now:
                q = queue.popleft()
                code = "queue_timeout" if kind in self.kinds_seen else "no_worker"
                actions.append(ToFront(q.front, frames.encode(Failed(
                    q.submit.request_id, code,
                    f"no {kind} worker could take the request within {self.queue_timeout_s:g}s"))))
        return actions

    def heartbeats(self) -> list[Action]:
        beat = frames.encode(frames.Heartbeat())
        return [ToWorker(identity, (beat,)) for identity in self.workers]

    def status(self, now: float | None = None) -> frames.BrokerStatus:
        return frames.BrokerStatus(
            workers=[frames.WorkerInfo(
                e.ready.name, e.ready.kind, e.ready.engine, e.ready.model, e.ready.capacity,
                len(e.requests), e.ready.pid, e.ready.device,
                "draining" if e.draining else "ready",
                0.0 if now is None else round(max(now - e.heard_at, 0.0), 3))
                for e in self.workers.values()],
            queued=sum(len(q) for q in self.queues.values()),
            epoch=self.epoch,
        )

    # ------------------------------------------------------------ internals

    def _named(self, name: str, pid: int = 0) -> WorkerEntry | None:
        """The registered worker of that name (and that process, unless ``pid`` is 0)."""
        for entry in self.workers.values():
            if entry.ready.name == name:
                return entry if pid in (0, entry.ready.pid) else None
        return None

    def _retired(self, entry: WorkerEntry, failed: int = 0) -> list[Action]:
        retiring, entry.retiring = entry.retiring, None
        assert retiring is not None
        return [ToSupervisor(retiring.supervisor, frames.encode(Retired(
            entry.ready.name, entry.ready.pid, retiring.finished, failed)))]

    def _end_grace(self, entry: WorkerEntry) -> list[Action]:
        """Fail what the retiring worker still runs and abort it there; the worker stays
        registered (draining) until it exits, so its last frames are still accepted."""
        assert entry.retiring is not None
        code, name = entry.retiring.code, entry.ready.name
        ids = sorted(entry.requests)
        entry.requests.clear()
        actions: list[Action] = []
        for request_id in ids:
            flight = self.inflight.pop(request_id, None)
            if flight is not None:
                actions.append(ToFront(flight.front, frames.encode(Failed(
                    request_id, code, f"worker {name} is restarting and the turn did not "
                    "finish within the drain grace period" if code == "worker_restarting"
                    else f"worker {name} was stopped before the turn finished"))))
        if ids:
            actions.append(ToWorker(entry.identity, (frames.encode(Cancel(ids)),)))
        return actions + self._retired(entry, failed=len(ids))

    def _pick(self, kind: str, session_id: str = "") -> WorkerEntry | None:
        """The session's own chat worker while it is healthy and not much busier than the
        others (prefix-cache reuse); otherwise the least-loaded ready worker with a free slot."""
        best: WorkerEntry | None = None
        for entry in self.workers.values():
            if entry.ready.kind != kind or entry.draining or entry.free <= 0:
                continue
            if best is None or len(entry.requests) < len(best.requests):
                best = entry
        if best is None or kind != "chat":
            return best
        own = self.workers.get(self.affinity.get(session_id, b""))
        if (own is not None and own.ready.kind == kind and not own.draining and own.free > 0
                and len(own.requests) <= len(best.requests) + AFFINITY_SLACK):
            return own
        return best

    def _assign(self, worker: WorkerEntry, front: bytes, submit: Submit, payload: bytes) -> ToWorker:
        if submit.kind == "chat":
            self.affinity.pop(submit.session_id, None)  # re-insert: oldest sessions go first
            if len(self.affinity) >= AFFINITY_MAX:
                for session in list(self.affinity)[: AFFINITY_MAX // 2]:
                    del self.affinity[session]
            self.affinity[submit.session_id] = worker.identity
        worker.requests.add(submit.request_id)
        self.inflight[submit.request_id] = InFlight(front, worker.identity, submit.session_id)
        return ToWorker(worker.identity, (front, payload))

    def _dispatch_queued(self, kind: str, now: float) -> list[Action]:
        actions: list[Action] = []
        queue = self.queues[kind]
        while queue:
            worker = self._pick(kind, queue[0].submit.session_id)
            if worker is None:
                break
            q = queue.popleft()
            if q.front not in self.fronts:
                continue
            actions.append(self._assign(worker, q.front, q.submit, q.payload))
        return actions

    def _drop_worker(self, entry: WorkerEntry, code: frames.FailCode, message: str) -> list[Action]:
        del self.workers[entry.identity]
        actions: list[Action] = []
        for request_id in sorted(entry.requests):
            flight = self.inflight.pop(request_id, None)
            if flight is not None:
                actions.append(ToFront(flight.front, frames.encode(Failed(request_id, code, message))))
        if entry.retiring is not None:  # gone before its drain ended: nothing left to wait for
            actions += self._retired(entry)
        return actions

    def _drop_front(self, front: bytes, now: float) -> list[Action]:
        """A front went silent: its clients are gone, so their work is cancelled."""
        del self.fronts[front]
        for kind, queue in self.queues.items():
            self.queues[kind] = deque(q for q in queue if q.front != front)
        per_worker: dict[bytes, list[str]] = {}
        for request_id, flight in self.inflight.items():
            if flight.front == front:
                per_worker.setdefault(flight.worker, []).append(request_id)
        return [ToWorker(worker, (frames.encode(Cancel(ids)),)) for worker, ids in per_worker.items()]
