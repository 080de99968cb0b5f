"""The turn core: one client connection's turns, whatever protocol the client speaks.

Pure (no sockets, no clock): a protocol adapter hands it typed turn requests and cancels, the
shell hands it the broker's frames for this connection, and it returns actions: frames for the
broker (``ToBroker``) and protocol-neutral events (``Accepted`` is the adapter's, ``ToolDecided``, ``TextDelta``, ``Reply``,
``Completed``, ``Cancelled``, ``TurnFailed``; ``Warmed``/``WarmFailed`` for cache priming). The
adapters render the events in their own wire format; none of them re-implements a turn rule.

It owns the invariants:
- every accepted turn ends with exactly one ``Completed``, ``Cancelled`` or ``TurnFailed``;
- with a tool model, the decision comes before any chat text (``TurnPlan``);
- a cancel, barge-in or disconnect reaches every worker holding a request of the turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NamedTuple

from broker import frames
from pipeline import Sampling, StreamSanitizer, TurnPlan
from pipeline.stops import StopMatcher
from pipeline.turn import DeployMode

# Why a request failed (the broker's and the workers' codes) -> the code a client is told.
# Prompt and sampling errors a worker found keep their own names; anything unknown is ours.
CLIENT_CODES: Final[dict[str, str]] = {
    "worker_lost": "worker_lost",
    "worker_restarting": "worker_restarting",
    "queue_timeout": "queue_timeout",
    "no_worker": "worker_unavailable",
    "overloaded": "worker_unavailable",
    "draining": "worker_unavailable",
    "bad_request": "internal_error",
    "internal_error": "internal_error",
    "chat_prompt_too_long": "chat_prompt_too_long",
    "invalid_sampling": "invalid_sampling",
    "invalid_message": "invalid_message",
}


def client_code(code: str) -> str:
    return CLIENT_CODES.get(code, "internal_error")


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """What one user turn asks for, in the stack's terms (each adapter builds it)."""

    session_id: str
    utterance: str
    persona: str
    max_tokens: int
    history: str = ""
    runtime_text: str = ""  # dynamic context placed after the persona, before the history
    sampling: Sampling = Sampling()
    sanitize: bool = True  # clean the reply for text-to-speech
    speak_numbers: bool = False  # and say numbers, money, percentages and times in words
    tool: bool = True  # run the tool model first, where the deployment has one
    # A yes from the tool model is the whole answer (OpenAI tool calling): no chat reply.
    tool_call_ends_turn: bool = False
    stop: tuple[str, ...] = ()  # stop sequences: the reply ends before the first one met


class Usage(NamedTuple):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: str


# ---------------------------------------------------------------- actions


class ToBroker(NamedTuple):
    frame: frames.Submit | frames.Cancel


class Accepted(NamedTuple):
    """A turn the adapter validated and started (rendered as its ``ack``)."""

    turn: str


class ToolDecided(NamedTuple):
    turn: str
    yes: bool
    label: str
    score: float


class TextDelta(NamedTuple):
    turn: str
    text: str


class Reply(NamedTuple):
    """The whole reply as the client was sent it (cleaned, when the turn cleans)."""

    turn: str
    text: str


class Completed(NamedTuple):
    turn: str
    usage: Usage | None  # None: a tool-only turn, nothing was generated


class Cancelled(NamedTuple):
    turn: str
    after_tokens: int  # reply tokens the chat worker had streamed when the cancel took effect


class TurnFailed(NamedTuple):
    turn: str
    code: str  # a client code (CLIENT_CODES)
    message: str


class Warmed(NamedTuple):
    tag: str
    prompt_tokens: int


class WarmFailed(NamedTuple):
    tag: str
    code: str
    message: str


TurnEvent = Accepted | ToolDecided | TextDelta | Reply | Completed | Cancelled | TurnFailed
TERMINAL: Final = (Completed, Cancelled, TurnFailed)
Action = ToBroker | TurnEvent | Warmed | WarmFailed


@dataclass(slots=True)
class _Turn:
    id: str
    request: TurnRequest
    plan: TurnPlan
    sanitizer: StreamSanitizer | None
    stops: StopMatcher | None
    requests: dict[str, str] = field(default_factory=dict)  # internal request id -> kind
    tool_done: bool = False
    held: list[str] = field(default_factory=list)  # chat text that came before the decision
    held_finish: frames.Finished | None = None
    sent: list[str] = field(default_factory=list)  # text the client was given
    tokens: int = 0  # reply tokens received from the chat worker
    stopped: bool = False  # a stop sequence was met: the chat request is being cancelled


