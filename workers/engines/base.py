"""The one small async interface every engine implements, and the errors engines raise.

The runtime only speaks these Protocols, so a chat engine (hf, vllm, trt) or a tool engine
(classifier) can be swapped by config without the runtime knowing which one runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pipeline import PromptError, Sampling

StepReason = Literal["stop", "length", "cancelled"]


class EngineUnavailable(RuntimeError):
    """The configured engine cannot run here (unknown name, missing extra, bad model)."""


class EngineDead(RuntimeError):
    """The engine itself failed (its generation loop crashed): the worker must exit."""


class RequestFailed(RuntimeError):
    """One request failed inside a healthy engine; the others go on."""


class RequestCancelled(Exception):
    """The request was aborted before it produced a result (tool engines)."""


@dataclass(slots=True)
class ChatStep:
    """What one engine step produced for one request.

    ``text`` is a stable delta (never half a character), ``tokens`` the number of tokens it
    covers. The last step of a request has ``finish_reason`` set, with the usage counts.
    """

    text: str
    tokens: int
    finish_reason: StepReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the prefix cache (engines that know)


class ChatEngine(Protocol):
    name: str
    tokenizer: Any  # the Hugging Face tokenizer the prompt is rendered and counted with

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def generate(self, request_id: str, prompt: str, max_tokens: int,
                 sampling: Sampling) -> AsyncIterator[ChatStep]:
        """Stream the reply; the last step carries the finish reason. Raises ``PromptError``
        (before any step) when the prompt leaves no room to generate, ``RequestFailed`` or
        ``EngineDead`` on failure."""
        ...

    def abort(self, request_id: str) -> None:
        """Stop generating within one engine step; the stream then ends with "cancelled".
        Unknown or finished ids are ignored."""
        ...

    async def warm(self, prefix: str) -> int:
        """Prefill ``prefix`` so later prompts that start with it hit the prefix cache;
        returns its token count."""
        ...

    def alive(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class ToolDecision:
    """A tool engine's answer: ``yes`` is the decision (positive label's probability at or
    over the worker's threshold), ``label`` the label that stands for it, ``score`` that
    probability."""

    label: str
    score: float
    yes: bool


class ToolEngine(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def classify(self, request_id: str, utterance: str, history: str = "") -> ToolDecision:
        """Decide on ``utterance`` in the light of ``history`` (the transcript before it).
        Raises ``RequestCancelled`` if aborted."""
        ...

    def abort(self, request_id: str) -> None: ...

    def alive(self) -> bool: ...


def clamp_max_tokens(prompt_tokens: int, max_tokens: int, max_model_len: int) -> int:
    """The reply budget that keeps prompt + reply within the model's context.

    A prompt that leaves no room at all is the client's problem, reported like any other
    over-long prompt, so every engine answers it the same way.
    """
    room = max_model_len - prompt_tokens
    if room < 1:
        raise PromptError(
            "chat_prompt_too_long",
            f"prompt is {prompt_tokens} tokens; the model's context is {max_model_len}",
            field="chat_prompt",
        )
    return max(1, min(max_tokens, room))


async def warm_by_prefill(engine: ChatEngine, request_id: str, prefix: str) -> int:
    """Warm ``engine``'s prefix cache the portable way: run ``prefix`` as a prompt that
    generates one token (prefill does the caching); returns the prefix's token count."""
    prompt_tokens = 0
    async for step in engine.generate(request_id, prefix, 1, Sampling()):
        prompt_tokens = step.prompt_tokens or prompt_tokens
    return prompt_tokens
