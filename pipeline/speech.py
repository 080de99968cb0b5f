"""Spoken forms for the reply cleaner: emails, phone numbers and (opt-in) numbers, money,
percentages and times, rewritten the way a voice should read them.

Each recognizer is a lexer step over the cleaner's buffer `s` at index `i`: it returns
(raw characters consumed, text to emit), `NEED_MORE` while the text so far cannot decide
(only while the buffer ends inside something that could still grow into the form), or None
when the mark at `s[i]` is not its form. A decision looks only at characters up to the first
one that cannot extend the form, so it is the same however the reply was chunked.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

import phonenumbers
from num2words import num2words

Step = tuple[int, str]
NEED_MORE: Final[Step] = (0, "")

# Longest spans we wait for (hold-back and re-scan bounds); longer ones are not these forms.
LOCAL_PART_MAX_CHARS: Final = 64
DOMAIN_MAX_CHARS: Final = 64
PHONE_MAX_CHARS: Final = 32
NUMBER_MAX_CHARS: Final = 32

_DIGIT_WORDS: Final = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                       "nine")

# --- emails -------------------------------------------------------------------------------

_LOCAL_CHAR = re.compile(r"[\w%+-]")
_LOCAL_TAIL = re.compile(r"[\w%+-]+(?:\.[\w%+-]+)*")
_LOCAL_TAIL_PREFIX = re.compile(r"[\w.%+-]*")
_DOMAIN_RUN = re.compile(r"[A-Za-z0-9.-]*")
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![\w-])")


def _domain_end(s: str, i: int, final: bool) -> int | None:
    """End of the email domain starting at s[i]; -1 while it may still grow; None if none."""
    run = _DOMAIN_RUN.match(s, i, i + DOMAIN_MAX_CHARS + 1).end()
    if run - i > DOMAIN_MAX_CHARS:
        return None
    if run == len(s) and not final:
        return -1
    m = _DOMAIN.match(s, i, run + 1)
    return None if m is None else m.end()


def say_domain(domain: str) -> str:
    return domain.replace(".", " dot ")


def email_at(s: str, i: int, final: bool) -> Step | None:
    """`me@you.com` -> "me at you dot com": the `@` and the domain after it."""
    if i == 0 or _LOCAL_CHAR.match(s[i - 1]) is None:
        return None
    end = _domain_end(s, i + 1, final)
    if end is None:
        return None
    if end < 0:
        return NEED_MORE
    return (end - i, " at " + say_domain(s[i + 1:end]))


def email_local_dot(s: str, i: int, final: bool) -> Step | None:
    """A dot inside an email's local part (`first.last@x.com`) is spoken "dot" too."""
    if i == 0 or _LOCAL_CHAR.match(s[i - 1]) is None:
        return None
    tail = _LOCAL_TAIL_PREFIX.match(s, i + 1, i + 2 + LOCAL_PART_MAX_CHARS).end()
    if tail - (i + 1) > LOCAL_PART_MAX_CHARS:
        return None
    if tail == len(s):
        return None if final else NEED_MORE
    m = _LOCAL_TAIL.match(s, i + 1, tail)
    if m is None or m.end() != tail or s[tail] != "@":
        return None
    end = _domain_end(s, tail + 1, final)
    if end is None:
        return None
    return NEED_MORE if end < 0 else (1, " dot ")


# --- phone numbers ------------------------------------------------------------------------

# Everything a written phone number may contain; the run ends at the first other character.
_PHONE_RUN = re.compile(r"\+?\(?[0-9][0-9 \u00a0().-]*")
_PHONE_OPENING = re.compile(r"\+?\(?")
_DIGIT_GROUP = re.compile(r"[0-9]+")
_NOT_DIGITS = re.compile(r"[^0-9]+")
_PHONE_MIN_DIGITS: Final = 7


def _say_digits(group: str) -> str:
    return " ".join(_DIGIT_WORDS[int(d)] for d in group)


@lru_cache(maxsize=256)
def _phone_at_start(candidate: str, region: str) -> Step | None:
    # STRICT_GROUPING: valid numbers written in a grouping the country uses; it rejects
    # digit lists such as "1 2 3 4 5 6 7 8 9 10" that VALID would read as a US number.
    for match in phonenumbers.PhoneNumberMatcher(
        candidate, region, leniency=phonenumbers.Leniency.STRICT_GROUPING
    ):
        if match.start != 0:
            return None
        return (match.end, say_phone(match.raw_string, match.number))
    return None


