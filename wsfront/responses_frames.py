"""The OpenAI Responses API WebSocket messages, both directions, as msgspec Structs tagged on
``type``; decoded and encoded here and nowhere else.

Client events are ``response.create`` (the Responses create body, less the transport fields)
and ``response.cancel``; a field the server does not act on is ignored, as clients send many.
Server events are those of the Responses stream (``response.created`` ...
``response.completed``) and ``error``, in the shapes the openai SDK's types declare.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Union

import msgspec

# ---------------------------------------------------------------- client -> server


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None


class InputItem(msgspec.Struct, kw_only=True):
    """One input item. Clients send messages without ``type`` (the API's easy form), so the
    kinds share one Struct and ``type`` defaults to a message."""

    type: str = "message"
    role: str | None = None
    content: str | list[ContentPart] | None = None
    call_id: str | None = None  # function_call, function_call_output
    output: str | list[ContentPart] | None = None  # function_call_output
    name: str | None = None  # function_call
    arguments: str | None = None
    id: str | None = None


class FunctionName(msgspec.Struct):
    name: str


class ToolIn(msgspec.Struct, kw_only=True):
    """A tool as declared; a function tool is flat in this API (``function`` is the Chat
    Completions nesting, taken too)."""

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    function: FunctionName | None = None

    @property
    def function_name(self) -> str | None:
        if self.type != "function":
            return None
        return self.name if self.name is not None else (self.function and self.function.name)


class ToolChoiceIn(msgspec.Struct, kw_only=True):
    type: str
    name: str | None = None
    function: FunctionName | None = None


class TextFormat(msgspec.Struct):
    type: str = "text"


class TextConfig(msgspec.Struct):
    format: TextFormat | None = None


class ResponseCreate(msgspec.Struct, tag="response.create", tag_field="type", kw_only=True):
    model: str | None = None
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[ToolIn] | None = None
    tool_choice: str | ToolChoiceIn | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    generate: bool | None = None  # false: prepare the prompt's state (warm), no output
    text: TextConfig | None = None
    prompt_cache_key: str | None = None
    user: str | None = None
    # refused when set: this server has no background runs, lanes, conversations or prompts
    background: bool | None = None
    stream_id: str | None = None
    conversation: Any = None
    prompt: Any = None
    # vLLM's sampling extensions
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    ignore_eos: bool | None = None
    # this server's: clean the reply for text-to-speech (off by default, as on /v1)
    sanitize_output: bool | None = None
    speak_numbers: bool | None = None


class ResponseCancel(msgspec.Struct, tag="response.cancel", tag_field="type", kw_only=True):
    response_id: str | None = None


ClientEvent = Union[ResponseCreate, ResponseCancel]
CLIENT_TYPES = ("response.create", "response.cancel")


class FrameError(ValueError):
    """A client message that does not decode; ``code`` and ``param`` go in the error event."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


_client_decoder = msgspec.json.Decoder(ClientEvent)
_json_decoder = msgspec.json.Decoder()
_PATH = re.compile(r" - at `\$\.?(.*)`$")


def decode_client(raw: str | bytes) -> ClientEvent:
    try:
        return _client_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return _explain(raw, exc)


def _explain(raw: str | bytes, exc: Exception) -> ClientEvent:
    """Say precisely what is wrong: the only place a client message is read as a dict."""
    try:
        msg: Any = _json_decoder.decode(raw)
    except msgspec.DecodeError as bad:
        raise FrameError("invalid_json", f"not valid JSON: {bad}") from None
    if not isinstance(msg, dict):
        raise FrameError("invalid_request", "an event must be a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise FrameError("invalid_request", "missing string field 'type'", "type")
    if kind not in CLIENT_TYPES:
        raise FrameError("unknown_event_type", f"unknown or unsupported event type {kind!r}; "
                         f"this server takes {' and '.join(CLIENT_TYPES)}", "type")
    text = str(exc)
    match = _PATH.search(text)
    param = match.group(1) or None if match else None
    message = text[:match.start()] if match else text
    if message.startswith("Object missing required field"):
        field = message.split("`")[1]
        param = f"{param}.{field}" if param else field
        message = f"'{field}' is required"
    raise FrameError("invalid_request", f"{message} (at '{param}')" if param else message, param)


# ---------------------------------------------------------------- server -> client


class OutputText(msgspec.Struct, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] = []
    logprobs: list[Any] = []


class MessageItem(msgspec.Struct, tag="message", tag_field="type", kw_only=True):
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]
    role: str = "assistant"


class FunctionCallItem(msgspec.Struct, tag="function_call", tag_field="type", kw_only=True):
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


OutputItem = Union[MessageItem, FunctionCallItem]


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class Usage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens_details: OutputTokensDetails


def usage(input_tokens: int, output_tokens: int, cached_tokens: int) -> Usage:
    return Usage(input_tokens, output_tokens, input_tokens + output_tokens,
                 InputTokensDetails(cached_tokens), OutputTokensDetails())


class ResponseError(msgspec.Struct):
    code: str  # one of the SDK's ResponseError codes (server_error, invalid_prompt, ...)
    message: str


class IncompleteDetails(msgspec.Struct):
    reason: Literal["max_output_tokens", "max_messages", "content_filter"]


class FunctionToolOut(msgspec.Struct, tag="function", tag_field="type", kw_only=True):
    name: str
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class ToolChoiceFunctionOut(msgspec.Struct, tag="function", tag_field="type"):
    name: str


Status = Literal["in_progress", "completed", "incomplete", "cancelled", "failed"]


class ResponseObject(msgspec.Struct, kw_only=True):
    id: str
    object: str = "response"
    created_at: int
    status: Status
    model: str
    output: list[OutputItem]
    usage: Usage | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] = {}
    parallel_tool_calls: bool = False
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    tool_choice: str | ToolChoiceFunctionOut = "auto"
    tools: list[FunctionToolOut] = []
    truncation: str = "disabled"


