"""Client frames of PROTOCOL.md, checked field by field into typed values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_ID_CHARS = 256


class ClientError(ValueError):
    """A client frame that breaks the protocol; ``code`` and ``field`` go in the error frame."""

    def __init__(self, message: str, field: str | None = None, code: str = "invalid_message",
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class PersonaFields:
    """A persona as a client gives it: full text, or the parts to compose one from."""

    persona_text: str | None = None  # `persona_text` or `chat_prompt`
    persona_style: str | None = None  # or `personality`
    gender: str | None = None  # or `assistant_gender`
    user_identity: str | None = None

    @property
    def composes(self) -> bool:
        return any(v is not None for v in (self.persona_style, self.gender, self.user_identity))


@dataclass(frozen=True)
class StartRequest:
    session_id: str
    user_utterance: str
    request_id: str | None = None
    persona: PersonaFields = PersonaFields()
    history_text: str = ""
    sampling: Any = None  # checked by pipeline.validate_sampling


def _text(msg: dict[str, Any], *names: str, required: bool = False) -> str | None:
    """The first of ``names`` present in ``msg`` (aliases), which must be a string."""
    for name in names:
        value = msg.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ClientError(f"'{name}' must be a string, got {type(value).__name__}", name)
        return value
    if required:
        raise ClientError(f"'{names[0]}' is required", names[0])
    return None


def parse_start(msg: dict[str, Any]) -> StartRequest:
    session_id = _text(msg, "session_id", required=True)
    assert session_id is not None
    if not session_id.strip() or len(session_id) > MAX_ID_CHARS:
        raise ClientError(f"'session_id' must be 1 to {MAX_ID_CHARS} characters", "session_id")
    utterance = _text(msg, "user_utterance", required=True)
    assert utterance is not None
    if not utterance.strip():
        raise ClientError("'user_utterance' is empty", "user_utterance")
    request_id = msg.get("request_id")
    if request_id is not None:
        if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
            raise ClientError("'request_id' must be a string", "request_id")
        request_id = str(request_id)
        if not request_id or len(request_id) > MAX_ID_CHARS:
            raise ClientError(f"'request_id' must be 1 to {MAX_ID_CHARS} characters", "request_id")
    sampling = msg.get("sampling")
    return StartRequest(
        session_id=session_id,
        user_utterance=utterance,
        request_id=request_id,
        persona=parse_persona(msg),
        history_text=_text(msg, "history_text") or "",
        sampling=sampling,
    )


def parse_persona(msg: dict[str, Any]) -> PersonaFields:
    return PersonaFields(
        persona_text=_text(msg, "persona_text", "chat_prompt"),
        persona_style=_text(msg, "persona_style", "personality"),
        gender=_text(msg, "gender", "assistant_gender"),
        user_identity=_text(msg, "user_identity"),
    )
