"""The OpenAI Responses API over WebSocket (``/v1/responses``) as an adapter over the turn
core, sans I/O.

``ResponsesSession`` takes what the client sent (``on_client``) and what the broker sent for
this connection (``on_broker``) and returns actions for the shell, as ``YapSession`` does:
``SendClient`` (a ``responses_frames`` event, with the core event it renders), ``CloseClient``,
``ToBroker``. One response runs at a time: a ``response.create`` during one is a barge-in,
``response.cancel`` ends it, and either ends it with ``response.incomplete`` (status
``cancelled``), the terminal event the clients wait for before their next create.

The input maps onto a turn as on ``/v1/chat/completions``: ``instructions`` and
system/developer messages -> persona, earlier user/assistant turns -> history, the last user
message -> utterance, tool results after it -> runtime context (and the tool model is not
asked again). Each response's conversation, its own output included, is kept for
``previous_response_id``, so a chained create sends only what is new.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec

import pipeline
from broker import frames
from pipeline import PipelineError, SamplingBounds, SamplingRequest

from . import openai_frames as oa
from . import responses_frames as wire
from . import turns as core
from .config import FrontConfig
from .guards import ConnectionGuards, Refusal
from .openai_chat import status_of
from .turns import ToBroker, TurnCore, TurnRequest
from .yap import CloseClient, SendClient

Action = SendClient | CloseClient | ToBroker

MAX_CHAINS: Final = 32  # responses a connection can chain from (the newest)

# Our codes the chat adapter's table does not know -> HTTP status and OpenAI error type.
_STATUS: Final[dict[str, tuple[int, str]]] = {
    "invalid_json": (400, "invalid_request_error"),
    "unknown_event_type": (400, "invalid_request_error"),
    "previous_response_not_found": (400, "invalid_request_error"),
    "message_too_large": (413, "invalid_request_error"),
    "client_too_slow": (500, "server_error"),
}
# A turn's failure code -> the SDK's ResponseError code (a closed set); ours goes in the message.
_FAILURE_CODES: Final[dict[str, str]] = {
    "chat_prompt_too_long": "invalid_prompt", "invalid_message": "invalid_prompt",
    "invalid_sampling": "invalid_prompt", "rate_limited": "rate_limit_exceeded",
}


def _status(code: str) -> tuple[int, str]:
    return _STATUS.get(code) or status_of(code)


class _Refused(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


Kind = Literal["system", "user", "assistant", "call", "result"]


@dataclass(frozen=True, slots=True)
class _Item:
    """One conversation item, as far as a turn needs it."""

    kind: Kind
    text: str = ""
    call_id: str = ""  # call, result
    name: str = ""  # call


@dataclass(frozen=True, slots=True)
class _Chain:
    """What a response knew: its instructions and the conversation, its own output last."""

    instructions: str | None
    items: tuple[_Item, ...]


@dataclass(slots=True)
class _Running:
    id: str
    template: wire.ResponseObject  # the response as created; each event renders a copy
    chain: _Chain
    warm: bool = False
    message_id: str | None = None  # the message output item, once text came
    text: list[str] = field(default_factory=list)
    call: wire.FunctionCallItem | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    template: wire.ResponseObject
    chain: _Chain
    session_id: str
    request: TurnRequest | None  # None: a warm-up (generate false)
    force_tool_call: bool = False


class ResponsesSession:
    """One client connection. ``served`` are the chat models the workers serve, None or empty
    when the front knows of none (then any model name goes to the broker)."""

    def __init__(self, config: FrontConfig, connection_id: str,
                 served_models: list[str] | None = None, now: float = 0.0) -> None:
        self.config = config
        self.connection_id = connection_id
        self.served = served_models
        self.core = TurnCore(connection_id, config.deploy_mode, config.concurrent_model_call)
        self.guards = ConnectionGuards(config, now)
        self.session_id = "oar-" + connection_id
        self.running: _Running | None = None
        self.chains: OrderedDict[str, _Chain] = OrderedDict()
        self.closed = False
        self._seq = 0

    # ------------------------------------------------------------ shell -> session

    def on_client(self, raw: str | bytes, now: float = 0.0, wall: int = 0) -> list[Action]:
        if self.closed:
            return []
        refusal = self.guards.on_message(raw, now)
        if refusal is not None:
            if refusal.close is None:
                return [self._refuse(refusal)]
            actions = self._end_running() + self.on_disconnect()
            actions.append(self._refuse(refusal))
            return actions + [CloseClient(refusal.close, "message too large")]
        try:
            msg = wire.decode_client(raw)
        except wire.FrameError as exc:
            return [self._error(exc.code, exc.message, exc.param)]
        if type(msg) is wire.ResponseCancel:
            return self._cancel(msg.response_id, now)
        return self._create(msg, wall)

    def on_broker(self, frame: frames.Delta | frames.Finished | frames.ToolResult | frames.Failed
                  ) -> list[Action]:
        return self._render(self.core.on_broker(frame))

    def on_idle(self, now: float) -> list[Action]:
        if self.closed or not self.guards.idle(now, self.running is not None or self.core.busy()):
            return []
        actions = self.on_disconnect()
        actions.append(CloseClient(self.config.idle_close_code, "idle timeout"))
        return actions

    def idle_deadline(self) -> float | None:
        return None if self.closed else self.guards.idle_deadline()

    def on_disconnect(self) -> list[Action]:
        """The client went away: its running work is aborted everywhere, nothing is said."""
        self.closed = True
        self.running = None
        return [a for a in self.core.close() if type(a) is ToBroker]

    def on_send_overflow(self, queued: int) -> list[Action]:
        """The client stopped reading: its work is aborted as on a disconnect; the running
        response, if any, ends with ``response.failed``."""
        running = self.running
        actions = self.on_disconnect()
        message = (f"the client stopped reading: {queued} bytes of events were waiting, over "
                   f"the limit of {self.config.max_send_queue_bytes}")
        if running is not None:
            actions.append(self._failed(running, core.TurnFailed(running.id, "client_too_slow",
                                                                 message)))
        else:
            actions.append(self._error("client_too_slow", message))
        actions.append(CloseClient(1008, "client too slow"))
        return actions

    # ------------------------------------------------------------ client events

    def _create(self, msg: wire.ResponseCreate, wall: int) -> list[Action]:
        try:
            plan = self._plan(msg, wall)
        except _Refused as exc:
            return [self._error(exc.code, exc.message, exc.param)]
        except PipelineError as exc:
            return [self._error("invalid_request", exc.message, exc.field)]
        actions = self._end_running()  # barge-in: the running response ends first
        rid = plan.template.id
        running = self.running = _Running(rid, plan.template, plan.chain,
                                          warm=plan.request is None)
        accepted = None if running.warm else core.Accepted(rid)
        actions.append(SendClient(wire.ResponseCreated(
            sequence_number=self._next(), response=plan.template), accepted))
        actions.append(SendClient(wire.ResponseInProgress(
            sequence_number=self._next(), response=plan.template)))
        if plan.request is None:
            if not self.core.has_chat:  # nothing to prime: the state is ready as it is
                return actions + self._warmed(running, 0)
            persona, history, _, _ = _conversation(plan.chain, need_user=False)
            return actions + self._render(self.core.warm(rid, plan.session_id, persona, history))
        if plan.force_tool_call:  # the client required the call: no model is asked
            actions += self._function_call(running, None)
            return actions + self._completed(running, core.Completed(rid, None))
        return actions + self._render(self.core.start(rid, plan.request))

    def _cancel(self, response_id: str | None, now: float) -> list[Action]:
        refusal = self.guards.on_cancel(now)
        if refusal is not None:
            return [self._refuse(refusal)]
        running = self.running
        if running is None or (response_id is not None and response_id != running.id):
            # It ended already: any event now would read as the next response's.
            return []
        return self._end_running()

    def _end_running(self) -> list[Action]:
        """Cancel the running response: its work stops, and it ends cancelled."""
        running = self.running
        if running is None:
            return []
        if not running.warm:
            return self._render(self.core.cancel(running.id))
        actions: list[Action] = [a for a in self.core.close() if type(a) is ToBroker]
        return actions + self._incomplete(running, None, cancelled=True)

    # ------------------------------------------------------------ create -> turn

    def _plan(self, msg: wire.ResponseCreate, wall: int) -> _Plan:
        config = self.config
        for name in ("background", "stream_id", "conversation", "prompt"):
            if getattr(msg, name) not in (None, False):
                raise _Refused("invalid_request", f"'{name}' is not supported on this server",
                               name)
        if msg.text is not None and msg.text.format is not None and msg.text.format.type != "text":
            raise _Refused("invalid_request", f"text format {msg.text.format.type!r} is not "
                           "supported; only 'text'", "text.format")
        served = self.served
        model = msg.model or (served[0] if served else "default")
        if served and model not in served:
            raise _Refused("model_not_found", f"The model '{model}' does not exist; this server "
                           f"serves {', '.join(served)}", "model")
        instructions = msg.instructions
        items: tuple[_Item, ...] = ()
        previous = msg.previous_response_id
        if previous is not None:
            chain = self.chains.get(previous)
            if chain is None:
                raise _Refused("previous_response_not_found", f"Previous response with id "
                               f"'{previous}' not found on this connection.",
                               "previous_response_id")
            items = chain.items
            if instructions is None:
                instructions = chain.instructions
        chain = _Chain(instructions, items + _items_of(msg.input))
        limit = msg.max_output_tokens
        if limit is not None and limit < 1:
            raise _Refused("invalid_request", "'max_output_tokens' must be at least 1",
                           "max_output_tokens")
        choice = pipeline.check_sampling(SamplingRequest(
            temperature=msg.temperature, top_p=msg.top_p, top_k=msg.top_k, min_p=msg.min_p,
            repetition_penalty=msg.repetition_penalty, presence_penalty=msg.presence_penalty,
            frequency_penalty=msg.frequency_penalty, seed=msg.seed, ignore_eos=msg.ignore_eos,
            sanitize_output=msg.sanitize_output is True,
            speak_numbers=msg.speak_numbers is True), SamplingBounds())
        tools = [wire.FunctionToolOut(name=t.function_name, parameters=t.parameters,
                                      strict=t.strict, description=t.description)
                 for t in msg.tools or () if t.function_name]
        run_tool, force, choice_out = self._tool_use(msg, {t.name for t in tools})
        template = wire.ResponseObject(
            id="resp_" + secrets.token_hex(24), created_at=wall, status="in_progress",
            model=model, output=[], instructions=msg.instructions, max_output_tokens=limit,
            metadata=msg.metadata or {}, parallel_tool_calls=bool(msg.parallel_tool_calls),
            previous_response_id=previous, temperature=msg.temperature, top_p=msg.top_p,
            tool_choice=choice_out, tools=tools)
        session_id = msg.prompt_cache_key or msg.user or self.session_id
        if msg.generate is False:
            return _Plan(template, chain, session_id, None)
        persona, history, utterance, results = _conversation(chain, need_user=True)
        if results:
            run_tool = force = False  # the tool was called for this utterance already
        max_tokens = min(limit, config.chat_max_out) if limit is not None else config.chat_max_out
        request = TurnRequest(
            session_id=session_id, utterance=utterance,
            persona=persona, max_tokens=max_tokens, history=history, runtime_text=results,
            sampling=choice.sampling, sanitize=choice.sanitize_output,
            speak_numbers=choice.speak_numbers, tool=run_tool, tool_call_ends_turn=True)
        return _Plan(template, chain, session_id, request, force)

    def _tool_use(self, msg: wire.ResponseCreate, declared: set[str]
                  ) -> tuple[bool, bool, str | wire.ToolChoiceFunctionOut]:
        """(run the tool model, answer with the call outright, tool_choice as echoed)."""
        name = self.config.screenshot_tool_name
        choice = msg.tool_choice
        if isinstance(choice, wire.ToolChoiceIn):
            called = choice.name or (choice.function and choice.function.name)
            if choice.type != "function" or called != name:
                raise _Refused("invalid_request", f"this server can call only the '{name}' "
                               "function", "tool_choice")
            return False, True, wire.ToolChoiceFunctionOut(name)
        if choice is None or choice == "auto":
            return name in declared, False, "auto"
        if choice == "none":
            return False, False, "none"
        if choice == "required":
            if name not in declared:
                raise _Refused("invalid_request", f"tool_choice 'required' needs the '{name}' "
                               "tool declared: it is the only tool this server calls",
                               "tool_choice")
            return False, True, "required"
        raise _Refused("invalid_request", "tool_choice must be 'none', 'auto', 'required' or "
                       "a function", "tool_choice")

    # ------------------------------------------------------------ core events -> events

    def _render(self, actions: list[core.Action]) -> list[Action]:
        out: list[Action] = []
        for action in actions:
            kind = type(action)
            if kind is ToBroker:
                out.append(action)
                continue
            running = self.running
            owner = action.tag if kind in (core.Warmed, core.WarmFailed) else action.turn
            if running is None or owner != running.id:
                continue  # a late event of a response that ended
            if kind is core.TextDelta:
                out += self._text(running, action)
            elif kind is core.ToolDecided:
                if action.yes:
                    out += self._function_call(running, action)
            elif kind is core.Completed:
                if running.call is not None:
                    out += self._completed(running, action)
                elif action.usage is not None and action.usage.finish_reason == "length":
                    out += self._incomplete(running, action, cancelled=False)
                else:
                    out += self._completed(running, action)
            elif kind is core.Cancelled:
                out += self._incomplete(running, action, cancelled=True)
            elif kind is core.TurnFailed:
                out.append(self._failed(running, action))
            elif kind is core.Warmed:
                out += self._warmed(running, action.prompt_tokens)
            elif kind is core.WarmFailed:
                out.append(self._failed(running, core.TurnFailed(running.id, action.code,
                                                                 action.message)))
            # Reply: the client has the text already
        return out

    def _text(self, running: _Running, delta: core.TextDelta) -> list[Action]:
        out = self._open_message(running)
        running.text.append(delta.text)
        item_id = running.message_id
        assert item_id is not None
        out.append(SendClient(wire.OutputTextDelta(
            sequence_number=self._next(), item_id=item_id, output_index=0, content_index=0,
            delta=delta.text), delta))
        return out

    def _open_message(self, running: _Running) -> list[Action]:
        if running.message_id is not None:
            return []
        item_id = running.message_id = "msg_" + secrets.token_hex(24)
        return [
            SendClient(wire.OutputItemAdded(
                sequence_number=self._next(), output_index=0,
                item=wire.MessageItem(id=item_id, status="in_progress", content=[]))),
            SendClient(wire.ContentPartAdded(
                sequence_number=self._next(), item_id=item_id, output_index=0, content_index=0,
                part=wire.OutputText(""))),
        ]

    def _close_message(self, running: _Running, status: Literal["completed", "incomplete"]
                       ) -> list[Action]:
        out = self._open_message(running)
        item_id = running.message_id
        assert item_id is not None
        text = "".join(running.text)
        out += [
            SendClient(wire.OutputTextDone(sequence_number=self._next(), item_id=item_id,
                                           output_index=0, content_index=0, text=text)),
            SendClient(wire.ContentPartDone(sequence_number=self._next(), item_id=item_id,
                                            output_index=0, content_index=0,
                                            part=wire.OutputText(text))),
            SendClient(wire.OutputItemDone(sequence_number=self._next(), output_index=0,
                                           item=self._message(running, status))),
        ]
        return out

    def _message(self, running: _Running, status: Literal["completed", "incomplete"]
                 ) -> wire.MessageItem:
        assert running.message_id is not None
        return wire.MessageItem(id=running.message_id, status=status,
                                content=[wire.OutputText("".join(running.text))])

    def _function_call(self, running: _Running, decided: core.ToolDecided | None
                       ) -> list[Action]:
        name = self.config.screenshot_tool_name
        item_id, call_id = "fc_" + secrets.token_hex(24), "call_" + secrets.token_hex(12)
        pending = wire.FunctionCallItem(id=item_id, call_id=call_id, name=name, arguments="",
                                        status="in_progress")
        running.call = msgspec.structs.replace(pending, arguments="{}", status="completed")
        return [
            SendClient(wire.OutputItemAdded(sequence_number=self._next(), output_index=0,
                                            item=pending), decided),
            SendClient(wire.FunctionCallArgumentsDelta(sequence_number=self._next(),
                                                       item_id=item_id, output_index=0,
                                                       delta="{}")),
            SendClient(wire.FunctionCallArgumentsDone(sequence_number=self._next(),
                                                      item_id=item_id, output_index=0,
                                                      arguments="{}", name=name)),
            SendClient(wire.OutputItemDone(sequence_number=self._next(), output_index=0,
                                           item=running.call)),
        ]

    def _completed(self, running: _Running, done: core.Completed) -> list[Action]:
        out: list[Action] = []
        if running.call is not None:
            output: list[wire.OutputItem] = [running.call]
        else:
            out += self._close_message(running, "completed")
            output = [self._message(running, "completed")]
        u = done.usage or core.Usage(0, 0, 0, "stop")
        response = msgspec.structs.replace(
            running.template, status="completed", output=output,
            usage=wire.usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens))
        self._ended(running, keep=True)
        out.append(SendClient(wire.ResponseCompleted(sequence_number=self._next(),
                                                     response=response), done))
        return out

    def _incomplete(self, running: _Running, event: core.Completed | core.Cancelled | None,
                    cancelled: bool) -> list[Action]:
        """Cut short: by max_output_tokens, or cancelled (a cancel, a barge-in)."""
        out: list[Action] = []
        output: list[wire.OutputItem] = []
        if running.call is not None:
            output.append(running.call)
        elif running.message_id is not None or not cancelled:
            out += self._close_message(running, "incomplete")
            output.append(self._message(running, "incomplete"))
        if type(event) is core.Completed and event.usage is not None:
            u = event.usage
            usage = wire.usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens)
        else:
            usage = wire.usage(0, event.after_tokens if type(event) is core.Cancelled else 0, 0)
        response = msgspec.structs.replace(
            running.template, status="cancelled" if cancelled else "incomplete", output=output,
            usage=usage,
            incomplete_details=None if cancelled else wire.IncompleteDetails("max_output_tokens"))
        self._ended(running, keep=True)
        out.append(SendClient(wire.ResponseIncomplete(sequence_number=self._next(),
                                                      response=response), event))
        return out

    def _failed(self, running: _Running, failed: core.TurnFailed) -> SendClient:
        """A failure; a warm-up's counts as a refused message (it was not a turn)."""
        output: list[wire.OutputItem] = []
        if running.message_id is not None:
            output.append(self._message(running, "incomplete"))
        code = _FAILURE_CODES.get(failed.code, "server_error")
        response = msgspec.structs.replace(
            running.template, status="failed", output=output,
            error=wire.ResponseError(code, f"{failed.message} ({failed.code})"))
        self._ended(running, keep=False)
        event = Refusal(failed.code, failed.message) if running.warm else failed
        return SendClient(wire.ResponseFailed(sequence_number=self._next(), response=response),
                          event)

    def _warmed(self, running: _Running, prompt_tokens: int) -> list[Action]:
        response = msgspec.structs.replace(running.template, status="completed",
                                           usage=wire.usage(prompt_tokens, 0, 0))
        self._ended(running, keep=True)
        return [SendClient(wire.ResponseCompleted(sequence_number=self._next(),
                                                  response=response))]

    def _ended(self, running: _Running, keep: bool) -> None:
        """The response is over; its conversation, output included, can be chained from."""
        if self.running is running:
            self.running = None
        if not keep:
            return
        items = running.chain.items
        if running.call is not None:
            items += (_Item("call", call_id=running.call.call_id, name=running.call.name),)
        elif text := "".join(running.text).strip():
            items += (_Item("assistant", text),)
        self.chains[running.id] = _Chain(running.chain.instructions, items)
        while len(self.chains) > MAX_CHAINS:
            self.chains.popitem(last=False)

    # ------------------------------------------------------------ errors

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _refuse(self, refusal: Refusal) -> SendClient:
        return self._error(refusal.code, refusal.message, event=refusal)

    def _error(self, code: str, message: str, param: str | None = None,
               event: Refusal | None = None) -> SendClient:
        status, kind = _status(code)
        return SendClient(wire.ErrorEvent(sequence_number=self._next(), status=status,
                                          error=wire.ErrorDetail(kind, code, message, param)),
                          event if event is not None else Refusal(code, message))


