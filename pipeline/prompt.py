"""Prompt composition: token limits, trimming of utterance and history, and chat-template
rendering with the persona first so an engine's prefix cache reuses it across turns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .errors import PromptError
from .history import parse_history

Message = dict[str, str]

# Cutting byte-level BPE ids can split a multi-byte character; decoding shows the half as
# U+FFFD, which must not reach the model or the cache key.
_REPLACEMENT_CHAR = "\ufffd"


class Tokenizer(Protocol):
    """The slice of a Hugging Face tokenizer this module needs (duck-typed)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def apply_chat_template(self, messages: list[Message], add_generation_prompt: bool = ...,
                            tokenize: bool = ...) -> str: ...


@dataclass(frozen=True)
class PromptLimits:
    """Token budgets of one prompt (the single-process Yap server's defaults)."""

    history_max_tokens: int = 3000
    user_utt_max_tokens: int = 350
    persona_max_tokens: int = 2000  # CHAT_PROMPT_MAX_TOKENS
    # EXACT_TOKEN_TRIM: count with the model's tokenizer; off, estimate from the text's length
    # (CHARS_PER_TOKEN), which skips tokenizing long histories on every turn.
    exact: bool = True


CHARS_PER_TOKEN = 4  # English text in the BPE vocabularies of chat models, roughly


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def trim_utterance(tokenizer: Tokenizer, text: str, max_tokens: int, exact: bool = True) -> str:
    """Keep the first `max_tokens` tokens of the user's utterance (its beginning)."""
    if not exact:
        return text[:max(max_tokens, 0) * CHARS_PER_TOKEN]
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text  # untouched: no decode round trip that could alter the text
    return tokenizer.decode(ids[:max(max_tokens, 0)]).rstrip(_REPLACEMENT_CHAR)


def trim_history(tokenizer: Tokenizer, messages: list[Message], max_tokens: int,
                 exact: bool = True) -> list[Message]:
    """Keep the most recent messages whose content tokens fit in `max_tokens`.

    The oldest message that only partly fits is cut, keeping its end (the words closest to
    the present), so the budget is used in full; template markup is not counted, as the
    single-process Yap server did ("~3000 tokens of history, not counting persona").
    """
    if not exact:
        return _trim_history_by_length(messages, max_tokens * CHARS_PER_TOKEN)
    kept: list[Message] = []
    budget = max_tokens
    for message in reversed(messages):
        if budget <= 0:
            break
        ids = tokenizer.encode(message["content"], add_special_tokens=False)
        if len(ids) <= budget:
            kept.append(message)
            budget -= len(ids)
            continue
        tail = tokenizer.decode(ids[-budget:]).lstrip(_REPLACEMENT_CHAR).strip()
        if tail:
            kept.append({**message, "content": tail})
        break
    kept.reverse()
    return kept


def _trim_history_by_length(messages: list[Message], max_chars: int) -> list[Message]:
    kept: list[Message] = []
    for message in reversed(messages):
        if max_chars <= 0:
            break
        content = message["content"]
        if len(content) <= max_chars:
            kept.append(message)
            max_chars -= len(content)
            continue
        if tail := content[-max_chars:].strip():
            kept.append({**message, "content": tail})
        break
    kept.reverse()
    return kept


def build_messages(persona: str, history_messages: list[Message], utterance: str,
                   runtime_text: str = "") -> list[Message]:
    """Persona (system) first, then history, then the utterance: the stable parts lead, so
    consecutive turns share the longest possible cached prefix. ``runtime_text`` (time, place,
    app state) ends the system message: after the persona, whose prefix stays cached, and
    before the history. An empty system message is left out."""
    system = f"{persona}\n\n{runtime_text}" if persona and runtime_text else persona or runtime_text
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.extend(dict(m) for m in history_messages)
    messages.append({"role": "user", "content": utterance})
    return messages


def check_persona(tokenizer: Tokenizer, persona: str, limits: PromptLimits) -> None:
    """Raise `PromptError("chat_prompt_too_long")` if the persona is over its token budget."""
    n = count_tokens(tokenizer, persona) if limits.exact else estimate_tokens(persona)
    if n > limits.persona_max_tokens:
        raise PromptError(
            "chat_prompt_too_long",
            f"persona is {n} tokens; the limit is {limits.persona_max_tokens}",
            field="chat_prompt",
        )


def _context_messages(tokenizer: Tokenizer, persona: str, history_text: str,
                      limits: PromptLimits, runtime_text: str) -> list[Message]:
    check_persona(tokenizer, persona, limits)
    history = trim_history(tokenizer, parse_history(history_text), limits.history_max_tokens,
                           limits.exact)
    return build_messages(persona, history, "", runtime_text)[:-1]


def render_prompt(tokenizer: Tokenizer, persona: str, history_text: str, utterance: str,
                  limits: PromptLimits = PromptLimits(), runtime_text: str = "") -> str:
    """The full chat-template text of one turn, ending with the generation prompt."""
    messages = _context_messages(tokenizer, persona, history_text, limits, runtime_text)
    messages.append({"role": "user",
                     "content": trim_utterance(tokenizer, utterance, limits.user_utt_max_tokens,
                                               limits.exact)})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def render_prefix(tokenizer: Tokenizer, persona: str, history_text: str,
                  limits: PromptLimits = PromptLimits(), runtime_text: str = "") -> str:
    """The text of persona (+ history) alone, to warm an engine's prefix cache.

    It is a textual prefix of `render_prompt` for the same persona and history whatever
    the utterance. Templates that render the tail of a conversation differently from its
    middle break that for the plain rendering; then the longest text shared by two full
    prompts with different utterances is returned instead, so a warm never misses.
    """
    messages = _context_messages(tokenizer, persona, history_text, limits, runtime_text)
    if not messages:
        return ""
    prefix = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    probes = [
        tokenizer.apply_chat_template(messages + [{"role": "user", "content": probe}],
                                      add_generation_prompt=True, tokenize=False)
        for probe in ("a", "b")
    ]
    if all(p.startswith(prefix) for p in probes):
        return prefix
    return _common_prefix(*probes)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]
