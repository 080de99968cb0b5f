"""The tool classifier's input (workers/tool_input.py), shared by training and serving: the
utterance keeps its beginning, the history its newest tokens, within the model's length."""

from __future__ import annotations

import pytest

from workers.tool_input import ToolInputEncoder, kept_lengths


def test_a_short_utterance_and_history_are_kept_whole():
    assert kept_lengths(10, 40, 900, room_single=510, room_pair=509) == (10, 40)


def test_history_is_capped_by_history_tokens_then_by_the_room_left():
    assert kept_lengths(10, 2000, 900, room_single=510, room_pair=509) == (10, 499)
    assert kept_lengths(10, 2000, 100, room_single=510, room_pair=509) == (10, 100)


def test_the_utterance_wins_over_the_history():
    # No room left for history: it is dropped, and the utterance uses the single layout.
    assert kept_lengths(600, 50, 900, room_single=510, room_pair=509) == (510, 0)
    assert kept_lengths(509, 50, 900, room_single=510, room_pair=509) == (509, 0)


def test_no_history_or_a_zero_budget_means_a_single_sequence():
    assert kept_lengths(10, 0, 900, room_single=510, room_pair=509) == (10, 0)
    assert kept_lengths(10, 50, 0, room_single=510, room_pair=509) == (10, 0)


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["tool"])


def test_encoding_keeps_the_newest_history_tokens(tokenizer):
    encoder = ToolInputEncoder(tokenizer, history_tokens=3, max_length=64)
    history = "User: hello there\nAssistant: take a screenshot"
    ids, types = encoder.encode("look at this", history)
    utterance = tokenizer("look at this", add_special_tokens=False)["input_ids"]
    newest = tokenizer(history, add_special_tokens=False)["input_ids"][-3:]
    assert ids == utterance + newest  # the tiny tokenizer adds no special tokens
    assert len(types) == len(ids)


def test_encoding_fits_max_length_however_long_the_history(tokenizer):
    encoder = ToolInputEncoder(tokenizer, history_tokens=900, max_length=32)
    ids, _ = encoder.encode("what do you think of this", "User: tell me a joke " * 200)
    assert len(ids) == 32
    utterance = tokenizer("what do you think of this", add_special_tokens=False)["input_ids"]
    assert ids[:len(utterance)] == utterance


def test_a_batch_is_padded_with_an_attention_mask(tokenizer):
    encoder = ToolInputEncoder(tokenizer)
    batch = encoder.batch(["hello", "take a screenshot please"], ["", "User: hi"])
    widths = {len(row) for rows in batch.values() for row in rows}
    assert len(widths) == 1
    first = batch["attention_mask"][0]
    assert first[0] == 1 and first[-1] == 0
    assert batch["input_ids"][0][first.index(0):] == [encoder.pad_id] * first.count(0)


def test_a_tokenizer_padding_everything_to_128_does_not_leak_into_the_encoding(tokenizer):
    # Some tokenizer.json files (MiniLM's) carry their own padding and truncation.
    backend = tokenizer.backend_tokenizer
    backend.enable_padding(length=128)
    backend.enable_truncation(max_length=4)
    try:
        ids, _ = ToolInputEncoder(tokenizer).encode("take a screenshot of my screen please")
    finally:
        backend.no_padding()
        backend.no_truncation()
    assert len(ids) == len(tokenizer("take a screenshot of my screen please",
                                     add_special_tokens=False)["input_ids"])
