"""The worker's rules, without sockets, an engine or a clock of its own (sans-I/O).

``WorkerCore`` takes decoded broker frames, engine events (a step of a request's stream, its
end, its failure) and the time, and returns what to do: send these parts, run this engine
call, abort that request in the engine, stop with this exit code, log this line. The loop in
``workers.runtime`` only feeds it and carries its actions out. Its promises: chat deltas go
out coalesced into one ``Deltas`` frame per front per loop tick, a request's final frame goes
after the deltas of the same tick, and every accepted request gets exactly one
``Finished``/``ToolResult``, whatever happens to it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

from broker import frames
from broker.frames import ChatJob, Delta, Finished, Ready, Submit, ToolResult
from pipeline import PipelineError, PromptLimits, Sampling, render_prefix, render_prompt

from .config import WorkerConfig
from .engines import ChatStep, EngineDead, RequestCancelled, RequestFailed, ToolDecision

ReplyFrame = Finished | ToolResult


@dataclass(slots=True, eq=False)
class InFlight:
    """A request this worker accepted and still owes a final frame."""

    request_id: str
    session_id: str
    kind: str
    front: bytes  # the front's identity: the envelope of this request's output frames
    cancelled: bool = False  # also covers a request the engine has not seen yet
    tokens: int = 0  # streamed so far
    aborted_at: float | None = None  # time of the first abort
    tokens_at_abort: int = 0
    final: ChatStep | None = None  # the stream's last step, with the finish reason and usage


# ---------------------------------------------------------------- actions


class Send(NamedTuple):
    """Send these parts to the broker now (control frames: Ready, Heartbeat)."""

    parts: tuple[bytes, ...]


class FlushSoon(NamedTuple):
    """Call ``flush()`` once at the end of this loop tick and send what it returns: every
    request woken by one engine step has queued its delta by then."""


class FlushLater(NamedTuple):
    """Call ``flush()`` after ``delay_s`` (the stream flush window): text held until then
    goes out merged."""

    delay_s: float


class Generate(NamedTuple):
    request: InFlight
    prompt: str
    max_tokens: int
    sampling: Sampling


class Warm(NamedTuple):
    """Prefill ``prefix`` into the engine's prefix cache (a turn with ``max_tokens`` 0)."""

    request: InFlight
    prefix: str


class Classify(NamedTuple):
    request: InFlight
    utterance: str
    history: str


class Abort(NamedTuple):
    request_id: str


class Stop(NamedTuple):
    """Stop serving: abort what runs, let it answer, close, exit with ``code``."""

    code: int


class Log(NamedTuple):
    level: int
    fmt: str  # %-style, formatted by the logger only if the level is enabled
    args: tuple[Any, ...] = ()
    exc: BaseException | None = None

    @property
    def text(self) -> str:
        return self.fmt % self.args


EngineCall = Generate | Warm | Classify
Action = Send | FlushSoon | FlushLater | Generate | Warm | Classify | Abort | Stop | Log

FLUSH_SOON = FlushSoon()


