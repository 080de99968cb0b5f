"""One WebSocket connection's protocol state, without I/O (PROTOCOL.md).

``Session`` takes what the client sent (``on_client``) and what the broker sent for this
connection's requests (``on_broker``), and returns actions for the shell to carry out:
frames to the client, frames to the broker, a close. It owns the turn rules: ``ack``
first, ``toolcall`` before any chat token, ``token``* -> ``final`` -> ``done``, barge-in,
and exactly one ``done`` or ``error`` for every turn a client starts.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pipeline
from broker import frames
from pipeline import PipelineError, SamplingChoice, StreamSanitizer, TurnPlan

from .config import FrontConfig
from .limits import KeyedWindows, SlidingWindow
from .messages import ClientError, PersonaFields, StartRequest, parse_persona, parse_start

# Broker failure codes -> the client-facing codes of PROTOCOL.md.
FAIL_CODES = {
    "worker_lost": "worker_lost",
    "worker_restarting": "worker_restarting",
    "queue_timeout": "queue_timeout",
    "no_worker": "worker_unavailable",
    "overloaded": "worker_unavailable",
    "bad_request": "internal_error",
}


@dataclass(frozen=True)
class SendClient:
    frame: dict[str, Any]


@dataclass(frozen=True)
class CloseClient:
    code: int
    reason: str


@dataclass(frozen=True)
class ToBroker:
    frame: frames.Submit | frames.Cancel


Action = SendClient | CloseClient | ToBroker


@dataclass
class Turn:
    request_id: str
    plan: TurnPlan
    start: StartRequest
    sampling: SamplingChoice
    ids: dict[str, str] = field(default_factory=dict)  # kind -> internal request id
    tool_done: bool = False
    held: list[str] = field(default_factory=list)  # chat text that arrived before the toolcall
    held_finish: frames.Finished | None = None
    sanitizer: StreamSanitizer | None = None
    sent: list[str] = field(default_factory=list)  # token texts sent to the client
    tokens: int = 0  # reply tokens received from the chat worker


class Session:
    """The protocol state of one client connection; ``now`` is a monotonic clock in seconds.

    ``persona_updates`` is shared by every connection of a front: persona changes are
    limited per session id, whichever connection carries them.
    """

    def __init__(self, config: FrontConfig, connection_id: str,
                 persona_updates: KeyedWindows | None = None, now: float = 0.0) -> None:
        self.config = config
        self.connection_id = connection_id
        self.session_id: str | None = None
        self.persona = pipeline.compose_persona(None, None, None)
        self.custom_persona: str | None = None
        self.turn: Turn | None = None
        self.warms: dict[str, str] = {}  # internal request id -> "persona" | "history"
        self.closed = False
        self._seq = 0
        self.last_activity = now
        self.messages = SlidingWindow(config.max_messages_per_window, config.message_window_s)
        self.cancels = SlidingWindow(config.max_cancels_per_window, config.cancel_window_s)
        self.persona_updates = persona_updates or KeyedWindows(
            config.persona_updates_per_window, config.persona_update_window_s)

    @property
    def persona_text(self) -> str:
        return self.custom_persona if self.custom_persona is not None else self.persona.text

    def idle_deadline(self) -> float | None:
        """When the connection is closed for idleness, if nothing arrives before."""
        timeout = self.config.idle_timeout_s
        return self.last_activity + timeout if timeout > 0 else None

    def on_idle(self, now: float) -> list[Action]:
        deadline = self.idle_deadline()
        if self.closed or deadline is None or now < deadline:
            return []
        if self.turn is not None or self.warms:  # a streaming turn is activity too
            self.last_activity = now
            return []
        actions = self.on_disconnect()
        actions.append(CloseClient(4000, "idle timeout"))
        return actions

    # ------------------------------------------------------------ client -> server

    def on_client(self, raw: str | bytes, now: float = 0.0) -> list[Action]:
        if self.closed:
            return []
        self.last_activity = now
        if len(raw) > self.config.max_message_bytes:  # chars ~ bytes; str may be 4x smaller
            size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
            if size > self.config.max_message_bytes:
                actions = self.on_disconnect()
                actions.append(self._error(
                    "message_too_large",
                    f"frame of {size} bytes; the limit is {self.config.max_message_bytes}"))
                actions.append(CloseClient(1009, "message too large"))
                return actions
        if (retry := self.messages.hit(now)) is not None:
            return [self._limited("rate_limited", "too many messages", retry)]
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                return [self._error("invalid_message", "frames must be UTF-8 JSON text")]
        text = raw.strip()
        if text == self.config.cancel_sentinel:
            return self._cancel(None, now)
        if text == self.config.end_sentinel:
            return self._end()
        try:
            msg = json.loads(text)
        except ValueError as exc:
            return [self._error("invalid_message", f"not valid JSON: {exc}")]
        if not isinstance(msg, dict):
            return [self._error("invalid_message", "a frame must be a JSON object")]
        kind = msg.get("type")
        if kind is None and msg.get("cancel") is True:
            kind = "cancel"
        if kind == "start":
            return self._start(msg, now)
        if kind == "cancel":
            rid = msg.get("request_id")
            return self._cancel(str(rid) if isinstance(rid, (str, int)) else None, now)
        if kind in ("warm_persona", "warm_history"):
            return self._warm(kind[5:], msg, now)
        if kind == "end":
            return self._end()
        if kind == "ping":
            return [SendClient({"type": "pong"})]
        if kind == "pong":
            return []
        if not isinstance(kind, str):
            return [self._error("invalid_message", "missing string field 'type'")]
        return [self._error("unknown_message_type", f"unknown message type {kind!r}")]

    def on_disconnect(self) -> list[Action]:
        """The client went away: its running work is aborted everywhere."""
        self.closed = True
        turn, self.turn = self.turn, None
        return self._abort(turn) if turn else []

    def on_send_overflow(self, unsent_bytes: int) -> list[Action]:
        """The client stopped reading: frames it has not taken passed the front's bound.

        Its work is aborted as on a disconnect; the frames still queued are the shell's to
        drop. The turn, if one runs, ends with an error frame, then the connection closes.
        """
        turn = self.turn
        actions = self.on_disconnect()
        actions.append(self._error(
            "client_too_slow",
            f"the client stopped reading: {unsent_bytes} bytes of frames were waiting, "
            f"over the limit of {self.config.max_send_queue_bytes}",
            request_id=turn.request_id if turn else None))
        actions.append(CloseClient(1008, "client too slow"))
        return actions

    # ------------------------------------------------------------ broker -> server

    def on_broker(self, frame: frames.Delta | frames.Finished | frames.ToolResult | frames.Failed
                  ) -> list[Action]:
        if frame.request_id in self.warms:
            return self._on_warmed(frame)
        turn = self.turn
        if turn is None or frame.request_id not in turn.ids.values():
            return []  # a late frame of a turn that already ended
        if isinstance(frame, frames.Delta):
            turn.tokens += frame.tokens
            return self._on_delta(turn, frame.text)
        if isinstance(frame, frames.ToolResult):
            return self._on_tool(turn, frame)
        if isinstance(frame, frames.Finished):
            return self._on_chat_finished(turn, frame)
        code = FAIL_CODES.get(frame.code, "internal_error")
        return self._fail(turn, code, frame.message)

    # ------------------------------------------------------------ turns

    def _start(self, msg: dict[str, Any], now: float) -> list[Action]:
        try:
            start = parse_start(msg)
            sampling = pipeline.validate_sampling(start.sampling)
            persona = self._resolve_persona(start.persona, start.session_id, now)
        except (ClientError, PipelineError) as exc:
            rid = msg.get("request_id")
            frame = self._error(exc.code, exc.message,
                                str(rid) if isinstance(rid, (str, int)) else None, field=exc.field)
            if isinstance(exc, ClientError) and exc.retry_after_s is not None:
                frame.frame["retry_after_s"] = round(exc.retry_after_s, 3)
            return [frame]
        actions: list[Action] = []
        if self.turn is not None:  # barge-in: the old turn ends first
            actions += self._end_cancelled()
        self.session_id = start.session_id
        request_id = start.request_id or uuid.uuid4().hex[:16]
        plan = TurnPlan(self.config.deploy_mode, self.config.concurrent_model_call)
        turn = Turn(request_id, plan, start, sampling,
                    sanitizer=StreamSanitizer() if sampling.sanitize_output else None)
        self.turn = turn
        ack: dict[str, Any] = {"type": "ack", "session_id": start.session_id, "request_id": request_id}
        if self.custom_persona is None:
            ack.update(persona_style=persona.style, gender=persona.gender,
                       user_identity=persona.user_identity)
        else:
            ack["persona"] = "custom"
        ack["sanitize_output"] = sampling.sanitize_output
        actions.append(SendClient(ack))
        for kind in plan.initial_submissions():
            actions.append(self._submit(turn, kind))
        return actions

    def _resolve_persona(self, fields: PersonaFields, session_id: str, now: float
                         ) -> pipeline.Persona:
        """A full persona text wins; otherwise compose one; either persists for the session.
        A change of persona counts against the session's persona-update limit."""
        custom, persona = self.custom_persona, self.persona
        if fields.persona_text is not None:
            custom = fields.persona_text
        elif fields.composes:
            custom = None
            persona = pipeline.compose_persona(fields.persona_style, fields.gender,
                                               fields.user_identity)
        new_text = custom if custom is not None else persona.text
        if new_text != self.persona_text:
            retry = self.persona_updates.hit(session_id, now)
            if retry is not None:
                raise ClientError("persona changed too often for this session",
                                  code="chat_prompt_update_rate_limited", retry_after_s=retry)
        self.custom_persona, self.persona = custom, persona
        return persona

    def _submit(self, turn: Turn, kind: str) -> ToBroker:
        self._seq += 1
        rid = f"{self.connection_id}.{self._seq}{kind[0]}"
        turn.ids[kind] = rid
        start = turn.start
        if kind == "tool":
            job: frames.Job = frames.ToolJob(start.user_utterance, start.history_text)
        else:
            job = frames.ChatJob(self.persona_text, start.history_text, start.user_utterance,
                                 self.config.chat_max_out, turn.sampling.sampling)
        return ToBroker(frames.Submit(rid, start.session_id, job))

    def _on_tool(self, turn: Turn, result: frames.ToolResult) -> list[Action]:
        if result.reason != "stop":
            return self._fail(turn, result.code or "internal_error",
                              result.message or "the tool model failed")
        turn.tool_done = True
        actions: list[Action] = [self._send(turn, {
            "type": "toolcall", "status": "yes" if result.yes else "no",
            "raw": result.label, "score": round(result.score, 4)})]
        if not turn.plan.needs_chat:
            self.turn = None
            actions.append(self._send(turn, {"type": "done", "usage": {}}))
            return actions
        if turn.plan.on_tool_result():
            actions.append(self._submit(turn, "chat"))
        for text in turn.held:  # concurrent mode: chat text that waited for the toolcall
            actions += self._emit(turn, text)
        turn.held.clear()
        if turn.held_finish is not None:
            actions += self._on_chat_finished(turn, turn.held_finish)
        return actions

    def _on_delta(self, turn: Turn, text: str) -> list[Action]:
        if not turn.plan.may_stream_chat(turn.tool_done):
            turn.held.append(text)
            return []
        return self._emit(turn, text)

    def _emit(self, turn: Turn, text: str) -> list[Action]:
        if turn.sanitizer is not None:
            text = turn.sanitizer.feed(text)
        if not text:
            return []
        turn.sent.append(text)
        return [self._send(turn, {"type": "token", "text": text})]

    def _on_chat_finished(self, turn: Turn, fin: frames.Finished) -> list[Action]:
        if not turn.plan.may_stream_chat(turn.tool_done):
            turn.held_finish = fin
            return []
        if fin.reason == "error":
            return self._fail(turn, fin.code or "internal_error", fin.message or "generation failed")
        if fin.reason == "cancelled":  # the worker was stopped under the turn
            return self._fail(turn, "worker_lost", fin.message or "the worker stopped the request")
        actions: list[Action] = []
        if turn.sanitizer is not None and (tail := turn.sanitizer.flush()):
            turn.sent.append(tail)
            actions.append(self._send(turn, {"type": "token", "text": tail}))
        self.turn = None
        actions.append(self._send(turn, {"type": "final", "text": "".join(turn.sent)}))
        actions.append(self._send(turn, {"type": "done", "usage": {
            "prompt_tokens": fin.prompt_tokens, "completion_tokens": fin.completion_tokens,
            "total_tokens": fin.prompt_tokens + fin.completion_tokens,
            # as in OpenAI's usage: prompt tokens the engine's prefix cache already held
            "prompt_tokens_details": {"cached_tokens": fin.cached_tokens},
            "finish_reason": fin.reason}}))
        return actions

    def _fail(self, turn: Turn, code: str, message: str) -> list[Action]:
        """The turn cannot be served: abort what else runs for it, one error frame."""
        self.turn = None
        return [*self._abort(turn), self._send(turn, {"type": "error", "error_code": code,
                                                      "message": message})]

    def _cancel(self, request_id: str | None, now: float) -> list[Action]:
        if (retry := self.cancels.hit(now)) is not None:
            return [self._limited("rate_limited", "too many cancels", retry)]
        if self.turn is None:
            frame: dict[str, Any] = {"type": "done", "cancelled": True}
            if request_id is not None:
                frame["request_id"] = request_id
            return [SendClient(frame)]
        return self._end_cancelled()

    def _end_cancelled(self) -> list[Action]:
        turn, self.turn = self.turn, None
        assert turn is not None
        # How far the reply had got: the tokens streamed before the cancel took effect.
        return [*self._abort(turn), self._send(turn, {"type": "done", "cancelled": True,
                                                      "cancelled_after_tokens": turn.tokens})]

    def _abort(self, turn: Turn) -> list[Action]:
        if not turn.ids:
            return []
        # By request id, not session: another connection may carry the same session id.
        return [ToBroker(frames.Cancel(list(turn.ids.values())))]

    # ------------------------------------------------------------ cache priming

    def _warm(self, target: str, msg: dict[str, Any], now: float) -> list[Action]:
        """Prime the chat worker's prefix cache with the persona (and the history)."""
        try:
            fields = parse_persona(msg)
            session_id = msg.get("session_id")
            if session_id is not None and not isinstance(session_id, str):
                raise ClientError("'session_id' must be a string", "session_id")
            session_id = session_id or self.session_id or self.connection_id
            history = msg.get("history_text", "") if target == "history" else ""
            if not isinstance(history, str):
                raise ClientError("'history_text' must be a string", "history_text")
            self._resolve_persona(fields, session_id, now)
        except (ClientError, PipelineError) as exc:
            frame = self._error(exc.code, exc.message, field=exc.field)
            if isinstance(exc, ClientError) and exc.retry_after_s is not None:
                frame.frame["retry_after_s"] = round(exc.retry_after_s, 3)
            return [frame]
        self.session_id = session_id
        if self.config.deploy_mode == "tool":
            return [SendClient({"type": "warmed", "target": target, "skipped": True,
                                "reason": "no chat model in this deployment"})]
        self._seq += 1
        rid = f"{self.connection_id}.{self._seq}w"
        self.warms[rid] = target
        job = frames.ChatJob(self.persona_text, history, "", 0)  # max_tokens 0: prefill only
        return [ToBroker(frames.Submit(rid, session_id, job))]

    def _on_warmed(self, frame: frames.Delta | frames.Finished | frames.ToolResult | frames.Failed
                   ) -> list[Action]:
        if isinstance(frame, frames.Delta):
            return []
        target = self.warms.pop(frame.request_id)
        if isinstance(frame, frames.Finished) and frame.reason == "stop":
            return [SendClient({"type": "warmed", "target": target,
                                "prompt_tokens": frame.prompt_tokens})]
        if isinstance(frame, frames.Failed):
            code, message = FAIL_CODES.get(frame.code, "internal_error"), frame.message
        else:
            code = getattr(frame, "code", "") or "internal_error"
            message = getattr(frame, "message", "") or "warming failed"
        return [SendClient({"type": "error", "error_code": code, "message": message,
                            "target": target})]

    def _end(self) -> list[Action]:
        actions = self.on_disconnect()
        actions.append(SendClient({"type": "connection_closed", "reason": "client_request"}))
        actions.append(CloseClient(1000, "client_request"))
        return actions

    # ------------------------------------------------------------ frames

    @staticmethod
    def _send(turn: Turn, frame: dict[str, Any]) -> SendClient:
        frame["request_id"] = turn.request_id
        return SendClient(frame)

    @staticmethod
    def _limited(code: str, message: str, retry_after_s: float) -> SendClient:
        return SendClient({"type": "error", "error_code": code, "message": message,
                           "retry_after_s": round(retry_after_s, 3)})

    @staticmethod
    def _error(code: str, message: str, request_id: str | None = None,
               field: str | None = None) -> SendClient:
        frame: dict[str, Any] = {"type": "error", "error_code": code, "message": message}
        if field:
            frame["field"] = field
        if request_id is not None:
            frame["request_id"] = request_id
        return SendClient(frame)