class TurnCore:
    """The turns of one connection; ``connection_id`` makes internal request ids unique."""

    def __init__(self, connection_id: str, deploy_mode: DeployMode, concurrent: bool) -> None:
        self.connection_id = connection_id
        self.deploy_mode = deploy_mode
        self.concurrent = concurrent
        self.turns: dict[str, _Turn] = {}
        self._owner: dict[str, _Turn] = {}  # internal request id -> its turn
        self._warms: dict[str, str] = {}  # internal request id -> the adapter's tag
        self._seq = 0

    @property
    def has_chat(self) -> bool:
        return self.deploy_mode != "tool"

    def busy(self) -> bool:
        """A turn or a warm-up is in progress (the connection is not idle)."""
        return bool(self.turns or self._warms)

    def live_request_ids(self) -> list[str]:
        return [*self._owner, *self._warms]

    # ------------------------------------------------------------ adapter -> core

    def start(self, turn_id: str, request: TurnRequest) -> list[Action]:
        if turn_id in self.turns:
            raise ValueError(f"turn {turn_id!r} is already running")
        mode: DeployMode = self.deploy_mode
        if not request.tool and mode == "both":
            mode = "chat"  # the client did not ask for the tool decision
        turn = _Turn(turn_id, request, TurnPlan(mode, self.concurrent),
                     StreamSanitizer(speak_numbers=request.speak_numbers)
                     if request.sanitize else None,
                     StopMatcher(request.stop) if request.stop else None)
        self.turns[turn_id] = turn
        return [self._submit(turn, kind) for kind in turn.plan.initial_submissions()]

    def cancel(self, turn_id: str) -> list[Action]:
        """End the turn now (cancel, barge-in): ``Cancelled``, and its work aborted."""
        turn = self.turns.get(turn_id)
        if turn is None:
            return []
        return [*self._close(turn), Cancelled(turn.id, turn.tokens)]

    def close(self) -> list[Action]:
        """The client went away: abort everything, say nothing (nobody is listening)."""
        actions: list[Action] = []
        for turn in list(self.turns.values()):
            actions += self._close(turn)
        if self._warms:
            actions.append(ToBroker(frames.Cancel(list(self._warms))))
            self._warms.clear()
        return actions

    def warm(self, tag: str, session_id: str, persona: str, history: str = "",
             runtime_text: str = "") -> list[Action]:
        """Prime the chat worker's prefix cache with the persona (and the history)."""
        self._seq += 1
        rid = f"{self.connection_id}.{self._seq}w"
        self._warms[rid] = tag
        job = frames.ChatJob(persona, history, "", 0, runtime_text=runtime_text)  # prefill only
        return [ToBroker(frames.Submit(rid, session_id, job))]

    # ------------------------------------------------------------ broker -> core

    def on_broker(self, frame: frames.Delta | frames.Finished | frames.ToolResult | frames.Failed
                  ) -> list[Action]:
        rid = frame.request_id
        turn = self._owner.get(rid)
        if turn is None:
            return self._on_warmed(frame) if rid in self._warms else []  # late: turn ended
        if type(frame) is frames.Delta:
            turn.tokens += frame.tokens
            if turn.stopped:
                return []
            if not turn.plan.may_stream_chat(turn.tool_done):
                turn.held.append(frame.text)
                return []
            return self._emit(turn, frame.text)
        del self._owner[rid]  # every other frame is a request's last
        turn.requests.pop(rid, None)
        if type(frame) is frames.ToolResult:
            return self._on_tool(turn, frame)
        if turn.stopped:  # the cancel after a stop sequence took effect (or the worker went)
            return self._stopped(turn, frame if type(frame) is frames.Finished else None)
        if type(frame) is frames.Finished:
            return self._on_chat_finished(turn, frame)
        return self._fail(turn, client_code(frame.code), frame.message or "the request failed")

    # ------------------------------------------------------------ rules

    def _submit(self, turn: _Turn, kind: str) -> ToBroker:
        self._seq += 1
        rid = f"{self.connection_id}.{self._seq}{kind[0]}"
        turn.requests[rid] = kind
        self._owner[rid] = turn
        req = turn.request
        if kind == "tool":
            job: frames.Job = frames.ToolJob(req.utterance, req.history)
        else:
            job = frames.ChatJob(req.persona, req.history, req.utterance, req.max_tokens,
                                 req.sampling, req.runtime_text)
        return ToBroker(frames.Submit(rid, req.session_id, job))

    def _on_tool(self, turn: _Turn, result: frames.ToolResult) -> list[Action]:
        if result.reason != "stop":
            return self._fail(turn, client_code(result.code or "internal_error"),
                              result.message or "the tool model failed")
        turn.tool_done = True
        actions: list[Action] = [ToolDecided(turn.id, result.yes, result.label, result.score)]
        if not turn.plan.needs_chat or (result.yes and turn.request.tool_call_ends_turn):
            actions += self._close(turn)  # a chat request started with the tool one, if any
            actions.append(Completed(turn.id, None))
            return actions
        if turn.plan.on_tool_result():
            actions.append(self._submit(turn, "chat"))
        for text in turn.held:  # concurrent mode: chat text that waited for the decision
            if turn.stopped:
                break
            actions += self._emit(turn, text)
        turn.held.clear()
        if turn.held_finish is not None and not turn.stopped:
            actions += self._on_chat_finished(turn, turn.held_finish)
        return actions

    def _emit(self, turn: _Turn, text: str) -> list[Action]:
        if turn.stops is not None:
            text, hit = turn.stops.feed(text)
            if hit:
                return self._stop(turn, text)
            if not text:
                return []
        return self._pass_on(turn, text)

    def _stop(self, turn: _Turn, text: str) -> list[Action]:
        """A stop sequence: the text before it goes out, the chat request is cancelled, and
        the turn completes once the worker confirms (its counts make the usage)."""
        actions = self._pass_on(turn, text) if text else []
        turn.stopped = True
        live = [rid for rid, kind in turn.requests.items() if kind == "chat"]
        if not live:  # its last frame already came (held in concurrent mode)
            return actions + self._stopped(turn, turn.held_finish)
        actions.append(ToBroker(frames.Cancel(live)))
        return actions

    def _stopped(self, turn: _Turn, fin: frames.Finished | None) -> list[Action]:
        actions: list[Action] = []
        if turn.sanitizer is not None and (tail := turn.sanitizer.flush()):
            turn.sent.append(tail)
            actions.append(TextDelta(turn.id, tail))
        self._end(turn)
        actions.append(Reply(turn.id, "".join(turn.sent)))
        prompt = fin.prompt_tokens if fin is not None else 0
        cached = fin.cached_tokens if fin is not None else 0
        actions.append(Completed(turn.id, Usage(prompt, turn.tokens, cached, "stop")))
        return actions

    def _pass_on(self, turn: _Turn, text: str) -> list[Action]:
        if turn.sanitizer is not None:
            text = turn.sanitizer.feed(text)
            if not text:
                return []
        turn.sent.append(text)
        return [TextDelta(turn.id, text)]

    def _on_chat_finished(self, turn: _Turn, fin: frames.Finished) -> list[Action]:
        if not turn.plan.may_stream_chat(turn.tool_done):
            turn.held_finish = fin
            return []
        if fin.reason == "error":
            return self._fail(turn, client_code(fin.code or "internal_error"),
                              fin.message or "generation failed")
        if fin.reason == "cancelled":  # the worker was stopped under the turn
            return self._fail(turn, "worker_lost", fin.message or "the worker stopped the request")
        actions: list[Action] = []
        if turn.stops is not None and (held := turn.stops.flush()):
            actions += self._pass_on(turn, held)  # no stop sequence came after all
        if turn.sanitizer is not None and (tail := turn.sanitizer.flush()):
            turn.sent.append(tail)
            actions.append(TextDelta(turn.id, tail))
        self._end(turn)
        actions.append(Reply(turn.id, "".join(turn.sent)))
        actions.append(Completed(turn.id, Usage(fin.prompt_tokens, fin.completion_tokens,
                                                fin.cached_tokens, fin.reason)))
        return actions

    def _fail(self, turn: _Turn, code: str, message: str) -> list[Action]:
        """The turn cannot be served: abort what else runs for it, then one failure."""
        return [*self._close(turn), TurnFailed(turn.id, code, message)]

    def _close(self, turn: _Turn) -> list[Action]:
        live = list(turn.requests)
        self._end(turn)
        # By request id, not session: another connection may carry the same session id.
        return [ToBroker(frames.Cancel(live))] if live else []

    def _end(self, turn: _Turn) -> None:
        del self.turns[turn.id]
        for rid in turn.requests:
            self._owner.pop(rid, None)
        turn.requests.clear()

    def _on_warmed(self, frame: frames.Delta | frames.Finished | frames.ToolResult | frames.Failed
                   ) -> list[Action]:
        if type(frame) is frames.Delta:
            return []
        tag = self._warms.pop(frame.request_id)
        if type(frame) is frames.Finished and frame.reason == "stop":
            return [Warmed(tag, frame.prompt_tokens)]
        return [WarmFailed(tag, client_code(frame.code or "internal_error"),
                           frame.message or "warming failed")]
