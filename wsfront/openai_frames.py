"""The OpenAI Chat Completions wire format, as msgspec Structs both ways.

Requests are decoded in one pass (``decode_request``); a field the server does not act on is
ignored, as the OpenAI API's clients send many (``user``, ``metadata``, ``service_tier``, ...).
Responses are Structs encoded to JSON; the streamed text chunks, one per delta, are built
from pre-encoded bytes around the delta's text (``ChunkWriter``), as they are the hot path.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec


class FrameError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


# ---------------------------------------------------------------- requests


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None


class FunctionCall(msgspec.Struct):
    name: str = ""
    arguments: str = ""


class ToolCallIn(msgspec.Struct):
    id: str = ""
    type: str = "function"
    function: FunctionCall = msgspec.field(default_factory=FunctionCall)


class Message(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionDef(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: dict[str, object] | None = None


class Tool(msgspec.Struct):
    type: str = "function"
    function: FunctionDef | None = None


class FunctionName(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    function: FunctionName
    type: str = "function"


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ResponseFormat(msgspec.Struct):
    type: str = "text"


class ChatRequest(msgspec.Struct):
    messages: list[Message]
    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    logprobs: bool | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    prompt_cache_key: str | None = None
    # vLLM's sampling extensions, sent by its clients (extra_body) and benchmark
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool | None = None
    # this server's: clean the reply for text-to-speech (off by default on /v1)
    sanitize_output: bool | None = None
    speak_numbers: bool | None = None


_request_decoder = msgspec.json.Decoder(ChatRequest)
_PATH = re.compile(r" - at `\$\.?(.*)`$")


def decode_request(body: bytes) -> ChatRequest:
    """The request, or ``FrameError`` naming the field that is wrong."""
    try:
        return _request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        param = match.group(1) if match else None
        message = text[:match.start()] if match else text
        if message.startswith("Object missing required field"):
            field = message.split("`")[1]
            param = f"{param}.{field}" if param else field
            message = f"'{field}' is required"
        return _raise(f"{message} (at '{param}')" if param else message, param)
    except msgspec.DecodeError as exc:
        return _raise(f"the body is not valid JSON: {exc}", None)


def _raise(message: str, param: str | None) -> ChatRequest:
    raise FrameError(message, param)


def text_of(content: str | list[Any] | None, where: str,
            kinds: tuple[str, ...] = ("text",)) -> str:
    """A message's text (``content`` a string or parts with ``type`` and ``text``); parts of
    other kinds are refused naming ``where[i]`` (this server reads text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for i, part in enumerate(content):
        if part.type not in kinds or part.text is None:
            raise FrameError(f"content parts of type {part.type!r} are not supported: "
                             "this server reads text", f"{where}[{i}]")
        texts.append(part.text)
    return "".join(texts)


# ---------------------------------------------------------------- responses


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class TokenDetails(msgspec.Struct):
    cached_tokens: int = 0


class UsageOut(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: TokenDetails


class FunctionOut(msgspec.Struct):
    name: str
    arguments: str


class ToolCallOut(msgspec.Struct):
    id: str
    function: FunctionOut
    type: str = "function"


class MessageOut(msgspec.Struct):
    content: str | None
    role: str = "assistant"
    tool_calls: list[ToolCallOut] | None = None
    refusal: None = None


class Choice(msgspec.Struct):
    message: MessageOut
    finish_reason: str
    index: int = 0
    logprobs: None = None


class ChatCompletionOut(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: UsageOut
    object: str = "chat.completion"
    system_fingerprint: None = None


class ToolCallDelta(msgspec.Struct):
    index: int
    id: str
    function: FunctionOut
    type: str = "function"


class Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(msgspec.Struct):
    delta: Delta
    finish_reason: str | None = None
    index: int = 0
    logprobs: None = None


class ChunkOut(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: str = "chat.completion.chunk"
    usage: UsageOut | None = None


class ModelOut(msgspec.Struct):
    id: str
    created: int
    object: str = "model"
    owned_by: str = "textserve"


class ModelList(msgspec.Struct):
    data: list[ModelOut]
    object: str = "list"


encode = msgspec.json.Encoder().encode

DONE: Final = b"data: [DONE]\n\n"


def event(payload: msgspec.Struct) -> bytes:
    """One server-sent event."""
    return b"data: " + encode(payload) + b"\n\n"


def usage_out(prompt: int, completion: int, cached: int) -> UsageOut:
    return UsageOut(prompt, completion, prompt + completion, TokenDetails(cached))


class ChunkWriter:
    """The SSE events of one streamed completion. A text chunk is the same JSON every time
    but for its text: the bytes around it are encoded once."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.id, self.created, self.model = completion_id, created, model
        self.include_usage = include_usage
        probe = "\x00"  # encodes as \u0000: a marker that cannot occur in the text itself
        whole = event(self._chunk([ChunkChoice(Delta(content=probe))]))
        head, tail = whole.split(encode(probe))
        self._head, self._tail = head, tail

    def text(self, text: str) -> bytes:
        return self._head + encode(text) + self._tail

    def first(self, text: str | None, tool_calls: list[ToolCallDelta] | None = None) -> bytes:
        """The first chunk: the role, with the first text (or the tool call)."""
        return event(self._chunk([ChunkChoice(Delta("assistant", text, tool_calls))]))

    def finish(self, reason: str) -> bytes:
        return event(self._chunk([ChunkChoice(Delta(), reason)]))

    def usage(self, usage: UsageOut) -> bytes:
        return event(ChunkOut(self.id, self.created, self.model, [], usage=usage))

    def _chunk(self, choices: list[ChunkChoice]) -> ChunkOut:
        return ChunkOut(self.id, self.created, self.model, choices)
