"""Prompt composition: trimming, layout, persona limit and the cache-warming prefix."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import (
    PromptError, PromptLimits, build_messages, render_prefix, render_prompt, trim_history,
    trim_utterance,
)

Message = dict[str, str]


class CharTokenizer:
    """One token per character, and the tiny model's chat template, written out in Python."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)

    def render_message(self, message: Message, is_last: bool) -> str:
        return f"<|{message['role']}|>\n{message['content']}<|end|>\n"

    def apply_chat_template(self, messages: list[Message], add_generation_prompt: bool = True,
                            tokenize: bool = False) -> str:
        text = "".join(self.render_message(m, i == len(messages) - 1)
                       for i, m in enumerate(messages))
        return text + ("<|assistant|>\n" if add_generation_prompt else "")


class TailMarkingTokenizer(CharTokenizer):
    """A template that renders the last message differently, so rendering a conversation
    without its final turn is not a prefix of rendering it with one."""

    def render_message(self, message: Message, is_last: bool) -> str:
        end = "<|eot|>" if is_last else "<|end|>"
        return f"<|{message['role']}|>\n{message['content']}{end}\n"


def test_trim_utterance_keeps_the_beginning() -> None:
    assert trim_utterance(CharTokenizer(), "abcdefgh", 3) == "abc"
    assert trim_utterance(CharTokenizer(), "abc", 3) == "abc"


def test_trim_history_keeps_most_recent_messages_and_cuts_the_oldest_kept_from_its_start() -> None:
    messages = [{"role": "user", "content": "1111"}, {"role": "assistant", "content": "2222"},
                {"role": "user", "content": "3333"}]
    assert trim_history(CharTokenizer(), messages, 10) == [
        {"role": "user", "content": "11"}, *messages[1:]]
    assert trim_history(CharTokenizer(), messages, 8) == messages[1:]
    assert trim_history(CharTokenizer(), messages, 100) == messages
    assert trim_history(CharTokenizer(), messages, 0) == []


def test_trim_history_does_not_modify_its_input() -> None:
    messages = [{"role": "user", "content": "abcdef"}]
    trim_history(CharTokenizer(), messages, 2)
    assert messages == [{"role": "user", "content": "abcdef"}]


def test_build_messages_lays_out_persona_history_utterance() -> None:
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert build_messages("P", history, "u") == [
        {"role": "system", "content": "P"}, *history, {"role": "user", "content": "u"}]
    assert build_messages("", [], "u") == [{"role": "user", "content": "u"}]


def test_render_prompt_applies_all_limits_and_ends_with_generation_prompt() -> None:
    limits = PromptLimits(history_max_tokens=4, user_utt_max_tokens=5, persona_max_tokens=10)
    text = render_prompt(CharTokenizer(), "persona", "User: old words\nAssistant: abcdef",
                         "utterance too long", limits)
    assert text == ("<|system|>\npersona<|end|>\n<|assistant|>\ncdef<|end|>\n"
                    "<|user|>\nutter<|end|>\n<|assistant|>\n")


def test_persona_over_its_limit_raises_chat_prompt_too_long() -> None:
    limits = PromptLimits(persona_max_tokens=5)
    with pytest.raises(PromptError) as err:
        render_prompt(CharTokenizer(), "123456", "", "hi", limits)
    assert err.value.code == "chat_prompt_too_long"
    assert "5" in str(err.value)
    with pytest.raises(PromptError):
        render_prefix(CharTokenizer(), "123456", "", limits)
    render_prompt(CharTokenizer(), "12345", "", "hi", limits)  # at the limit is fine


@pytest.mark.parametrize("history", ["", "User: hi\nAssistant: hello"])
def test_prefix_is_a_prefix_of_every_prompt(history: str) -> None:
    tok = CharTokenizer()
    prefix = render_prefix(tok, "persona", history)
    assert prefix.endswith("<|end|>\n")
    for utterance in ["x", "a longer question?", ""]:
        assert render_prompt(tok, "persona", history, utterance).startswith(prefix)


def test_prefix_falls_back_to_the_shared_text_when_the_template_marks_the_tail() -> None:
    tok = TailMarkingTokenizer()
    prefix = render_prefix(tok, "persona", "User: hi")
    assert prefix == "<|system|>\npersona<|end|>\n<|user|>\nhi<|end|>\n<|user|>\n"
    for utterance in ["x", "what now"]:
        assert render_prompt(tok, "persona", "User: hi", utterance).startswith(prefix)


