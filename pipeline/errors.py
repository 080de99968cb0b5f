"""The errors pipeline raises on bad client input: each names its field and error code.

The front turns them into `error` frames (`error_code` = `.code`, plus `.field`) without
having to know which rule failed.
"""

from __future__ import annotations


class PipelineError(ValueError):
    """Bad input from a client; `.code` is the protocol error code, `.field` the culprit."""

    code: str = "invalid_message"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class PersonaError(PipelineError):
    """An unknown persona style, gender or user identity."""

    code = "invalid_persona"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)


class PromptError(PipelineError):
    """A prompt that cannot be built, e.g. code `chat_prompt_too_long`."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field, code=code)


class SamplingError(PipelineError):
    """A `sampling` value with an unknown key, a wrong type or out of range."""

    code = "invalid_sampling"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"sampling.{field}: {message}" if field != "sampling" else message,
                         field=field)
