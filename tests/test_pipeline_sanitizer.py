"""The streaming TTS cleaner: the rules (table-driven) and chunking invariance (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sanitizer import StreamSanitizer, sanitize

CASES = [
    # leading whitespace and speaker prefixes
    ("\n\n  hello there", "Hello there"),
    ("Assistant: hi", "Hi"),
    ("  ai :  sure thing", "Sure thing"),
    ("BOT:ok", "Ok"),
    ("Aim high", "Aim high"),
    ("User: hi", "User: hi"),
    ("Hi Assistant: there", "Hi Assistant: there"),
    # emoji, including joined sequences, skin tones and flags
    ("great 😀 job 👍🏽", "Great job"),
    ("family 👩\u200d👩\u200d👧 time", "Family time"),
    ("go 🇺🇸!", "Go!"),
    ("sun ☀\ufe0f and ❤️", "Sun and"),
    # HTML entities become the characters they name, cleaned like the rest
    ("Tom &amp; Jerry &quot;hi&quot;", 'Tom & Jerry "hi"'),
    ("it&#39;s &#x2014; fine &#x1F600;", "It's, fine"),
    ("a &unknown; b & c", "A &unknown; b & c"),
    # undecodable model bytes (U+FFFD) are not readable text
    ("hel\ufffdlo \ufffd there", "Hello there"),
    # emoticons
    ("nice :) see you :-(", "Nice see you"),
    ("wink ;) and ;-) ok", "Wink and ok"),
    ("lol xD that XDDD", "Lol that"),
    ("love you <3", "Love you"),
    ("thanks:)", "Thanks"),
    ("hmm :/ and :P", "Hmm and"),
    ("cute ^_^ and T_T", "Cute and"),
    ("ha :))) ok", "Ha ok"),
    ("http://example.com", "Http://example.com"),
    ("meet at 10:30 ok", "Meet at 10:30 ok"),
    ("Note:Python", "Note:Python"),
    ("see xDrive", "See xDrive"),
    ("4 <30 and a<3", "4 <30 and a<3"),
    # HTML tags
    ("<b>bold</b> and <i>it</i>", "Bold and it"),
    ("line<br/>break", "Line break"),
    ("<p>one</p><p>two</p>", "One two"),
    ('a <span class="x">b</span>', "A b"),
    ("a < b", "A < b"),
    # action emotes and markdown emphasis
    ("*smiles* hello", "Hello"),
    ("sure *laughs softly*.", "Sure."),
    ("I *really* mean it", "I mean it"),
    ("**bold** words", "Bold words"),
    ("stray * star", "Stray star"),
    ("2 * 3", "2 3"),
    ("_quiet_ please", "Quiet please"),
    ("my_var stays", "My_var stays"),
    ("*line\nbreak*", "Line break"),
    # escapes
    ('he said \\"hi\\"', 'He said "hi"'),
    ("it\\'s", "It's"),
    ("back\\slash", "Back\\slash"),
    # ellipses, dashes, quotes
    ("wait… what", "Wait... what"),
    ("wait..... what", "Wait... what"),
    ("wait .. what", "Wait.. what"),
    ("so — anyway", "So, anyway"),
    ("so—anyway", "So, anyway"),
    ("so–anyway", "So, anyway"),
    ("so -- anyway", "So, anyway"),
    ("well-known", "Well-known"),
    ("\u201cquoted\u201d and \u2018single\u2019 don\u2019t", "\"Quoted\" and 'single' don't"),
    # spacing and capitalization
    ("too    many   spaces", "Too many spaces"),
    ("no space , before . or ! or ?", "No space, before. or! or?"),
    ("trailing   ", "Trailing"),
    ("multi\nline\n\ntext", "Multi line text"),
    ('"hello" she said', '"Hello" she said'),
    ("42 is the answer", "42 is the answer"),
    ("already Capital", "Already Capital"),
    ("— leading dash", "Leading dash"),
    ("", ""),
    ("   \n ", ""),
    ("😀", ""),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_sanitize_applies_rule(raw: str, expected: str) -> None:
    assert sanitize(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_streaming_one_character_at_a_time_matches_one_shot(raw: str, expected: str) -> None:
    cleaner = StreamSanitizer()
    pieces = [cleaner.feed(ch) for ch in raw]
    assert "".join(pieces) + cleaner.flush() == expected


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_every_two_chunk_split_matches_one_shot(raw: str, expected: str) -> None:
    for cut in range(len(raw) + 1):
        cleaner = StreamSanitizer()
        assert cleaner.feed(raw[:cut]) + cleaner.feed(raw[cut:]) + cleaner.flush() == expected


def test_plain_words_are_emitted_before_the_stream_ends() -> None:
    cleaner = StreamSanitizer()
    out = "".join(cleaner.feed(tok) for tok in ["hello", " there", " my", " friend", " how"])
    assert out == "Hello there my friend how"


@pytest.mark.parametrize("partial", ["<b", "*smi", ":", ":-", "x", "\\", "..", "-", "_"])
def test_possible_start_of_a_mark_is_held_back(partial: str) -> None:
    cleaner = StreamSanitizer()
    assert cleaner.feed("ok " + partial) == "Ok"


def test_possible_speaker_prefix_at_reply_start_is_held_back() -> None:
    cleaner = StreamSanitizer()
    assert cleaner.feed("\n Assis") == ""
    assert cleaner.feed("tant: yes") + cleaner.flush() == "Yes"


def test_half_tag_never_reaches_the_output() -> None:
    cleaner = StreamSanitizer()
    emitted = [cleaner.feed(tok) for tok in ["Hi ", "<", "b", ">", "there", "</", "b>", "!"]]
    assert all("<" not in piece and ">" not in piece for piece in emitted)
    assert "".join(emitted) + cleaner.flush() == "Hi there!"


def test_unclosed_emote_is_released_after_its_window() -> None:
    cleaner = StreamSanitizer()
    out = cleaner.feed("a *" + "word " * 20)
    assert out.startswith("A word word")


def test_space_before_punctuation_in_a_later_chunk_is_dropped() -> None:
    cleaner = StreamSanitizer()
    assert cleaner.feed("hello ") == "Hello"
    assert cleaner.feed("!") == "!"


def test_capitalizes_only_the_first_letter_of_the_reply() -> None:
    cleaner = StreamSanitizer()
    out = cleaner.feed("hi. ") + cleaner.feed("bye") + cleaner.flush()
    assert out == "Hi. bye"


def test_flush_starts_a_fresh_reply() -> None:
    cleaner = StreamSanitizer()
    first = cleaner.feed("Assistant: one") + cleaner.flush()
    second = cleaner.feed("assistant: two") + cleaner.flush()
    assert (first, second) == ("One", "Two")


# Pieces rich in marks and in near-misses of marks, so random joins and splits hit the
# hold-back boundaries of every rule.
PIECES = list("abxXDTtoOp3_*<>/:;)(-.\u2026\u2014\u2013\u201c\u201d\u2018\u2019\\\"'!?,^= \t\n") + [
    "\U0001f600", "\u200d", "\ufe0f", "\U0001f3fd", "Assistant:", "ai :", "Bot", "<b>", "</i>",
    "<br/>", "*smiles*", "**", ":-)", "...", "xD", "T_T", "<3", "  ", "hello", "http://",
]
replies = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


def _stream(text: str, cuts: list[int]) -> str:
    cleaner = StreamSanitizer()
    bounds = [0, *sorted({c % (len(text) + 1) for c in cuts}), len(text)]
    out = [cleaner.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])]
    return "".join(out) + cleaner.flush()


@settings(max_examples=600, deadline=None)
@given(replies, st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_chunking_of_marked_up_text_matches_one_shot(text: str, cuts: list[int]) -> None:
    assert _stream(text, cuts) == sanitize(text)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60), st.lists(st.integers(min_value=0, max_value=60), max_size=8))
def test_any_chunking_of_arbitrary_unicode_matches_one_shot(text: str, cuts: list[int]) -> None:
    assert _stream(text, cuts) == sanitize(text)