def test_prefix_of_nothing_is_empty() -> None:
    assert render_prefix(CharTokenizer(), "", "") == ""


@pytest.fixture(scope="module")
def tiny_tokenizer(request: pytest.FixtureRequest) -> Any:
    transformers = pytest.importorskip("transformers")
    from workers.builtin_models import resolve_model

    # pytest's cache dir keeps the built model between runs; building takes seconds.
    path = resolve_model("builtin:tiny-chat", request.config.cache.mkdir("tiny-models"))
    return transformers.PreTrainedTokenizerFast.from_pretrained(path)


def test_tiny_model_prefix_is_an_exact_prefix_of_the_rendered_prompt(tiny_tokenizer: Any) -> None:
    persona = "You are a friendly assistant who answers briefly and kindly."
    history = "User: who was Columbus?\nAssistant: An Italian explorer.\nUser: thanks"
    prefix = render_prefix(tiny_tokenizer, persona, history)
    assert prefix.startswith("<|system|>\n" + persona)
    for utterance in ["tell me a joke", "what should I cook tonight?"]:
        prompt = render_prompt(tiny_tokenizer, persona, history, utterance)
        assert prompt.startswith(prefix)
        assert prompt.endswith(f"<|user|>\n{utterance}<|end|>\n<|assistant|>\n")


def test_tiny_model_trims_by_real_tokens(tiny_tokenizer: Any) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    cut = trim_utterance(tiny_tokenizer, text, 10)
    assert text.startswith(cut) and cut
    assert len(tiny_tokenizer.encode(cut, add_special_tokens=False)) == 10
    history = [{"role": "user", "content": text}, {"role": "assistant", "content": "Sure."}]
    kept = trim_history(tiny_tokenizer, history, 12)
    assert kept[-1] == {"role": "assistant", "content": "Sure."}
    assert text.rstrip().endswith(kept[0]["content"])
    total = sum(len(tiny_tokenizer.encode(m["content"], add_special_tokens=False)) for m in kept)
    assert total <= 12


def test_tiny_model_trim_never_leaves_a_broken_character(tiny_tokenizer: Any) -> None:
    text = "héllo wörld ünïcode " * 10
    for n in range(1, 30):
        assert "\ufffd" not in trim_utterance(tiny_tokenizer, text, n)


class CountingTokenizer(CharTokenizer):
    """The char tokenizer, counting how often it is asked to encode."""

    def __init__(self) -> None:
        self.encodes = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        self.encodes += 1
        return super().encode(text, add_special_tokens)


def test_approximate_trim_budgets_by_length_and_never_tokenizes() -> None:
    tok = CountingTokenizer()
    limits = PromptLimits(history_max_tokens=2, user_utt_max_tokens=1, persona_max_tokens=3,
                          exact=False)  # EXACT_TOKEN_TRIM=0: 4 characters a token
    text = render_prompt(tok, "persona", "User: old words\nAssistant: abcdefghij",
                         "utterance", limits)
    assert text == ("<|system|>\npersona<|end|>\n<|assistant|>\ncdefghij<|end|>\n"
                    "<|user|>\nutte<|end|>\n<|assistant|>\n")
    assert tok.encodes == 0
    with pytest.raises(PromptError):  # 13 characters is 4 estimated tokens, over 3
        render_prompt(tok, "persona words", "", "hi", limits)


def test_runtime_text_ends_the_system_message_after_the_persona() -> None:
    assert build_messages("P", [], "u", "It is 9 pm.")[0] == {
        "role": "system", "content": "P\n\nIt is 9 pm."}
    assert build_messages("", [], "u", "It is 9 pm.")[0] == {
        "role": "system", "content": "It is 9 pm."}
    tok = CharTokenizer()
    warm = render_prefix(tok, "persona", "User: hi", runtime_text="Lisbon")
    assert render_prompt(tok, "persona", "User: hi", "what now", runtime_text="Lisbon"
                         ).startswith(warm)
    # The persona's text leads either way: its cached prefix serves whatever the runtime text.
    assert render_prompt(tok, "persona", "", "x", runtime_text="Lisbon").startswith(
        "<|system|>\npersona\n\nLisbon")