def say_phone(written: str, number: phonenumbers.PhoneNumber) -> str:
    """Digits one by one in the writer's groups, groups split by a comma pause:
    "+1 415-555-0132" -> "plus one, four one five, five five five, zero one three two".
    A number written without separators takes the grouping of its country's format."""
    international = written.lstrip("(").startswith("+")
    groups = _DIGIT_GROUP.findall(written)
    if len(groups) == 1:
        style = (phonenumbers.PhoneNumberFormat.INTERNATIONAL if international
                 else phonenumbers.PhoneNumberFormat.NATIONAL)
        groups = _DIGIT_GROUP.findall(phonenumbers.format_number(number, style))
    spoken = ", ".join(_say_digits(g) for g in groups)
    return "plus " + spoken if international else spoken


def phone(s: str, i: int, final: bool, region: str) -> Step | None:
    """A phone number starting at s[i] (a digit, `+` or `(`), as `phonenumbers` finds it."""
    run = _PHONE_RUN.match(s, i, i + PHONE_MAX_CHARS)
    if run is None:  # "+" or "(" not followed by a digit (yet?)
        return NEED_MORE if not final and _PHONE_OPENING.fullmatch(s, i) else None
    if run.end() == len(s) and run.end() < i + PHONE_MAX_CHARS and not final:
        return NEED_MORE
    if run.end() - i < _PHONE_MIN_DIGITS:
        return None  # most numbers in a reply: too short to be a phone number
    candidate = run.group().rstrip(" \u00a0.-(")
    if len(_NOT_DIGITS.sub("", candidate)) < _PHONE_MIN_DIGITS:
        return None
    step = _phone_at_start(candidate, region)
    if step is not None and i + step[0] < len(s) and s[i + step[0]].isalnum():
        return None  # glued to a word: an id or a code ("4155550132x"), not a number to call
    return step


# --- numbers, money, percentages, times (opt-in) -------------------------------------------

# A numeric word: digit groups joined by single marks ("3.14", "1,000", "3:30", "2024-01-15").
_NUMBER_WORD = re.compile(r"[0-9]+(?:[.,:/-][0-9]+)*")
_AMOUNT = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?")
_CLOCK = re.compile(r"([01]?[0-9]|2[0-4]):([0-5][0-9])")
_SUFFIX = re.compile(r"%|(?:st|nd|rd|th)(?!\w)|[ \u00a0]?([AaPp])\.?[Mm](?!\w)")
_SUFFIX_PREFIX = re.compile(r"[snrt]|[ \u00a0]?(?:[AaPp]\.?)?")
_SCALES: Final = ("thousand", "million", "billion", "trillion")
_SCALE = re.compile(r"[ \u00a0](%s)(?!\w)" % "|".join(_SCALES))
_SCALE_PREFIX = re.compile(
    "[ \u00a0](?:%s)?" % "|".join(w[:k] for w in _SCALES for k in range(len(w), 0, -1))
)
_GLUED = re.compile(r"[\w@]")
# Currency symbol -> (one unit, many units, one hundredth, many hundredths).
_CURRENCIES: Final[dict[str, tuple[str, str, str, str]]] = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "\u20ac": ("euro", "euros", "cent", "cents"),
    "\u00a3": ("pound", "pounds", "penny", "pence"),
}
CURRENCY_SYMBOLS: Final = "".join(_CURRENCIES)
_LONGEST_CARDINAL_DIGITS: Final = 15


def _words(n: int | str, to: str = "cardinal") -> str:
    # num2words writes "one thousand, five hundred": a comma would be a pause mid-number.
    return num2words(n, lang="en", to=to).replace(",", "")


def say_number(text: str, years: bool = True) -> str:
    """"1,234.5" -> "one thousand two hundred and thirty-four point five"; with `years`,
    bare four-digit numbers 1100-2099 (no comma) as years ("2024" -> "twenty twenty-four");
    leading zeros and very long numbers digit by digit."""
    whole, _, frac = text.replace(",", "").partition(".")
    if (len(whole) > 1 and whole[0] == "0") or len(whole) > _LONGEST_CARDINAL_DIGITS:
        spoken = _say_digits(whole)
    elif years and text.isdigit() and len(text) == 4 and 1100 <= int(text) <= 2099:
        spoken = _words(int(whole), to="year")
    else:
        spoken = _words(int(whole))
    return spoken + " point " + _say_digits(frac) if frac else spoken