# ---------------------------------------------------------------- input -> conversation


def _items_of(given: str | list[wire.InputItem] | None) -> tuple[_Item, ...]:
    if given is None:
        return ()
    if isinstance(given, str):
        return (_Item("user", given),)
    items: list[_Item] = []
    for i, item in enumerate(given):
        where = f"input[{i}]"
        kind = item.type
        if kind == "message":
            role = item.role
            if role not in ("user", "system", "developer", "assistant"):
                raise _Refused("invalid_request", f"unknown role {role!r}", f"{where}.role")
            text = _text_of(item.content, f"{where}.content")
            items.append(_Item("system" if role in ("system", "developer") else role, text))
        elif kind == "function_call":
            items.append(_Item("call", call_id=item.call_id or "", name=item.name or ""))
        elif kind == "function_call_output":
            if item.call_id is None:
                raise _Refused("invalid_request", "'call_id' is required", f"{where}.call_id")
            items.append(_Item("result", _text_of(item.output, f"{where}.output"), item.call_id))
        elif kind != "reasoning":  # reasoning items carry nothing this server's models read
            raise _Refused("invalid_request", f"input items of type {kind!r} are not supported",
                           f"{where}.type")
    return tuple(items)


def _text_of(content: str | list[wire.ContentPart] | None, where: str) -> str:
    """A message's text; parts other than text are refused (this server reads text)."""
    try:
        return oa.text_of(content, where, ("input_text", "output_text", "text"))
    except oa.FrameError as exc:
        raise _Refused("invalid_request", exc.message, exc.param) from None


