"""Incremental detokenization: token ids in, stable text deltas out.

Decoding token by token breaks two ways: byte-level BPE splits multi-byte characters
across tokens (a lone piece decodes to U+FFFD), and SentencePiece-style decoders drop or add
spaces depending on where a decode starts. As in vLLM, we decode a short window that starts
a little before the new tokens (``prefix_offset``) and emit only the text past what the
window's old part decoded to (``read_offset``); text ending in U+FFFD is held back until the
character completes. The concatenation of all deltas plus ``flush()`` equals one decode of
all the ids.
"""

from __future__ import annotations

from typing import Protocol

_REPLACEMENT_CHAR = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...,
               clean_up_tokenization_spaces: bool | None = ...) -> str: ...


class IncrementalDetokenizer:
    """Per-request state; feed it each step's new ids with ``push``, then call ``flush``."""

    __slots__ = ("_tokenizer", "_skip_special", "_ids", "_prefix_offset", "_read_offset")

    def __init__(self, tokenizer: Decoder, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the decode window (context for spacing)
        self._read_offset = 0  # ids before this are already emitted as text

    def _decode(self, ids: list[int]) -> str:
        # No cleanup of tokenization spaces: it rewrites text across window borders
        # (" ." -> "."), so windows would no longer add up to the whole.
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special,
                                      clean_up_tokenization_spaces=False)

    def push(self, new_ids: list[int]) -> str:
        """The text these ids complete; "" while a character is still incomplete."""
        if not new_ids:
            return ""
        self._ids.extend(new_ids)
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        if len(new_text) <= len(prefix_text) or new_text.endswith(_REPLACEMENT_CHAR):
            return ""  # nothing yet, or a multi-byte character cut in the middle
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new_text[len(prefix_text):]

    def flush(self) -> str:
        """What is still held back at the end of the stream (a truncated character shows
        as U+FFFD, exactly as a full decode shows it)."""
        if self._read_offset == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text):]