def say_time(hour: int, minute: int | None, meridiem: str) -> str:
    """"3:30 pm" -> "three thirty p m", "3:05" -> "three oh five", "3:00" -> "three o'clock"."""
    spoken = _words(hour)
    if minute:
        spoken += (" oh " if minute < 10 else " ") + _words(minute)
    elif minute == 0 and not meridiem:
        spoken += " o'clock" if hour <= 12 else " hundred"
    return spoken + (f" {meridiem[0].lower()} m" if meridiem else "")


def say_money(symbol: str, amount: str, scale: str) -> str:
    """"$5.20" -> "five dollars and twenty cents", "$2.5 million" -> "two point five million
    dollars"; hundredths only when written with one or two decimals."""
    one, many, cent, cents = _CURRENCIES[symbol]
    whole, _, frac = amount.replace(",", "").partition(".")
    if scale or len(frac) > 2:
        return f"{say_number(amount, years=False)} {scale + ' ' if scale else ''}{many}"
    units, hundredths = int(whole), int(frac.ljust(2, "0")) if frac else 0
    parts = []
    if units or not hundredths:
        parts.append(f"{say_number(whole, years=False)} {one if units == 1 else many}")
    if hundredths:
        parts.append(f"{_words(hundredths)} {cent if hundredths == 1 else cents}")
    return " and ".join(parts)


def _number_word_end(s: str, i: int, final: bool) -> int:
    """End of the numeric word at s[i]; -1 while more digits could still join it."""
    end = _NUMBER_WORD.match(s, i, i + NUMBER_MAX_CHARS).end()
    n = len(s)
    if not final and end < i + NUMBER_MAX_CHARS and (
        end == n or (s[end] in ".,:/-" and end + 1 == n)
    ):
        return -1
    return end


def number(s: str, i: int, final: bool) -> Step | None:
    """A numeric word at s[i] in words, with a `%`, ordinal or a.m./p.m. suffix."""
    end = _number_word_end(s, i, final)
    if end < 0:
        return NEED_MORE
    word = s[i:end]
    suffix = _SUFFIX.match(s, end)
    if suffix is None:
        if not final and _SUFFIX_PREFIX.fullmatch(s, end):
            return NEED_MORE
        if end < len(s) and _GLUED.match(s, end):  # "3D", "mp3", "1990s", "12@x.com"
            return (end - i, word)
        kind = ""
    else:
        if suffix.end() == len(s) and suffix.group() != "%" and not final:
            return NEED_MORE  # "3 am" may still become "3 amazing"
        kind = suffix.group().strip(" \u00a0").lower()
    spoken = _say_numeric_word(word, kind, suffix.group(1) if suffix is not None else None)
    if spoken is None:
        return (end - i, word)
    return ((suffix.end() if suffix is not None else end) - i, spoken)


def _say_numeric_word(word: str, kind: str, meridiem: str | None) -> str | None:
    clock = _CLOCK.fullmatch(word)
    if clock is not None:
        if kind and meridiem is None:
            return None
        return say_time(int(clock.group(1)), int(clock.group(2)), meridiem or "")
    if _AMOUNT.fullmatch(word) is None:
        return None  # dates, versions, ranges: left as written
    integer = "." not in word
    if kind == "":
        return say_number(word)
    if kind == "%":
        return say_number(word) + " percent"
    if meridiem is not None:
        hour = int(word) if integer and "," not in word else 0
        return say_time(hour, None, meridiem) if 1 <= hour <= 12 else None
    digits = word.replace(",", "")
    if not integer or len(digits) > _LONGEST_CARDINAL_DIGITS:
        return None
    return _words(int(digits), to="ordinal")


def money(s: str, i: int, final: bool) -> Step | None:
    """A currency symbol and the amount after it, with an optional scale word."""
    # "US$5": the letters stay, a space keeps them apart from the words ("US five dollars").
    gap = " " if i > 0 and s[i - 1].isalnum() else ""
    if i + 1 == len(s):
        return None if final else NEED_MORE
    if s[i + 1] not in "0123456789":
        return None
    end = _number_word_end(s, i + 1, final)
    if end < 0:
        return NEED_MORE
    amount = s[i + 1:end]
    if _AMOUNT.fullmatch(amount) is None:
        return None
    scale = _SCALE.match(s, end)
    if scale is None:
        if not final and _SCALE_PREFIX.fullmatch(s, end):
            return NEED_MORE
        if end < len(s) and _GLUED.match(s, end):
            return None
        return (end - i, gap + say_money(s[i], amount, ""))
    if scale.end() == len(s) and not final:
        return NEED_MORE  # "$5 million" may still become "$5 millionaires"
    return (scale.end() - i, gap + say_money(s[i], amount, scale.group(1)))