class _Event(msgspec.Struct, tag_field="type", kw_only=True):
    sequence_number: int


class ResponseCreated(_Event, tag="response.created"):
    response: ResponseObject


class ResponseInProgress(_Event, tag="response.in_progress"):
    response: ResponseObject


class ResponseCompleted(_Event, tag="response.completed"):
    response: ResponseObject


class ResponseIncomplete(_Event, tag="response.incomplete"):
    response: ResponseObject


class ResponseFailed(_Event, tag="response.failed"):
    response: ResponseObject


class OutputItemAdded(_Event, tag="response.output_item.added"):
    output_index: int
    item: OutputItem


class OutputItemDone(_Event, tag="response.output_item.done"):
    output_index: int
    item: OutputItem


class ContentPartAdded(_Event, tag="response.content_part.added"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class ContentPartDone(_Event, tag="response.content_part.done"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class OutputTextDelta(_Event, tag="response.output_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = []


class OutputTextDone(_Event, tag="response.output_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = []


class FunctionCallArgumentsDelta(_Event, tag="response.function_call_arguments.delta"):
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDone(_Event, tag="response.function_call_arguments.done"):
    item_id: str
    output_index: int
    arguments: str
    name: str


class ErrorDetail(msgspec.Struct):
    type: str  # invalid_request_error, rate_limit_error, server_error, ...
    code: str
    message: str
    param: str | None = None


class ErrorEvent(_Event, tag="error"):
    error: ErrorDetail
    status: int  # the HTTP status the same error has on POST /v1/responses


ServerEvent = Union[ResponseCreated, ResponseInProgress, ResponseCompleted, ResponseIncomplete,
                    ResponseFailed, OutputItemAdded, OutputItemDone, ContentPartAdded,
                    ContentPartDone, OutputTextDelta, OutputTextDone, FunctionCallArgumentsDelta,
                    FunctionCallArgumentsDone, ErrorEvent]
TERMINAL = (ResponseCompleted, ResponseIncomplete, ResponseFailed)

encode_server = msgspec.json.Encoder().encode
