"""The Yap WebSocket protocol (docs/protocol.md) as an adapter over the turn core, sans I/O.

``YapSession`` takes what the client sent (``on_client``) and what the broker sent for this
connection (``on_broker``) and returns actions for the shell: a frame for the client
(``SendClient``, with the core event it renders, for the metrics), a frame for the broker,
a close. It translates only: the turn rules are ``TurnCore``'s, the limits ``ConnectionGuards``'.
One turn runs at a time; a ``start`` during a turn is a barge-in.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

import pipeline
from broker import frames
from pipeline import PipelineError

from . import turns as core
from . import yap_frames as wire
from .config import FrontConfig
from .guards import ConnectionGuards, Refusal
from .limits import KeyedWindows
from .turns import ToBroker, TurnCore, TurnEvent, TurnRequest

MAX_ID_CHARS = 256


class SendClient(NamedTuple):
    frame: wire.ServerFrame
    event: TurnEvent | Refusal | None = None  # what it says, for the metrics


class CloseClient(NamedTuple):
    code: int
    reason: str


Action = SendClient | CloseClient | ToBroker


class _Refused(Exception):
    def __init__(self, code: str, message: str, field: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.retry_after_s = code, message, field, retry_after_s


class YapSession:
    """One client connection; ``persona_updates`` is shared by the front's connections, as
    persona changes are limited per session id whichever connection carries them."""

    def __init__(self, config: FrontConfig, connection_id: str,
                 persona_updates: KeyedWindows | None = None, now: float = 0.0) -> None:
        self.config = config
        self.connection_id = connection_id
        self.core = TurnCore(connection_id, config.deploy_mode, config.concurrent_model_call)
        self.guards = ConnectionGuards(config, now)
        self.persona_updates = persona_updates or KeyedWindows(
            config.persona_updates_per_window, config.persona_update_window_s)
        self.bounds = config.sampling_bounds()
        self.session_id: str | None = None
        self.persona = pipeline.compose_persona(None, None, None)
        self.custom_persona: str | None = None
        self.turn: str | None = None  # the running turn's request id
        self.closed = False

    @property
    def persona_text(self) -> str:
        return self.custom_persona if self.custom_persona is not None else self.persona.text

    # ------------------------------------------------------------ shell -> session

    def on_client(self, raw: str | bytes, now: float = 0.0) -> list[Action]:
        if self.closed:
            return []
        refusal = self.guards.on_message(raw, now)
        if refusal is not None:
            if refusal.close is None:
                return [self._refuse(refusal)]
            actions = self._closing()
            actions += [self._refuse(refusal), CloseClient(refusal.close, "message too large")]
            return actions
        if type(raw) is bytes:
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                return [self._error("invalid_message", "frames must be UTF-8 JSON text")]
        text = raw.strip()
        if text in (self.config.cancel_sentinel, self.config.end_sentinel):
            return self._cancel(None, now) if text == self.config.cancel_sentinel else self._end()
        try:
            msg = wire.decode_client(text)
        except wire.FrameError as exc:
            return [self._error(exc.code, exc.message, field=exc.field)]
        kind = type(msg)
        if kind is wire.Start:
            return self._start(msg, now)
        if kind is wire.Cancel:
            rid = msg.request_id
            return self._cancel(str(rid) if rid is not None else None, now)
        if kind is wire.Ping:
            return [SendClient(wire.PongFrame())]
        if kind is wire.Pong:
            return []
        if kind is wire.End:
            return self._end()
        return self._warm(msg, now)  # WarmPersona | WarmHistory

    def on_broker(self, frame: frames.Delta | frames.Finished | frames.ToolResult | frames.Failed
                  ) -> list[Action]:
        return self._render(self.core.on_broker(frame))

    def on_idle(self, now: float) -> list[Action]:
        if self.closed or not self.guards.idle(now, self.core.busy()):
            return []
        actions = self.on_disconnect()
        actions.append(CloseClient(self.config.idle_close_code, "idle timeout"))
        return actions

    def idle_deadline(self) -> float | None:
        return None if self.closed else self.guards.idle_deadline()

    def on_disconnect(self) -> list[Action]:
        """The client went away: its running work is aborted everywhere."""
        self.closed = True
        self.turn = None
        return self._render(self.core.close())

    def on_send_overflow(self, unsent_bytes: int) -> list[Action]:
        """The client stopped reading: frames it has not taken passed the front's bound. Its
        work is aborted as on a disconnect; the turn, if one runs, ends with an error."""
        turn = self.turn
        actions = self.on_disconnect()
        actions.append(self._error(
            "client_too_slow",
            f"the client stopped reading: {unsent_bytes} bytes of frames were waiting, "
            f"over the limit of {self.config.max_send_queue_bytes}", request_id=turn))
        actions.append(CloseClient(1008, "client too slow"))
        return actions

    # ------------------------------------------------------------ turns

    def _start(self, msg: wire.Start, now: float) -> list[Action]:
        rid = msg.request_id
        request_id = str(rid) if rid is not None and not isinstance(rid, bool) else None
        try:
            session_id = _session_id(msg.session_id)
            utterance = msg.user_utterance
            if utterance is None:
                raise _Refused("invalid_message", "'user_utterance' is required", "user_utterance")
            if not utterance.strip():
                raise _Refused("invalid_message", "'user_utterance' is empty", "user_utterance")
            if request_id is not None and not 1 <= len(request_id) <= MAX_ID_CHARS:
                raise _Refused("invalid_message",
                               f"'request_id' must be 1 to {MAX_ID_CHARS} characters", "request_id")
            choice = pipeline.check_sampling(
                pipeline.layered(msg, msg.sampling_params, msg.sampling), self.bounds)
            persona = self._resolve_persona(msg, session_id, now)
        except (_Refused, PipelineError) as exc:
            # A refused start ends nothing: should it reuse the running turn's request id, its
            # error leaves the id out, or the client would read it as that turn's end.
            echo = request_id if request_id != self.turn else None
            return [self._error(exc.code, exc.message, echo, exc.field,
                                getattr(exc, "retry_after_s", None))]
        actions: list[Action] = []
        if self.turn is not None:  # barge-in: the old turn ends first
            actions += self._render(self.core.cancel(self.turn))
        self.session_id = session_id
        turn = self.turn = request_id or uuid.uuid4().hex[:16]
        request = TurnRequest(
            session_id=session_id, utterance=utterance, persona=self.persona_text,
            max_tokens=self.config.chat_max_out, history=msg.history_text or "",
            runtime_text=msg.runtime_text or "", sampling=choice.sampling,
            sanitize=choice.sanitize_output, speak_numbers=choice.speak_numbers)
        if self.custom_persona is None:
            ack = wire.Ack(session_id=session_id, request_id=turn, persona_style=persona.style,
                           gender=persona.gender, user_identity=persona.user_identity,
                           sanitize_output=choice.sanitize_output)
        else:
            ack = wire.Ack(session_id=session_id, request_id=turn, persona="custom",
                           sanitize_output=choice.sanitize_output)
        actions.append(SendClient(ack, core.Accepted(turn)))
        actions += self._render(self.core.start(turn, request))
        return actions

    def _resolve_persona(self, msg: wire._PersonaFields, session_id: str, now: float
                         ) -> pipeline.Persona:
        """A full persona text wins; otherwise compose one; either persists for the session.
        A change of persona counts against the session's persona-update limit."""
        custom, persona = self.custom_persona, self.persona
        text = msg.persona_text if msg.persona_text is not None else msg.chat_prompt
        style = msg.persona_style if msg.persona_style is not None else msg.personality
        gender = msg.gender if msg.gender is not None else msg.assistant_gender
        if text is not None:
            custom = text
        elif style is not None or gender is not None or msg.user_identity is not None:
            custom = None
            persona = pipeline.compose_persona(style, gender, msg.user_identity)
        new_text = custom if custom is not None else persona.text
        if new_text != self.persona_text:
            retry = self.persona_updates.hit(session_id, now)
            if retry is not None:
                raise _Refused("chat_prompt_update_rate_limited",
                               "persona changed too often for this session", None, retry)
        self.custom_persona, self.persona = custom, persona
        return persona

    def _cancel(self, request_id: str | None, now: float) -> list[Action]:
        refusal = self.guards.on_cancel(now)
        if refusal is not None:
            return [self._refuse(refusal)]
        if self.turn is None:
            return [SendClient(wire.Done(request_id=request_id, cancelled=True))]
        return self._render(self.core.cancel(self.turn))

    def _closing(self) -> list[Action]:
        """The server closes a connection whose client still listens: its running turn ends
        with its ``done`` (cancelled) first, as every turn ends with one terminal frame."""
        actions = self._render(self.core.cancel(self.turn)) if self.turn is not None else []
        return actions + self.on_disconnect()

    def _end(self) -> list[Action]:
        actions = self._closing()
        actions.append(SendClient(wire.ConnectionClosed(reason="client_request")))
        actions.append(CloseClient(1000, "client_request"))
        return actions

    def _warm(self, msg: wire.WarmPersona | wire.WarmHistory, now: float) -> list[Action]:
        """Prime the chat worker's prefix cache with the persona (and the history)."""
        target = "history" if type(msg) is wire.WarmHistory else "persona"
        try:
            session_id = msg.session_id or self.session_id or self.connection_id
            self._resolve_persona(msg, session_id, now)
        except _Refused as exc:
            return [self._error(exc.code, exc.message, None, exc.field, exc.retry_after_s)]
        except PipelineError as exc:
            return [self._error(exc.code, exc.message, field=exc.field)]
        self.session_id = session_id
        if not self.core.has_chat:
            return [SendClient(wire.WarmedFrame(target=target, skipped=True,
                                                reason="no chat model in this deployment"))]
        history = (msg.history_text or "") if type(msg) is wire.WarmHistory else ""
        return self._render(self.core.warm(target, session_id, self.persona_text, history,
                                           msg.runtime_text or ""))

    # ------------------------------------------------------------ core events -> frames

    def _render(self, actions: list[core.Action]) -> list[Action]:
        out: list[Action] = []
        for action in actions:
            kind = type(action)
            if kind is core.TextDelta:
                out.append(SendClient(wire.Token(text=action.text, request_id=action.turn),
                                      action))
            elif kind is ToBroker:
                out.append(action)
            elif kind is core.ToolDecided:
                out.append(SendClient(wire.ToolCall(
                    status="yes" if action.yes else "no",
                    raw=[wire.ToolCallItem(self.config.screenshot_tool_name)] if action.yes else [],
                    label=action.label, score=round(action.score, 4), request_id=action.turn),
                    action))
            elif kind is core.Reply:
                out.append(SendClient(wire.FinalText(text=action.text, normalized_text=action.text,
                                                     request_id=action.turn), action))
            elif kind is core.Completed:
                self._ended(action.turn)
                usage = _usage(action.usage) if action.usage is not None else {}
                out.append(SendClient(wire.Done(request_id=action.turn, usage=usage), action))
            elif kind is core.Cancelled:
                self._ended(action.turn)
                out.append(SendClient(wire.Done(request_id=action.turn, cancelled=True,
                                                cancelled_after_tokens=action.after_tokens),
                                      action))
            elif kind is core.TurnFailed:
                self._ended(action.turn)
                out.append(SendClient(wire.Error(error_code=action.code, message=action.message,
                                                 request_id=action.turn), action))
            elif kind is core.Warmed:
                out.append(SendClient(wire.WarmedFrame(target=action.tag,
                                                       prompt_tokens=action.prompt_tokens)))
            elif kind is core.WarmFailed:
                refusal = Refusal(action.code, action.message)
                out.append(SendClient(wire.Error(error_code=action.code, message=action.message,
                                                 target=action.tag), refusal))
        return out

    def _ended(self, turn: str) -> None:
        if self.turn == turn:
            self.turn = None

    def _refuse(self, refusal: Refusal) -> SendClient:
        return SendClient(wire.Error(error_code=refusal.code, message=refusal.message,
                                     retry_after_s=_rounded(refusal.retry_after_s)), refusal)

    @staticmethod
    def _error(code: str, message: str, request_id: str | None = None, field: str | None = None,
               retry_after_s: float | None = None) -> SendClient:
        return SendClient(wire.Error(error_code=code, message=message, request_id=request_id,
                                     field=field or None, retry_after_s=_rounded(retry_after_s)),
                          Refusal(code, message))


def _session_id(value: str | None) -> str:
    if value is None:
        raise _Refused("missing_session_id", "'session_id' is required", "session_id")
    if not value.strip() or len(value) > MAX_ID_CHARS:
        raise _Refused("invalid_message", f"'session_id' must be 1 to {MAX_ID_CHARS} characters",
                       "session_id")
    return value


def _usage(usage: core.Usage) -> wire.UsageFrame:
    return wire.UsageFrame(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=wire.TokenDetails(usage.cached_tokens),
        finish_reason=usage.finish_reason)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
