"""OpenAI Chat Completions (``POST /v1/chat/completions``) as an adapter over the turn core,
sans I/O: one ``ChatCompletion`` per request.

``start(body)`` reads the request and returns actions for the shell: HTTP output (``Respond``
for a whole response, ``StreamStart`` / ``StreamData`` / ``StreamEnd`` for server-sent events)
and frames for the broker (``ToBroker``). ``on_broker`` renders the turn core's events;
``on_disconnect`` (the client closed its stream: how Pipecat and LiveKit interrupt) aborts
the turn on every worker.

The messages map onto a turn as on ``/ws``: ``system``/``developer`` -> persona, earlier
``user``/``assistant`` turns -> history, the last user message -> utterance, so the persona and
history are the prompt's stable prefix. Tool results after the last user message (the
client ran the tool the server called) are the turn's runtime context, and the tool model is
not asked again. A request that declares the screenshot tool runs the tool model first: a
yes is the whole answer, as a ``tool_calls`` message.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import pipeline
from pipeline import PipelineError, SamplingBounds, SamplingRequest

from . import openai_frames as oa
from . import turns as core
from .config import FrontConfig
from .guards import Refusal
from .turns import ToBroker, TurnCore, TurnRequest

MAX_STOPS: Final = 4

# A client code (turns.CLIENT_CODES, guards) -> HTTP status and OpenAI error type.
STATUS: Final[dict[str, tuple[int, str]]] = {
    "invalid_request": (400, "invalid_request_error"),
    "invalid_message": (400, "invalid_request_error"),
    "invalid_sampling": (400, "invalid_request_error"),
    "chat_prompt_too_long": (400, "invalid_request_error"),
    "authentication_failed": (401, "authentication_error"),
    "model_not_found": (404, "invalid_request_error"),
    "not_found": (404, "invalid_request_error"),
    "request_too_large": (413, "invalid_request_error"),
    "rate_limited": (429, "rate_limit_error"),
    "server_at_capacity": (429, "rate_limit_error"),
    "worker_unavailable": (503, "server_error"),
    "worker_restarting": (503, "server_error"),
    "queue_timeout": (503, "server_error"),
    "worker_lost": (502, "server_error"),
    "internal_error": (500, "server_error"),
}
RETRY_AFTER_S: Final = {"worker_unavailable": 1, "worker_restarting": 1, "queue_timeout": 1}


def status_of(code: str) -> tuple[int, str]:
    return STATUS.get(code, (500, "server_error"))


# ---------------------------------------------------------------- actions for the shell


class Respond(NamedTuple):
    """A whole response; the exchange is over."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    event: core.TurnEvent | Refusal | None = None


class StreamStart(NamedTuple):
    """The head of a server-sent event stream."""


class StreamData(NamedTuple):
    data: bytes
    event: core.TurnEvent | Refusal | None = None
    # Set on a plain text chunk: a shell whose client is behind may merge these texts into
    # one chunk (``ChatCompletion.text_chunk``).
    text: str | None = None


class StreamEnd(NamedTuple):
    """The stream's last byte was sent; the exchange is over."""


class Note(NamedTuple):
    """A turn event with no bytes of its own (for the metrics)."""

    event: core.TurnEvent


Action = Respond | StreamStart | StreamData | StreamEnd | Note | ToBroker


def error_body(code: str, message: str, param: str | None = None) -> bytes:
    _, kind = status_of(code)
    return oa.encode(oa.ErrorResponse(oa.ErrorBody(message, kind, param, code)))


def error_response(code: str, message: str, param: str | None = None,
                   retry_after_s: float | None = None) -> Respond:
    status, _ = status_of(code)
    retry = retry_after_s if retry_after_s is not None else RETRY_AFTER_S.get(code)
    headers = (("retry-after", str(max(1, round(retry)))),) if retry is not None else ()
    return Respond(status, error_body(code, message, param), headers, Refusal(code, message))


def model_list(models: list[str], created: int) -> bytes:
    return oa.encode(oa.ModelList([oa.ModelOut(m, created) for m in models]))


