"""What the tool classifier reads: the utterance and the newest part of the conversation.

One definition, used by training (``workers.train_tool``) and by serving (the ``classifier``
engine), so a model never sees at serving time an input laid out differently from the one it
learned on. The pair is (utterance, history tail): the utterance keeps its beginning, the
history keeps its newest tokens, at most ``history_tokens`` of them, within the model's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_HISTORY_TOKENS = 900  # TOOL_HISTORY_TOKENS, as the single-process server had it
DEFAULT_MAX_LENGTH = 512  # BERT-style encoders have 512 positions


def kept_lengths(text_len: int, history_len: int, history_tokens: int,
                 room_single: int, room_pair: int) -> tuple[int, int]:
    """How many utterance tokens (from the start) and history tokens (from the end) to keep.

    ``room_single`` / ``room_pair`` are the tokens left for content once the special tokens
    of a single sequence / a pair are counted. The utterance always wins: history only fills
    what the utterance leaves, and a (0-token) history is dropped rather than squeezing it.
    """
    history_keep = min(history_len, max(history_tokens, 0))
    if history_keep > 0 and text_len < room_pair:
        return text_len, min(history_keep, room_pair - text_len)
    return min(text_len, room_single), 0


class ToolInputEncoder:
    """Encodes (utterance, history) pairs for one tokenizer; holds no model and does no I/O."""

    def __init__(self, tokenizer: Any, *, history_tokens: int = DEFAULT_HISTORY_TOKENS,
                 max_length: int = DEFAULT_MAX_LENGTH) -> None:
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError("the tool model needs a fast (tokenizers-backed) tokenizer")
        # A private copy: a tokenizer.json may carry its own truncation and padding (MiniLM's
        # pads everything to 128), which would undo the budget computed here.
        self._backend = Tokenizer.from_str(backend.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        self.history_tokens = history_tokens
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.with_type_ids = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        self._room_single = max_length - self._backend.num_special_tokens_to_add(False)
        self._room_pair = max_length - self._backend.num_special_tokens_to_add(True)

    def encode(self, text: str, history: str = "") -> tuple[list[int], list[int]]:
        """(input ids, token type ids) of one example, special tokens included."""
        utterance = self._backend.encode(text, add_special_tokens=False)
        past = self._backend.encode(history, add_special_tokens=False) if history else None
        keep_text, keep_history = kept_lengths(
            len(utterance.ids), len(past.ids) if past else 0, self.history_tokens,
            self._room_single, self._room_pair)
        utterance.truncate(keep_text, direction="right")
        pair = None
        if past is not None and keep_history > 0:
            past.truncate(keep_history, direction="left")  # the newest turns matter most
            pair = past
        full = self._backend.post_process(utterance, pair, add_special_tokens=True)
        return list(full.ids), list(full.type_ids)

    def batch(self, texts: Sequence[str], histories: Sequence[str]) -> dict[str, list[list[int]]]:
        """Model inputs for a batch (plain lists: the caller makes tensors)."""
        return self.pad([self.encode(t, h) for t, h in zip(texts, histories, strict=True)])

    def pad(self, encoded: Sequence[tuple[list[int], list[int]]]) -> dict[str, list[list[int]]]:
        """Pads encoded examples on the right to the longest of them."""
        width = max((len(ids) for ids, _ in encoded), default=0)
        out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": []}
        if self.with_type_ids:
            out["token_type_ids"] = []
        for ids, types in encoded:
            pad = width - len(ids)
            out["input_ids"].append(ids + [self.pad_id] * pad)
            out["attention_mask"].append([1] * len(ids) + [0] * pad)
            if self.with_type_ids:
                out["token_type_ids"].append(types + [0] * pad)
        return out