def _conversation(chain: _Chain, need_user: bool) -> tuple[str, str, str, str]:
    """(persona, history transcript, utterance, tool results after it)."""
    items = chain.items
    last_user = max((i for i, it in enumerate(items) if it.kind == "user"), default=-1)
    if need_user:
        if last_user < 0:
            raise _Refused("invalid_request", "input must include a user message", "input")
        if not items[last_user].text.strip():
            raise _Refused("invalid_request", "the last user message is empty", "input")
    instructions = (chain.instructions or "").strip()
    system = [instructions] if instructions else []
    history: list[str] = []
    results: list[str] = []
    names = {it.call_id: it.name for it in items if it.kind == "call"}
    end = last_user if need_user else len(items)
    for i, it in enumerate(items):
        text = it.text.strip()
        if it.kind == "system":
            if text:
                system.append(text)
        elif it.kind == "result":
            if i > last_user and text and need_user:
                results.append(f"Result of {names.get(it.call_id) or 'the tool'}: {text}")
        elif it.kind in ("user", "assistant") and text and i < end:
            history.append(("User: " if it.kind == "user" else "Assistant: ") + text)
    utterance = items[last_user].text.strip() if need_user else ""
    return "\n\n".join(system), "\n".join(history), utterance, "\n".join(results)
