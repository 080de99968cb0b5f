"""Transcript parsing into chat messages."""

from __future__ import annotations

import pytest

from pipeline import parse_history


def test_user_and_assistant_lines_become_alternating_messages() -> None:
    text = "User: hi there\nAssistant: hello!\nUser: how are you?"
    assert parse_history(text) == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "hello!"},
        {"role": "user", "content": "how are you?"},
    ]


@pytest.mark.parametrize(("prefix", "role"), [
    ("Human", "user"), ("user", "user"), ("AI", "assistant"), ("Bot", "assistant"),
    ("ASSISTANT", "assistant"),
])
def test_prefix_aliases_map_to_roles(prefix: str, role: str) -> None:
    assert parse_history(f"{prefix}: text") == [{"role": role, "content": "text"}]


def test_continuation_lines_join_the_previous_turn() -> None:
    text = "User: first line\nsecond line\nAssistant: reply\n  more reply"
    assert parse_history(text) == [
        {"role": "user", "content": "first line\nsecond line"},
        {"role": "assistant", "content": "reply\n  more reply"},
    ]


def test_text_without_prefixes_is_one_user_message() -> None:
    assert parse_history("  just some words\nand more  ") == [
        {"role": "user", "content": "just some words\nand more"}]


def test_text_before_the_first_prefix_is_user_speech() -> None:
    assert parse_history("hello\nAssistant: hi") == [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]


def test_empty_turns_are_dropped_and_same_role_turns_merged() -> None:
    text = "User: a\nAssistant:\nUser: b\nAI: c\nBot: d"
    assert parse_history(text) == [
        {"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "c\nd"}]


@pytest.mark.parametrize("text", ["", "   \n\n  ", "User:   \nAssistant:"])
def test_blank_history_gives_no_messages(text: str) -> None:
    assert parse_history(text) == []


def test_windows_line_endings_and_spaces_around_colon() -> None:
    assert parse_history("User : a\r\nAssistant:b\r\n") == [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


def test_colon_later_in_a_line_does_not_open_a_turn() -> None:
    assert parse_history("User: my user: name") == [{"role": "user", "content": "my user: name"}]
