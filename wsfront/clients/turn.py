"""One turn as a client sees it: the ``start`` frame, the loop that reads the turn's frames up
to its ``done``, and the timings a voice assistant cares about (docs/protocol.md order:
ack -> toolcall -> token* -> final -> done, or one error); the transcript sent back as
``history_text``. Frames are read in both shapes servers send: ``toolcall.raw`` as an array of
calls or as a label string, the reply in ``final`` as ``normalized_text`` or ``text``."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .connection import ClientFailure, ClientSettings, Link, ServerError

# A sentence is complete once its end mark is followed by more text (or the stream ends).
_SENTENCE_END = re.compile(r"[.!?\u2026][\"')\]]*\s")
_NOT_PRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_IGNORED = ("pong", "warmed")


def start_frame(settings: ClientSettings, session_id: str, utterance: str,
                history_text: str = "", request_id: str | None = None,
                persona: dict[str, str] | None = None) -> dict[str, Any]:
    """A ``start``; ``persona`` replaces the persona fields of the settings (a preset, a
    switch), and the settings' sampling goes along when any flag set it."""
    fields = settings.persona_fields() if persona is None else persona
    frame: dict[str, Any] = {"type": "start", "session_id": session_id,
                             "request_id": request_id or uuid.uuid4().hex[:12],
                             "user_utterance": utterance, **fields}
    if history_text:
        frame["history_text"] = history_text
    if settings.sampling:
        frame["sampling"] = dict(settings.sampling)
    return frame


def with_exchange(history: str, user: str, assistant: str = "") -> str:
    """The transcript with one more exchange, one line per speaker: a reply's own line breaks
    are flattened, or a reply line that began with "User:" would read as the user speaking.
    A reply that never came (a cancel before any token) adds no assistant line."""
    history += f"User: {_one_line(user)}\n"
    if assistant.strip():
        history += f"Assistant: {_one_line(assistant)}\n"
    return history


def tool_calls(raw: object) -> list[str] | None:
    """The names in a ``toolcall.raw`` array (``[{"name": "take_screenshot"}]``, ``[]`` for
    none); None when ``raw`` is the older label string, which names no call."""
    if not isinstance(raw, list):
        return None
    return [str(c.get("name", "?")) if isinstance(c, dict) else str(c) for c in raw]


def tool_status(frame: dict[str, Any]) -> str:
    """``yes`` or ``no``: the frame's ``status``, else what ``raw`` says (any call listed, or
    a positive label)."""
    status, raw = frame.get("status"), frame.get("raw")
    if status in ("yes", "no"):
        return status
    if isinstance(raw, str):
        return "yes" if raw.strip().lower() in ("yes", "true", "1", "positive") else "no"
    return "yes" if tool_calls(raw) else "no"


def describe_toolcall(frame: dict[str, Any]) -> str:
    """``status=yes calls=take_screenshot raw=[...]``: the decision, then what it named."""
    calls = tool_calls(frame.get("raw"))
    named = "" if calls is None else f" calls={','.join(calls) or 'none'}"
    return f"status={tool_status(frame)}{named} raw={json.dumps(frame.get('raw'))}"


@dataclass
class TurnResult:
    request_id: str
    utterance: str
    ack: dict[str, Any] | None = None
    toolcall: dict[str, Any] | None = None
    tokens: list[str] = field(default_factory=list)
    final: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False
    tokens_at_toolcall: int | None = None  # chat tokens that had arrived before the toolcall
    # milliseconds from sending ``start``
    ack_ms: float | None = None
    toolcall_ms: float | None = None
    first_token_ms: float | None = None
    first_sentence_ms: float | None = None
    total_ms: float | None = None

    @property
    def text(self) -> str:
        return self.final if self.final is not None else "".join(self.tokens)

    @property
    def tool_status(self) -> str | None:
        return tool_status(self.toolcall) if self.toolcall is not None else None


class TurnRecorder:
    """Frames of one turn and their arrival times (seconds after ``start``) -> ``TurnResult``."""

    def __init__(self, request_id: str, utterance: str) -> None:
        self.result = TurnResult(request_id, utterance)
        self.done = False

    def feed(self, frame: dict[str, Any], elapsed_s: float) -> bool:
        """Record one frame; True once the turn is over. An ``error`` frame raises."""
        r, ms, kind = self.result, elapsed_s * 1000.0, frame["type"]
        if kind == "error":
            raise ServerError(frame)
        if kind == "ack":
            r.ack, r.ack_ms = frame, ms
        elif kind == "toolcall":
            r.toolcall, r.toolcall_ms = frame, ms
            r.tokens_at_toolcall = len(r.tokens)
        elif kind == "token":
            r.tokens.append(str(frame.get("text", "")))
            if r.first_token_ms is None:
                r.first_token_ms = ms
            if r.first_sentence_ms is None and _SENTENCE_END.search("".join(r.tokens)):
                r.first_sentence_ms = ms
        elif kind == "final":
            text = frame.get("normalized_text")
            r.final = str(text if text is not None else frame.get("text", ""))
            if r.first_sentence_ms is None and r.final.strip():
                r.first_sentence_ms = ms
        elif kind == "done":
            r.usage = frame.get("usage") or {}
            r.cancelled = bool(frame.get("cancelled"))
            r.total_ms = ms
            self.done = True
        return self.done


async def run_turn(link: Link, start: dict[str, Any], *,
                   on_frame: Callable[[dict[str, Any], TurnResult], None] | None = None,
                   turn_timeout_s: float | None = None) -> TurnResult:
    """Send ``start`` and read this turn's frames up to its ``done``.

    Frames of other turns (a late ``done`` of a cancelled one) are skipped by request id.
    """
    rid = start["request_id"]
    recorder = TurnRecorder(rid, start["user_utterance"])
    sent_at = time.perf_counter()
    deadline = None if turn_timeout_s is None else sent_at + turn_timeout_s
    await link.send(start)
    while not recorder.done:
        timeout = link.settings.recv_timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - time.perf_counter())
            if timeout <= 0:
                raise ClientFailure(f"timed out: turn {rid} not done within {turn_timeout_s:g}s")
        frame = await link.recv(timeout)
        if frame["type"] in _IGNORED or frame.get("request_id", rid) != rid:
            continue
        recorder.feed(frame, time.perf_counter() - sent_at)
        if on_frame is not None:
            on_frame(frame, recorder.result)
    return recorder.result


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile, ``q`` in [0, 100]; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def printable(text: str) -> str:
    """Model text for a terminal: control characters shown escaped, not obeyed."""
    return _NOT_PRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def round_ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
