"""Every frame of the Yap WebSocket protocol (docs/protocol.md), both directions, as msgspec
Structs tagged on ``type``; decoded and encoded here and nowhere else.

Client frames are decoded in one pass (``decode_client``). A frame that does not decode is
looked at once more, as plain JSON, only to say precisely what is wrong with it (and to take
the legacy ``{"cancel": true}``); that is the only place a client frame is read as a dict.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

from pipeline import SAMPLING_KEYS, SamplingRequest

# ---------------------------------------------------------------- client -> server


class _PersonaFields(SamplingRequest, forbid_unknown_fields=False, kw_only=True):
    """A persona as a client gives it: full text, or the parts to compose one from; the
    sampling knobs may also stand at the top of the frame (inherited)."""

    persona_text: str | None = None
    chat_prompt: str | None = None  # alias of persona_text
    persona_style: str | None = None
    personality: str | None = None  # alias of persona_style
    gender: str | None = None
    assistant_gender: str | None = None  # alias of gender
    user_identity: str | None = None
    session_id: str | None = None
    runtime_text: str | None = None  # time, place, app state: after the persona in the prompt


class Start(_PersonaFields, tag="start", tag_field="type", kw_only=True):
    user_utterance: str | None = None
    request_id: str | int | None = None
    history_text: str | None = None
    sampling: SamplingRequest | None = None
    sampling_params: SamplingRequest | None = None  # alias of sampling


class Cancel(msgspec.Struct, tag="cancel", tag_field="type", kw_only=True):
    request_id: str | int | None = None


class End(msgspec.Struct, tag="end", tag_field="type"):
    pass


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    pass


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    pass


class WarmPersona(_PersonaFields, tag="warm_persona", tag_field="type", kw_only=True):
    pass


class WarmHistory(_PersonaFields, tag="warm_history", tag_field="type", kw_only=True):
    history_text: str | None = None


ClientFrame = Union[Start, Cancel, End, Ping, Pong, WarmPersona, WarmHistory]
CLIENT_TYPES = ("start", "cancel", "end", "ping", "pong", "warm_persona", "warm_history")


class FrameError(ValueError):
    """A client frame that breaks the protocol; ``code`` and ``field`` go in the error frame."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


_client_decoder = msgspec.json.Decoder(ClientFrame)
_json_decoder = msgspec.json.Decoder()


def decode_client(text: str | bytes) -> ClientFrame:
    try:
        return _client_decoder.decode(text)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return _explain(text, exc)


def _explain(text: str | bytes, exc: Exception) -> ClientFrame:
    try:
        msg: Any = _json_decoder.decode(text)
    except msgspec.DecodeError as bad:
        raise FrameError("invalid_message", f"not valid JSON: {bad}") from None
    if not isinstance(msg, dict):
        raise FrameError("invalid_message", "a frame must be a JSON object")
    kind = msg.get("type")
    if kind is None and msg.get("cancel") is True:  # the legacy cancel frame
        rid = msg.get("request_id")
        return Cancel(request_id=rid if isinstance(rid, (str, int)) and rid is not True else None)
    if not isinstance(kind, str):
        raise FrameError("invalid_message", "missing string field 'type'")
    if kind not in CLIENT_TYPES:
        raise FrameError("unknown_message_type", f"unknown message type {kind!r}")
    reason, _, where = str(exc).partition(" - at `$")
    path = [part for part in where.rstrip("`").split(".") if part]
    field = path[-1] if path else None
    sampling = bool(path) and (path[0] in ("sampling", "sampling_params") or
                               path[0] in SAMPLING_KEYS)
    if reason.startswith("Object contains unknown field"):  # only nested sampling objects
        field = reason.split("`")[1]
        reason = f"unknown key; allowed: {', '.join(SAMPLING_KEYS)}"
    name = ".".join(path) or "frame"
    raise FrameError("invalid_sampling" if sampling else "invalid_message", f"{name}: {reason}",
                     field)


# ---------------------------------------------------------------- server -> client


class _Out(msgspec.Struct, tag_field="type", omit_defaults=True, kw_only=True):
    pass


class Ack(_Out, tag="ack", kw_only=True):
    session_id: str
    request_id: str
    persona_style: str | None = None
    gender: str | None = None
    user_identity: str | None = None
    persona: str | None = None  # "custom" when the client gave the whole persona text
    sanitize_output: bool


class ToolCallItem(msgspec.Struct):
    name: str


class ToolCall(_Out, tag="toolcall"):
    status: Literal["yes", "no"]
    raw: list[ToolCallItem]  # the tool calls: [{"name": "take_screenshot"}] for yes, [] for no
    label: str
    score: float
    request_id: str


class Token(_Out, tag="token"):
    text: str
    request_id: str


class FinalText(_Out, tag="final"):
    text: str
    normalized_text: str
    request_id: str


class TokenDetails(msgspec.Struct):
    cached_tokens: int


class UsageFrame(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: TokenDetails
    finish_reason: str


class Done(_Out, tag="done"):
    request_id: str | None = None
    usage: UsageFrame | dict[str, Any] | None = None  # {} for a tool-only turn
    cancelled: bool = False
    cancelled_after_tokens: int | None = None


class Capacity(msgspec.Struct):
    active: int
    max: int
    available: int
    at_capacity: bool


class Error(_Out, tag="error"):
    error_code: str
    message: str
    request_id: str | None = None
    field: str | None = None
    retry_after_s: float | None = None
    target: str | None = None  # "persona" | "history": a warm-up that failed
    capacity: Capacity | None = None


class PongFrame(_Out, tag="pong"):
    pass


class WarmedFrame(_Out, tag="warmed"):
    target: str
    prompt_tokens: int | None = None
    skipped: bool = False
    reason: str | None = None


class ConnectionClosed(_Out, tag="connection_closed"):
    reason: str


ServerFrame = Union[Ack, ToolCall, Token, FinalText, Done, Error, PongFrame, WarmedFrame,
                    ConnectionClosed]

encode_server = msgspec.json.Encoder().encode
