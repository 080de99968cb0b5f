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


# Rules that are always on: control characters, emails, phone numbers, repeated marks.
SPOKEN_CASES = [
    # control characters vanish; whitespace controls stay whitespace
    ("nul\x00l byte and a bell\x07!", "Null byte and a bell!"),
    ("esc\x1b[0m code \x7f\x9b", "Esc[0m code"),
    ("zero\u200bwidth \ufeffbom and soft\u00adhyphen", "Zerowidth bom and softhyphen"),
    ("tab\there\r\nnext\x85line", "Tab here next line"),
    ("<b\x00>bold</b>", "Bold"),
    ("lone \ud83d surrogate", "Lone surrogate"),
    # emails
    ("mail me@you.com today", "Mail me at you dot com today"),
    ("first.last@my-site.co.uk.", "First dot last at my-site dot co dot uk."),
    ("write sales-team@acme.io, thanks", "Write sales-team at acme dot io, thanks"),
    ("not an email: a@b or @home", "Not an email: a@b or @home"),
    ("e.g. file.txt at http://x.com", "E.g. file.txt at http://x.com"),
    # phone numbers, in the writer's groups
    ("call +1 415-555-0132.", "Call plus one, four one five, five five five, zero one three two."),
    ("or (212) 555-1234 now", "Or two one two, five five five, one two three four now"),
    ("4155550132", "Four one five, five five five, zero one three two"),
    ("+14155550132", "Plus one, four one five, five five five, zero one three two"),
    ("1-800-555-0199", "One, eight zero zero, five five five, zero one nine nine"),
    ("+44 20 7946 0958", "Plus four four, two zero, seven nine four six, zero nine five eight"),
    ("count 1 2 3 4 5 6 7 8 9 10", "Count 1 2 3 4 5 6 7 8 9 10"),
    ("on 2024-01-15 at 10:30, call 911", "On 2024-01-15 at 10:30, call 911"),
    ("555-0132", "555-0132"),
    ("order 4155550132x", "Order 4155550132x"),
    # repeated marks: the first one stays
    ("wow!!! really??? what?!?!", "Wow! really? what?"),
    ("no way!? ok", "No way! ok"),
    ("so ! ! ok", "So!! ok"),
]

# The opt-in: numbers, money, percentages and times in words.
NUMBER_CASES = [
    ("I have 12 cats", "I have twelve cats"),
    ("it costs $5.20", "It costs five dollars and twenty cents"),
    ("$1 or $0.99 or $3.5", "One dollar or ninety-nine cents or three dollars and fifty cents"),
    ("$1,234.00", "One thousand two hundred and thirty-four dollars"),
    ("$2.5 million and $3 billion", "Two point five million dollars and three billion dollars"),
    ("\u00a35.20 or \u20ac1", "Five pounds and twenty pence or one euro"),
    ("US$5 and $5k", "US five dollars and $5k"),
    ("45% of 4.5%", "Forty-five percent of four point five percent"),
    ("at 3:30 pm", "At three thirty p m"),
    ("10:05 a.m. or 3pm or 7 AM", "Ten oh five a m. or three p m or seven a m"),
    ("12:00 and 15:00", "Twelve o'clock and fifteen hundred"),
    ("the 21st and 2nd", "The twenty-first and second"),
    ("1,000,000 in 2024", "One million in twenty twenty-four"),
    ("3.14 and 007 and -5", "Three point one four and zero zero seven and minus five"),
    ("v1.2.3, 2024-01-15, 10-20, 1/2, 3D, 1990s", "V1.2.3, 2024-01-15, 10-20, 1/2, 3D, 1990s"),
    ("I have 3 apples", "I have three apples"),
    ("call 415-555-0132", "Call four one five, five five five, zero one three two"),
    ("me2@x.com", "Me2 at x dot com"),
    ("12@x.com", "12 at x dot com"),
]


SPOKEN_AND_NUMBER_CASES = [(raw, False, out) for raw, out in SPOKEN_CASES] + [
    (raw, True, out) for raw, out in NUMBER_CASES
]


@pytest.mark.parametrize(("raw", "expected"), SPOKEN_CASES)
def test_sanitize_applies_spoken_rule(raw: str, expected: str) -> None:
    assert sanitize(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), NUMBER_CASES)
def test_speak_numbers_writes_them_in_words(raw: str, expected: str) -> None:
    assert sanitize(raw, speak_numbers=True) == expected


@pytest.mark.parametrize("raw", [raw for raw, _ in NUMBER_CASES])
def test_numbers_stay_as_written_by_default(raw: str) -> None:
    assert not any(word in sanitize(raw) for word in ("dollar", "percent", "twelve", "p m"))


@pytest.mark.parametrize(
    ("raw", "speak_numbers", "expected"),
    SPOKEN_AND_NUMBER_CASES,
)
def test_spoken_forms_streamed_one_character_at_a_time_match_one_shot(
    raw: str, speak_numbers: bool, expected: str
) -> None:
    cleaner = StreamSanitizer(speak_numbers=speak_numbers)
    assert "".join(cleaner.feed(ch) for ch in raw) + cleaner.flush() == expected