class WorkerCore:
    def __init__(self, cfg: WorkerConfig, *, model_label: str, pid: int) -> None:
        self.cfg = cfg
        # The only place prompt budgets are set from the worker's config.
        self.limits = PromptLimits(history_max_tokens=cfg.history_max_tokens,
                                   user_utt_max_tokens=cfg.user_utt_max_tokens,
                                   persona_max_tokens=cfg.chat_prompt_max_tokens,
                                   exact=cfg.exact_token_trim)
        self.tokenizer: Any = None  # the chat engine's, once it has started
        self.requests: dict[str, InFlight] = {}
        self.draining = False
        self.stopping = False
        self.exit_code = 0
        self._ready = frames.encode(Ready(
            cfg.name, cfg.kind, cfg.resolved_engine(), model_label, cfg.capacity, pid,
            cfg.device, frames.PROTOCOL_VERSION))
        self._model_label = model_label
        # A broker silent this long has restarted or hung (or forgot us): register again.
        self._silence_s = cfg.heartbeat_liveness * cfg.heartbeat_interval_s
        self._last_heard = 0.0
        self._broker_silent = False  # warned once about this silence; the next frame ends it
        # Text waiting for the next flush, per front, per request: [text, tokens].
        self._pending: dict[bytes, dict[str, list[Any]]] = {}
        self._finals: list[ReplyFrame] = []  # sent after the deltas of the same tick
        self._flush_due = False  # a flush at the end of this tick is asked for
        self._flush_later = False  # a flush after the window is asked for
        window = cfg.stream_flush_ms / 1000.0
        self._later: FlushLater | None = FlushLater(window) if window > 0 else None

    # ------------------------------------------------------------ lifecycle

    def on_engine_started(self, tokenizer: Any, now: float) -> list[Action]:
        """The engine is up and the socket connected: register with the broker."""
        self.tokenizer = tokenizer
        self._last_heard = now
        cfg = self.cfg
        return [Send((self._ready,)),
                Log(logging.INFO, "ready: %s engine %s, model %s, capacity %d, broker %s",
                    (cfg.kind, cfg.resolved_engine(), self._model_label, cfg.capacity,
                     cfg.connect))]

    def on_engine_start_failed(self, exc: BaseException, unavailable: bool) -> list[Action]:
        """Nothing was served: exit 1 with one line (a known cause) or the traceback."""
        self.exit_code = 1
        self.stopping = True
        if unavailable:
            return [Log(logging.ERROR, "engine unavailable: %s", (exc,))]
        return [Log(logging.ERROR, "engine failed to start", (), exc)]

    def stop(self, code: int, reason: str) -> list[Action]:
        if self.stopping:  # the first reason decides the exit code
            return []
        self.stopping = True
        self.exit_code = code
        return [Log(logging.ERROR if code else logging.INFO, "stopping: %s", (reason,)),
                Stop(code)]

    def shutdown(self, now: float) -> list[Action]:
        """On the way out: accept nothing, abort everything (each still gets its final)."""
        self.draining = True
        return [self._abort(request, now) for request in list(self.requests.values())]

    # ------------------------------------------------------------ broker

    def on_frame(self, front: bytes, msg: frames.BrokerToWorker, now: float) -> list[Action]:
        """A frame from the broker; ``front`` is the envelope a ``Submit`` came with."""
        actions = self._heard(now)
        kind = type(msg)
        if kind is Submit:
            actions += self.on_submit(front, msg)  # type: ignore[arg-type]
        elif kind is frames.Cancel:
            actions += self.on_cancel(msg, now)  # type: ignore[arg-type]
        elif kind is frames.Drain:
            if not self.draining:
                actions.append(Log(logging.INFO, "draining: %d in flight, accepting nothing new",
                                   (len(self.requests),)))
            self.draining = True
        elif kind is frames.Shutdown:
            actions += self.stop(0, "shutdown frame from broker")
        elif kind is frames.Reregister:
            actions += self.on_reregister(now)
        # frames.Heartbeat: hearing from the broker is all it says
        return actions

    def on_undecodable(self, error: str, now: float) -> list[Action]:
        return self._heard(now) + [Log(logging.WARNING, "undecodable frame from broker: %s",
                                       (error,))]

    def on_submit(self, front: bytes, submit: Submit) -> list[Action]:
        rid, kind, cfg = submit.request_id, submit.kind, self.cfg
        if rid in self.requests:  # a second final would free the first one's slot at the broker
            return [Log(logging.WARNING, "request %s submitted twice; ignoring the second", (rid,))]
        if self.draining:
            return self._answer(_error(rid, kind, "draining", f"worker {cfg.name} is draining"))
        if kind != cfg.kind:
            return self._answer(_error(rid, kind, "bad_request",
                                       f"a {cfg.kind} worker got a {kind} job"))
        actions: list[Action] = []
        if len(self.requests) >= cfg.capacity:
            actions.append(Log(logging.WARNING, "over capacity (%d): request %s queues in the "
                               "engine", (cfg.capacity, rid)))
        request = InFlight(rid, submit.session_id, kind, front)
        self.requests[rid] = request
        try:
            actions += self._engine_call(request, submit.job)
        except Exception as exc:  # a prompt that cannot be built, or a bug rendering it
            actions += self.on_failure(request, exc)
        return actions

    def on_cancel(self, cancel: frames.Cancel, now: float) -> list[Action]:
        actions: list[Action] = []
        for rid in cancel.request_ids:
            request = self.requests.get(rid)
            if request is not None:
                actions.append(self._abort(request, now))
        return actions

    def on_reregister(self, now: float) -> list[Action]:
        # The broker does not know us (it restarted, or expired us): it has failed our turns
        # already or never heard of them, so finishing them only wastes the engine.
        actions: list[Action] = [Log(logging.INFO, "broker asked to register again; aborting "
                                     "%d request(s) it no longer knows", (len(self.requests),))]
        actions += [self._abort(request, now) for request in list(self.requests.values())]
        actions.append(Send((self._ready,)))
        return actions

    def tick(self, now: float, engine_alive: bool) -> list[Action]:
        """Every heartbeat interval: the engine's liveness, our heartbeat, the broker's."""
        if self.stopping:
            return []
        if not engine_alive:
            return self.stop(1, "engine is no longer running")
        actions: list[Action] = [Send((frames.encode(frames.Heartbeat(load=len(self.requests))),))]
        silent_s = now - self._last_heard
        if silent_s > self._silence_s:
            # Ready again every liveness intervals until the broker answers; say so once.
            if not self._broker_silent:
                self._broker_silent = True
                actions.append(Log(logging.WARNING, "no word from the broker for %.1fs: "
                                   "registering again until it answers", (silent_s,)))
            self._last_heard = now
            actions.append(Send((self._ready,)))
        return actions

    # ------------------------------------------------------------ engine events

    def on_step(self, request: InFlight, step: ChatStep) -> FlushSoon | FlushLater | None:
        """One step of a chat stream; what flush the shell must schedule, if any. A
        request's first text asks for one at the end of this tick (the first output of the
        tick does), later text one after the stream flush window (0: this tick too). The
        hot path: one call per step; a request's text of one flush is merged into one delta."""
        if step.finish_reason is not None:
            request.final = step
        text = step.text
        if not text:
            return None
        first = request.tokens == 0
        request.tokens += step.tokens
        items = self._pending.get(request.front)
        if items is None:
            items = self._pending[request.front] = {}
        held = items.get(request.request_id)
        if held is None:
            items[request.request_id] = [text, step.tokens]
        else:
            held[0] += text
            held[1] += step.tokens
        if self._flush_due:
            return None  # this tick's flush takes it
        later = self._later
        if later is None or first:
            self._flush_due = True
            return FLUSH_SOON
        if self._flush_later:
            return None
        self._flush_later = True
        return later

    def on_stream_end(self, request: InFlight, now: float) -> list[Action]:
        final = request.final
        if final is None:
            return self.on_failure(request, RuntimeError("engine stream ended without a finish "
                                                         "reason"))
        actions: list[Action] = []
        if final.finish_reason == "cancelled" and request.aborted_at is not None:
            # How promptly cancellation stops the engine (benchmarks/cancel_latency.py reads it).
            actions.append(Log(logging.INFO, "request %s of session %s cancelled: %d tokens "
                               "generated, %d streamed before the abort; stopped %.1f ms after "
                               "the abort", (request.request_id, request.session_id,
                                             final.completion_tokens, request.tokens_at_abort,
                                             (now - request.aborted_at) * 1000)))
        return actions + self._end(request, Finished(
            request.request_id, final.finish_reason, final.prompt_tokens,
            final.completion_tokens, cached_tokens=final.cached_tokens))

    def on_warmed(self, request: InFlight, prompt_tokens: int) -> list[Action]:
        return self._end(request, Finished(request.request_id, "stop", prompt_tokens=prompt_tokens))

    def on_decision(self, request: InFlight, decision: ToolDecision) -> list[Action]:
        return self._end(request, ToolResult(request.request_id, decision.label, decision.score,
                                             decision.yes))

    def on_failure(self, request: InFlight, exc: BaseException) -> list[Action]:
        """The engine call raised (or was cancelled): the request's final says why."""
        rid, kind = request.request_id, request.kind
        actions: list[Action] = []
        if isinstance(exc, PipelineError):
            reply = _error(rid, kind, exc.code, exc.message)
        elif isinstance(exc, (RequestCancelled, asyncio.CancelledError)):
            reply = _cancelled(rid, kind)
        elif isinstance(exc, RequestFailed):  # the engine failed this request alone
            actions.append(Log(logging.WARNING, "request %s failed in the engine: %s", (rid, exc)))
            reply = _error(rid, kind, "internal_error", str(exc))
        elif isinstance(exc, EngineDead):
            reply = _error(rid, kind, "worker_lost", f"engine failed: {exc}")
            actions += self.stop(1, f"engine failed: {exc}")
        else:  # one bad request must not take the worker down
            actions.append(Log(logging.ERROR, "request %s failed", (rid,), exc))
            reply = _error(rid, kind, "internal_error", f"{type(exc).__name__}: {exc}")
        return actions + self._end(request, reply)

    # ------------------------------------------------------------ outbound

    def flush(self) -> list[tuple[bytes, ...]]:
        """The output held so far, in order: one ``Deltas`` per front, then the finals."""
        self._flush_due = self._flush_later = False
        encode, deltas = frames.encode, frames.Deltas
        out: list[tuple[bytes, ...]] = [
            (front, encode(deltas([Delta(rid, held[0], held[1]) for rid, held in items.items()])))
            for front, items in self._pending.items()]
        self._pending = {}
        if self._finals:
            out += [(encode(reply),) for reply in self._finals]
            self._finals = []
        return out

    # ------------------------------------------------------------ internals

    def _heard(self, now: float) -> list[Action]:
        self._last_heard = now
        if self._broker_silent:
            self._broker_silent = False
            return [Log(logging.INFO, "broker is back")]
        return []

    def _engine_call(self, request: InFlight, job: frames.Job) -> list[Action]:
        if type(job) is not ChatJob:
            return [Classify(request, job.utterance, job.history)]
        if job.max_tokens <= 0:
            # Nothing to generate: prime the prefix cache with persona + history instead
            # (warm_persona / warm_history); prompt_tokens says how much was cached.
            prefix = render_prefix(self.tokenizer, job.persona, job.history, self.limits,
                                   job.runtime_text)
            if not prefix:
                return self.on_warmed(request, 0)
            return [Warm(request, prefix)]
        prompt = render_prompt(self.tokenizer, job.persona, job.history, job.utterance,
                               self.limits, job.runtime_text)
        return [Generate(request, prompt, job.max_tokens, job.sampling)]

    def _abort(self, request: InFlight, now: float) -> Abort:
        request.cancelled = True
        if request.aborted_at is None:
            request.aborted_at = now
            request.tokens_at_abort = request.tokens
        return Abort(request.request_id)

    def _answer(self, reply: ReplyFrame) -> list[Action]:
        # Through the same flush as the deltas, so a request's last deltas always go first
        # and the other requests' deltas of this step stay in one frame.
        self._finals.append(reply)
        if self._flush_due:
            return []
        self._flush_due = True
        return [FLUSH_SOON]

    def _end(self, request: InFlight, reply: ReplyFrame) -> list[Action]:
        if self.requests.get(request.request_id) is not request:
            return []  # answered already: one final per request, never two
        del self.requests[request.request_id]
        return [Log(logging.DEBUG, "request %s ended: %s", (request.request_id, reply.reason)),
                *self._answer(reply)]


def _error(request_id: str, kind: str, code: str, message: str) -> ReplyFrame:
    if kind == "tool":
        return ToolResult(request_id, "", 0.0, reason="error", code=code, message=message)  # type: ignore[arg-type]
    return Finished(request_id, "error", code=code, message=message)  # type: ignore[arg-type]


def _cancelled(request_id: str, kind: str) -> ReplyFrame:
    if kind == "tool":
        return ToolResult(request_id, "", 0.0, reason="cancelled")
    return Finished(request_id, "cancelled")
