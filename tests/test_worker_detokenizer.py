"""The incremental detokenizer: streamed deltas add up to one full decode, and never show
half a character."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from workers.detokenizer import IncrementalDetokenizer

TEXTS = [
    "Hello there! How are you doing today?",
    "café crème, naïve façade, Ångström",
    "emoji 👋🏽 and family 👨‍👩‍👧 and flags 🇫🇷!",
    "日本語のテキスト and 한국어 mixed with English",
    "  leading spaces, trailing spaces   ",
    "line one\nline two\n\ttabbed",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return AutoTokenizer.from_pretrained(tiny_models["chat"])


def stream(tokenizer, ids: list[int], chunk: int = 1, **kwargs) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, **kwargs)
    deltas = [detok.push(ids[i:i + chunk]) for i in range(0, len(ids), chunk)]
    return deltas + [detok.flush()]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_deltas_concatenate_to_the_full_decode(tokenizer, text, chunk):
    ids = tokenizer.encode(text, add_special_tokens=False)
    deltas = stream(tokenizer, ids, chunk)
    assert "".join(deltas) == tokenizer.decode(ids) == text


@pytest.mark.parametrize("text", TEXTS)
def test_no_delta_shows_half_a_character(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert all("\ufffd" not in delta for delta in stream(tokenizer, ids))


def test_multibyte_character_is_held_back_until_complete(tokenizer):
    ids = tokenizer.encode("👋", add_special_tokens=False)
    assert len(ids) > 1, "the emoji must span several byte tokens for this test"
    detok = IncrementalDetokenizer(tokenizer)
    assert [detok.push([i]) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.push(ids[-1:]) == "👋"
    assert detok.flush() == ""


def test_truncated_character_at_the_end_is_flushed_as_a_full_decode_shows_it(tokenizer):
    ids = tokenizer.encode("ok 👋", add_special_tokens=False)[:-1]
    deltas = stream(tokenizer, ids)
    assert "".join(deltas) == tokenizer.decode(ids)
    assert deltas[-1].endswith("\ufffd")


def test_special_tokens_are_skipped_by_default(tokenizer):
    ids = (tokenizer.encode("hi", add_special_tokens=False) + [tokenizer.eos_token_id]
           + tokenizer.encode(" there", add_special_tokens=False))
    assert "".join(stream(tokenizer, ids)) == "hi there"
    assert "".join(stream(tokenizer, ids, skip_special_tokens=False)) == tokenizer.decode(ids)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(min_value=0, max_value=511), max_size=40),
       chunk=st.integers(min_value=1, max_value=4))
def test_any_id_sequence_streams_to_its_full_decode(tokenizer, ids, chunk):
    # Random ids make invalid UTF-8 byte runs: held back, then flushed as U+FFFD exactly
    # where a one-shot decode puts them.
    full = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert "".join(stream(tokenizer, ids, chunk)) == full


def test_window_keeps_the_spaces_a_sentencepiece_decoder_strips_at_the_start():
    # Metaspace decoders drop the space of the first token of a decode ("▁world" -> "world"),
    # so decoding each token on its own would glue the words together.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(["hello world, the world says hello"] * 4,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"],
                                                show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    text = "hello world says the world"
    ids = hf.encode(text, add_special_tokens=False)
    assert "".join(hf.decode([i]) for i in ids) != text  # token by token loses the spaces
    assert "".join(stream(hf, ids)) == hf.decode(ids) == text