@pytest.mark.parametrize(
    ("raw", "speak_numbers", "expected"),
    SPOKEN_AND_NUMBER_CASES,
)
def test_spoken_forms_split_in_two_anywhere_match_one_shot(
    raw: str, speak_numbers: bool, expected: str
) -> None:
    for cut in range(len(raw) + 1):
        cleaner = StreamSanitizer(speak_numbers=speak_numbers)
        assert cleaner.feed(raw[:cut]) + cleaner.feed(raw[cut:]) + cleaner.flush() == expected


def test_phone_numbers_without_country_code_follow_the_region() -> None:
    assert sanitize("ring 020 7946 0958") == "Ring 020 7946 0958"
    assert sanitize("ring 020 7946 0958", phone_region="GB") == (
        "Ring zero two zero, seven nine four six, zero nine five eight"
    )


@pytest.mark.parametrize(
    ("chunks", "speak_numbers", "released"),
    [
        (["mail me", "@you.co"], False, "Mail me"),         # the domain may go on (.com, .co.uk)
        (["call +1 415-555-", "0132"], False, "Call"),      # a phone number is spoken whole
        (["it's ", "3", " a"], True, "It's"),               # "3 a" may become "3 am"
        (["only ", "$5", " mil"], True, "Only"),            # "$5 mil" may become "$5 million"
    ],
)
def test_a_possible_spoken_form_is_held_back_until_decided(
    chunks: list[str], speak_numbers: bool, released: str
) -> None:
    cleaner = StreamSanitizer(speak_numbers=speak_numbers)
    assert "".join(cleaner.feed(c) for c in chunks) == released


def test_words_after_a_number_are_released_once_it_is_decided() -> None:
    cleaner = StreamSanitizer(speak_numbers=True)
    out = "".join(cleaner.feed(tok) for tok in ["I", " have", " 3", " apples", " and"])
    assert out == "I have three apples and"


def test_a_repeated_mark_is_spoken_at_once_not_held() -> None:
    cleaner = StreamSanitizer()
    assert cleaner.feed("hi!") == "Hi!"
    assert cleaner.feed("!!") == ""
    assert cleaner.feed(" there") + cleaner.flush() == " there"


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


# Realistic reply fragments for the spoken forms, and their near misses.
SPOKEN_PIECES = [
    "me@you.com", "first.last@my-site.co.uk", "a@b", "@home", "e.g.", "file.txt", "x.com",
    "+1 415-555-0132", "(212) 555-1234", "4155550132", "555-0132", "1-800-555-0199",
    "+44 20 7946 0958", "1 2 3 4 5 6 7 8 9 10", "2024-01-15", "!!!", "?!?!", "??", "!",
    "$5.20", "$0.99", "$2.5 million", "\u00a35", "\u20ac1,000", "45%", "3.14", "12", "1,000,000",
    "3:30 pm", "10:05 a.m.", "3pm", "3 am", "21st", "007", "-5", "3D", "1990s", "12@x.com",
    "\x00", "\x07", "\x1b", "\ufeff", "\u200b", "\x85", "\r\n", "\U0001f600", "<b>", "*waves*",
    ":)", "&amp;", "Assistant:", "call", "email", "it costs", "at", "the", "ok",
]
SEPARATORS = [" ", " ", " ", "", ", ", ". ", "\n", "-", ".", "@", ":", "!", "?", "$"]
spoken_replies = st.lists(
    st.tuples(st.sampled_from(SPOKEN_PIECES), st.sampled_from(SEPARATORS)), max_size=16
).map(lambda parts: "".join(p + sep for p, sep in parts))


def _stream_with(text: str, cuts: list[int], speak_numbers: bool) -> str:
    cleaner = StreamSanitizer(speak_numbers=speak_numbers)
    bounds = [0, *sorted({c % (len(text) + 1) for c in cuts}), len(text)]
    out = [cleaner.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])]
    return "".join(out) + cleaner.flush()


@settings(max_examples=3000, deadline=None)
@given(spoken_replies, st.lists(st.integers(min_value=0, max_value=400), max_size=20),
       st.booleans())
def test_any_chunking_of_replies_with_spoken_forms_matches_one_shot(
    text: str, cuts: list[int], speak_numbers: bool
) -> None:
    assert _stream_with(text, cuts, speak_numbers) == sanitize(text, speak_numbers=speak_numbers)


@settings(max_examples=300, deadline=None)
@given(spoken_replies, st.booleans())
def test_token_by_token_replies_with_spoken_forms_match_one_shot(
    text: str, speak_numbers: bool
) -> None:
    cleaner = StreamSanitizer(speak_numbers=speak_numbers)
    out = "".join(cleaner.feed(ch) for ch in text) + cleaner.flush()
    assert out == sanitize(text, speak_numbers=speak_numbers)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.lists(st.integers(min_value=0, max_value=60), max_size=8))
def test_any_chunking_of_arbitrary_unicode_with_numbers_spoken_matches_one_shot(
    text: str, cuts: list[int]
) -> None:
    assert _stream_with(text, cuts, True) == sanitize(text, speak_numbers=True)
