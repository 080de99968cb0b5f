"""Spoken forms: how emails, phone numbers, numbers, money and times are read, and when a
recognizer must wait for more of the reply before it can decide."""

from __future__ import annotations

from collections.abc import Callable

import phonenumbers
import pytest

from pipeline import speech
from pipeline.speech import NEED_MORE


@pytest.mark.parametrize(
    ("written", "region", "spoken"),
    [
        ("+1 415-555-0132", "US", "plus one, four one five, five five five, zero one three two"),
        ("(415) 555-0132", "US", "four one five, five five five, zero one three two"),
        ("4155550132", "US", "four one five, five five five, zero one three two"),
        ("+14155550132", "US", "plus one, four one five, five five five, zero one three two"),
        ("020 7946 0958", "GB", "zero two zero, seven nine four six, zero nine five eight"),
    ],
)
def test_phone_number_is_read_digit_by_digit_in_groups(
    written: str, region: str, spoken: str
) -> None:
    assert speech.say_phone(written, phonenumbers.parse(written, region)) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("12", "twelve"),
        ("1,234.5", "one thousand two hundred and thirty-four point five"),
        ("1500", "fifteen hundred"),
        ("1,500", "one thousand five hundred"),
        ("2024", "twenty twenty-four"),
        ("3000", "three thousand"),
        ("0.05", "zero point zero five"),
        ("007", "zero zero seven"),
        ("1234567890123456", "one two three four five six seven eight nine zero one two three "
                             "four five six"),
    ],
)
def test_number_is_read_as_a_voice_would(text: str, spoken: str) -> None:
    assert speech.say_number(text) == spoken


def test_amounts_of_money_are_never_read_as_years() -> None:
    assert speech.say_money("$", "2024", "") == "two thousand and twenty-four dollars"


@pytest.mark.parametrize(
    ("hour", "minute", "meridiem", "spoken"),
    [
        (3, 30, "p", "three thirty p m"),
        (3, 5, "", "three oh five"),
        (3, 0, "", "three o'clock"),
        (3, 0, "A", "three a m"),
        (15, 0, "", "fifteen hundred"),
        (7, None, "p", "seven p m"),
    ],
)
def test_time_is_read_as_a_clock(hour: int, minute: int | None, meridiem: str, spoken: str) -> None:
    assert speech.say_time(hour, minute, meridiem) == spoken


@pytest.mark.parametrize(
    ("symbol", "amount", "scale", "spoken"),
    [
        ("$", "5.20", "", "five dollars and twenty cents"),
        ("$", "1", "", "one dollar"),
        ("$", "0.01", "", "one cent"),
        ("$", "3.5", "", "three dollars and fifty cents"),
        ("$", "1,000.00", "", "one thousand dollars"),
        ("$", "12.345", "", "twelve point three four five dollars"),
        ("$", "2.5", "million", "two point five million dollars"),
        ("\u00a3", "1.01", "", "one pound and one penny"),
        ("\u20ac", "0", "", "zero euros"),
    ],
)
def test_money_is_read_with_its_units(symbol: str, amount: str, scale: str, spoken: str) -> None:
    assert speech.say_money(symbol, amount, scale) == spoken


@pytest.mark.parametrize(
    ("recognize", "text", "at"),
    [
        (speech.email_at, "me@you.co", 2),         # ".co" may go on to ".com" or ".co.uk"
        (speech.email_at, "me@you.", 2),
        (speech.email_local_dot, "first.la", 5),   # "first.last@..." or just "first.last"
        (speech.number, "3", 0),
        (speech.number, "3.", 0),                  # "3.14"
        (speech.number, "1,000,", 0),              # "1,000,000"
        (speech.number, "3 p", 0),                 # "3 pm"
        (speech.number, "3 pm", 0),                # "3 pmx" is not a time
        (speech.number, "21s", 0),                 # "21st"
        (speech.money, "$", 0),
        (speech.money, "$5 bil", 0),               # "$5 billion"
    ],
)
def test_recognizer_waits_while_the_form_may_still_grow(
    recognize: Callable[[str, int, bool], speech.Step | None], text: str, at: int
) -> None:
    assert recognize(text, at, False) == NEED_MORE
    assert recognize(text, at, True) != NEED_MORE  # at the end of the reply it decides


def test_phone_recognizer_waits_while_digits_may_follow() -> None:
    assert speech.phone("+1 415-555-", 0, False, "US") == NEED_MORE
    consumed, spoken = speech.phone("+1 415-555-0132, ok", 0, False, "US")
    assert (consumed, spoken.split(", ")[0]) == (15, "plus one")


@pytest.mark.parametrize(
    "text", ["1 2 3 4 5 6 7 8 9 10 ok", "2024-01-15 ok", "555-0132 ok", "12345 ok"],
)
def test_digit_runs_that_are_no_phone_number_are_not_claimed(text: str) -> None:
    assert speech.phone(text, 0, False, "US") is None


@pytest.mark.parametrize(
    ("text", "consumed", "spoken"),
    [
        ("3 apples", 1, "three"),
        ("3 pm.", 4, "three p m"),
        ("3:30 PM ", 7, "three thirty p m"),
        ("45% ", 3, "forty-five percent"),
        ("2nd ", 3, "second"),
        ("3D ", 1, "3"),
        ("1.2.3, ", 5, "1.2.3"),
    ],
)
def test_number_recognizer_claims_the_number_and_its_suffix(
    text: str, consumed: int, spoken: str
) -> None:
    assert speech.number(text, 0, False) == (consumed, spoken)


def test_money_recognizer_leaves_unknown_shapes_to_the_cleaner() -> None:
    assert speech.money("$5k ", 0, False) is None
    assert speech.money("$ 5", 0, False) is None
    assert speech.money("$5 mile", 0, False) == (2, "five dollars")