class _Refused(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the request asks of the turn, before the turn core gets it."""

    turn: TurnRequest
    model: str
    stream: bool
    include_usage: bool
    force_tool_call: bool  # tool_choice names the screenshot tool (or is "required")


class ChatCompletion:
    """One ``POST /v1/chat/completions``. ``served`` are the chat models the workers serve
    (``/v1/models``), None or empty when the front knows of none (it just started, a chat
    worker is restarting): then any model name goes to the broker, which queues the turn as
    it would a ``/ws`` one. ``created`` is the wall clock in seconds."""

    def __init__(self, config: FrontConfig, connection_id: str, served: list[str] | None,
                 created: int) -> None:
        self.config = config
        self.served = served
        self.created = created
        self.core = TurnCore(connection_id, config.deploy_mode, config.concurrent_model_call)
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.turn = "t"
        self.stream = False
        self.include_usage = False
        self.model = ""
        self.text: list[str] = []
        self.tool_called = False
        self.head_sent = False
        self.writer: oa.ChunkWriter | None = None
        self.done = False

    # ------------------------------------------------------------ shell -> adapter

    def start(self, body: bytes) -> list[Action]:
        try:
            plan = self._plan(oa.decode_request(body))
        except oa.FrameError as exc:
            return self._end([error_response("invalid_request", exc.message, exc.param)])
        except _Refused as exc:
            return self._end([error_response(exc.code, exc.message, exc.param)])
        except PipelineError as exc:
            return self._end([error_response("invalid_request", exc.message, exc.field)])
        self.stream, self.include_usage, self.model = plan.stream, plan.include_usage, plan.model
        if self.stream:
            self.writer = oa.ChunkWriter(self.id, self.created, self.model, self.include_usage)
        actions: list[Action] = [Note(core.Accepted(self.turn))]
        if plan.force_tool_call:  # the client required the call: no model is asked
            return actions + self._tool_call(core.Completed(self.turn, None))
        return actions + self._render(self.core.start(self.turn, plan.turn))

    def on_broker(self, frame: Any) -> list[Action]:
        return self._render(self.core.on_broker(frame))

    def on_disconnect(self) -> list[Action]:
        """The client went away (how Pipecat and LiveKit interrupt): its turn is cancelled
        on every worker; nothing more is sent."""
        self.done = True
        return self._render(self.core.cancel(self.turn))

    def on_send_overflow(self) -> list[Action]:
        return self.on_disconnect()

    def text_chunk(self, text: str) -> bytes:
        """The SSE event of a text chunk (the shell's merged ones)."""
        assert self.writer is not None
        return self.writer.text(text)

    # ------------------------------------------------------------ request -> turn

    def _plan(self, req: oa.ChatRequest) -> _Plan:
        config = self.config
        served = self.served  # none known (yet): the broker queues the turn as for /ws
        model = req.model or (served[0] if served else "default")
        if served and model not in served:
            raise _Refused("model_not_found", f"The model '{model}' does not exist; this server "
                           f"serves {', '.join(served)}", "model")
        if req.n is not None and req.n != 1:
            raise _Refused("invalid_request", "only n=1 is supported", "n")
        if req.logprobs:
            raise _Refused("invalid_request", "logprobs are not supported", "logprobs")
        if req.response_format is not None and req.response_format.type != "text":
            raise _Refused("invalid_request", f"response_format {req.response_format.type!r} is "
                           "not supported; only 'text'", "response_format")
        persona, history, utterance, tool_results = self._conversation(req.messages)
        limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        if limit is not None and limit < 1:
            raise _Refused("invalid_request", f"'{param}' must be at least 1", param)
        max_tokens = min(limit, config.chat_max_out) if limit is not None else config.chat_max_out
        stops = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        if len(stops) > MAX_STOPS:
            raise _Refused("invalid_request", f"at most {MAX_STOPS} stop sequences", "stop")
        choice = pipeline.check_sampling(SamplingRequest(
            temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, min_p=req.min_p,
            repetition_penalty=req.repetition_penalty, presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty, seed=req.seed,
            sanitize_output=req.sanitize_output is True,
            speak_numbers=req.speak_numbers is True), SamplingBounds())
        run_tool, force = self._tool_use(req)
        if tool_results:
            run_tool = force = False  # the tool was called for this utterance already
        session = req.prompt_cache_key or req.user or _session_of(persona)
        turn = TurnRequest(
            session_id=session, utterance=utterance, persona=persona, max_tokens=max_tokens,
            history=history, runtime_text=tool_results, sampling=choice.sampling,
            sanitize=choice.sanitize_output, speak_numbers=choice.speak_numbers,
            tool=run_tool, tool_call_ends_turn=True, stop=stops)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return _Plan(turn, model, bool(req.stream), include_usage, force)

    def _tool_use(self, req: oa.ChatRequest) -> tuple[bool, bool]:
        """(run the tool model, answer with the tool call outright) from tools/tool_choice."""
        name = self.config.screenshot_tool_name
        declared = any(t.function is not None and t.function.name == name
                       for t in req.tools or ())
        choice = req.tool_choice
        if isinstance(choice, oa.NamedToolChoice):
            if choice.function.name != name:
                raise _Refused("invalid_request", f"this server can call only the '{name}' tool",
                               "tool_choice")
            return False, True
        if choice is None or choice == "auto":
            return declared, False
        if choice == "none":
            return False, False
        if choice == "required":
            if not declared:
                raise _Refused("invalid_request", f"tool_choice 'required' needs the '{name}' "
                               "tool declared: it is the only tool this server calls",
                               "tool_choice")
            return False, True
        raise _Refused("invalid_request", "tool_choice must be 'none', 'auto', 'required' or "
                       "a named function", "tool_choice")

    @staticmethod
    def _conversation(messages: list[oa.Message]) -> tuple[str, str, str, str]:
        """(persona, history transcript, utterance, tool results after it)."""
        for i, m in enumerate(messages):
            if m.role not in ("system", "developer", "user", "assistant", "tool"):
                raise _Refused("invalid_request", f"unknown role {m.role!r}",
                               f"messages[{i}].role")
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        if last_user < 0:
            raise _Refused("invalid_request", "messages must include a user message", "messages")
        system: list[str] = []
        history: list[str] = []
        results: list[str] = []
        names: dict[str, str] = {}  # tool call id -> function name
        for i, m in enumerate(messages):
            where = f"messages[{i}]"
            role = m.role
            text = oa.text_of(m.content, f"{where}.content").strip()
            for call in m.tool_calls or ():
                names[call.id] = call.function.name
            if role in ("system", "developer"):
                if text:
                    system.append(text)
            elif i == last_user:
                continue
            elif role == "tool":
                if i > last_user and text:
                    name = names.get(m.tool_call_id or "", "the tool")
                    results.append(f"Result of {name}: {text}")
            elif text and i < last_user:
                history.append(("User: " if role == "user" else "Assistant: ") + text)
        utterance = oa.text_of(messages[last_user].content,
                               f"messages[{last_user}].content").strip()
        if not utterance:
            raise _Refused("invalid_request", "the last user message is empty",
                           f"messages[{last_user}].content")
        return "\n\n".join(system), "\n".join(history), utterance, "\n".join(results)

    # ------------------------------------------------------------ core events -> HTTP

    def _render(self, actions: list[core.Action]) -> list[Action]:
        out: list[Action] = []
        for action in actions:
            kind = type(action)
            if kind is ToBroker:
                out.append(action)
            elif kind is core.TextDelta:
                self.text.append(action.text)
                if not self.stream:
                    out.append(Note(action))
                elif self.head_sent:
                    out.append(StreamData(self.writer.text(action.text), action,  # type: ignore[union-attr]
                                          action.text))
                else:
                    self.head_sent = True
                    out.append(StreamStart())
                    out.append(StreamData(self.writer.first(action.text), action))  # type: ignore[union-attr]
            elif kind is core.ToolDecided:
                self.tool_called = action.yes
                out.append(Note(action))
            elif kind is core.Completed:
                out += self._tool_call(action) if self.tool_called else self._complete(action)
            elif kind is core.TurnFailed:
                out += self._failed(action)
            elif kind is core.Cancelled:  # the client is gone: for the metrics only
                out.append(Note(action))
            # Reply: nothing to say (the client has the text)
        return out

    def _complete(self, done: core.Completed) -> list[Action]:
        usage = done.usage or core.Usage(0, 0, 0, "stop")
        out = oa.usage_out(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
        reason = usage.finish_reason if usage.finish_reason in ("stop", "length") else "stop"
        if not self.stream:
            body = oa.ChatCompletionOut(self.id, self.created, self.model, [oa.Choice(
                oa.MessageOut("".join(self.text)), reason)], out)
            return self._end([Respond(200, oa.encode(body), (), done)])
        writer = self.writer
        assert writer is not None
        actions: list[Action] = []
        if not self.head_sent:  # an empty reply: the role chunk still comes first
            self.head_sent = True
            actions += [StreamStart(), StreamData(writer.first(""))]
        actions.append(StreamData(writer.finish(reason)))
        if self.include_usage:
            actions.append(StreamData(writer.usage(out)))
        actions.append(StreamData(oa.DONE, done))
        return self._end(actions + [StreamEnd()])

    def _tool_call(self, done: core.Completed) -> list[Action]:
        call_id = "call_" + secrets.token_hex(12)
        function = oa.FunctionOut(self.config.screenshot_tool_name, "{}")
        usage = oa.usage_out(0, 0, 0)
        if not self.stream:
            body = oa.ChatCompletionOut(self.id, self.created, self.model, [oa.Choice(
                oa.MessageOut(None, tool_calls=[oa.ToolCallOut(call_id, function)]),
                "tool_calls")], usage)
            return self._end([Respond(200, oa.encode(body), (), done)])
        writer = self.writer
        assert writer is not None
        self.head_sent = True
        actions: list[Action] = [
            StreamStart(),
            StreamData(writer.first(None, [oa.ToolCallDelta(0, call_id, function)])),
            StreamData(writer.finish("tool_calls"))]
        if self.include_usage:
            actions.append(StreamData(writer.usage(usage)))
        actions.append(StreamData(oa.DONE, done))
        return self._end(actions + [StreamEnd()])

    def _failed(self, failed: core.TurnFailed) -> list[Action]:
        if not self.head_sent:
            return self._end([error_response(failed.code, failed.message)._replace(event=failed)])
        _, kind = status_of(failed.code)
        error = oa.ErrorResponse(oa.ErrorBody(failed.message, kind, None, failed.code))
        return self._end([StreamData(oa.event(error)), StreamData(oa.DONE, failed), StreamEnd()])

    def _end(self, actions: list[Action]) -> list[Action]:
        self.done = True
        return actions


def _session_of(persona: str) -> str:
    """A conversation without a key of its own is routed by its persona, so requests that
    share a system prompt land where that prefix is cached."""
    return "oa-" + hashlib.blake2s(persona.encode(), digest_size=8).hexdigest()
