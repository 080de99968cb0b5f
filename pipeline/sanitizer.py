"""The reply cleaner for text-to-speech: `StreamSanitizer` (chunk by chunk), `sanitize` (one shot).

Both run the same two stages, so any chunking of a reply cleans to exactly `sanitize(reply)`:
a lexer that removes or rewrites marks (control characters, tags, emotes, emoticons, emoji,
escapes, ellipses, dashes, curly quotes, `!!!`/`???`) and speaks emails, phone numbers and,
when asked, numbers (the spoken forms live in `speech`), holding back a suffix it cannot
decide yet; then a spacing pass (leading strip, one space per run, no space before
`, . ! ?`, first letter capitalized).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Final

from . import speech

# A lexer step: (raw characters consumed, text to emit). Consuming 0 means "need more input".
Step = speech.Step
NEED_MORE: Final[Step] = speech.NEED_MORE
Handler = Callable[[str, int, bool], "Step | None"]

# Longest spans we will wait for; past these the opening mark is decided literal/stray, which
# bounds both the hold-back (latency) and the re-scan cost of each feed.
EMOTE_MAX_CHARS: Final = 64
TAG_ATTR_MAX_CHARS: Final = 80

# Pictographic blocks plus the invisible joiners, selectors and keycap marks that glue
# emoji sequences together; removing every piece removes the whole sequence. U+FFFD (bytes
# a model emitted that are not valid UTF-8) goes too: no voice can read it.
_EMOJI_CLASS = (
    "\ufffd\u2190-\u21ff\u2300-\u23ff\u2600-\u27bf\u2b00-\u2bff\u3030\u303d\u3297\u3299"
    "\u200d\u20e3\ufe0e\ufe0f\U0001f000-\U0001faff\U000e0020-\U000e007f"
)
_EMOJI = re.compile(f"[{_EMOJI_CLASS}]")

# Control characters no voice can read (NUL, BEL, ESC, C1 controls), invisible format marks
# (zero-width space, BOM, bidi overrides, soft hyphen) and lone surrogates (not encodable as
# UTF-8). Whitespace controls (\t \n \r \v \f, U+001C-U+001F, U+0085) are not here: the
# spacing pass turns them into one space.
_CONTROL = re.compile(
    "[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u00ad\u200b\u200e\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff]+"
)

# One-character rewrites. Dashes become a comma pause: TTS voices read " - " as "minus".
_CHAR_MAP: Final[dict[str, str]] = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": ", ", "\u2014": ", ", "\u2015": ", ",
}

# Where the lexer must look closer. Letters that start emoticons (xD, T_T, o_O) and the
# digits, `+` and `(` that start numbers only count at a word start, so ordinary words pass
# through at regex speed. Currency symbols are marks only when numbers are spoken.
_TRIGGER_MARKS = (
    f"{_EMOJI_CLASS}\u2018-\u201f\u00ab\u00bb\u2013-\u2015\u2026"
    r"<>*_\\.\-:;=^&@!?"
)
_TRIGGER = re.compile(f"[{_TRIGGER_MARKS}]|(?<![^\\W_])[xXTtoO0-9+(]")
_TRIGGER_SPEAKING = re.compile(
    f"[{_TRIGGER_MARKS}{speech.CURRENCY_SYMBOLS}]|(?<![^\\W_])[xXTtoO0-9+(]"
)
_ALNUM = re.compile(r"[^\W_]")

_EMOTICON = re.compile(
    r">?[:;=][-'^o]?[)(\]\[DPpOo/\\|3*]+"  # :) ;-) :'( >:( :D :P :/ :3 :* :))) ...
    r"|[xX]D+"                             # xD XDDD
    r"|<3+"                                # <3
    r"|\^[_.-]?\^"                         # ^^ ^_^
    r"|[Tt;oO-]_[Tt;oO-]"                  # T_T ;_; o_O -_-
)
# Proper prefixes of an emoticon: with more text they may still become one.
_EMOTICON_PREFIX = re.compile(r">|>?[:;=][-'^o]?|[xX]|<|\^[_.-]?|[Tt;oO-]_?")
_EMOTICON_START: Final = frozenset(":;=<>^xXTtoO-")
# "thanks:)" is a smiley even glued to a word; other emoticons need a word boundary so
# that "http://", "10:30" and "Note:Python" survive.
_GLUED_SMILEY = re.compile(r"[:;]-?[)(]+")

_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9-]{0,15})(?:[\s/][^<>\n]{0,%d})?>" % TAG_ATTR_MAX_CHARS)
_TAG_PREFIX = re.compile(r"</?(?:[A-Za-z][A-Za-z0-9-]{0,15}(?:[\s/][^<>\n]{0,%d})?)?"
                         % TAG_ATTR_MAX_CHARS)
# Tags that separate words when rendered; inline ones (<b>, <i>) vanish without a gap.
_BLOCK_TAGS: Final = frozenset({"br", "p", "div", "li", "ul", "ol", "tr", "td", "hr",
                                "h1", "h2", "h3", "h4", "h5", "h6"})

_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_ENTITY_PREFIX = re.compile(r"&(?:#[0-9]{0,7}|#[xX][0-9a-fA-F]{0,6}|[A-Za-z][A-Za-z0-9]{0,31})?")

_SPEAKERS: Final = ("assistant", "ai", "bot")
_SPEAKER = re.compile(r"(?:assistant|ai|bot)[ \t]*:", re.IGNORECASE)
_SPEAKER_PREFIX = re.compile(
    "|".join([name[:k] for name in _SPEAKERS for k in range(1, len(name) + 1)]
             + [r"(?:assistant|ai|bot)[ \t]*"]),
    re.IGNORECASE,
)

_EMOTE_CLOSE = re.compile(r"[*\n]")
_LEADING = re.compile(r"[\s,]+")
_SPACE_RUN = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r" (?=[,.!?])")


def _is_alnum(ch: str) -> bool:
    return _ALNUM.match(ch) is not None


def _run_end(s: str, i: int, chars: str) -> int:
    j = i
    while j < len(s) and s[j] in chars:
        j += 1
    return j


def _emoticon(s: str, i: int, final: bool) -> Step | None:
    if not final and _EMOTICON_PREFIX.fullmatch(s, i):
        return NEED_MORE
    m = _EMOTICON.match(s, i)
    if m is None:
        return None
    if i > 0 and _is_alnum(s[i - 1]) and not _GLUED_SMILEY.fullmatch(m.group()):
        return None
    end = m.end()
    if end == len(s):
        # The mouth may repeat (":)))") or a letter may follow ("xDrive"): wait.
        return (end - i, "") if final else NEED_MORE
    return None if _is_alnum(s[end]) else (end - i, "")


def _asterisks(s: str, i: int, final: bool) -> Step | None:
    j = _run_end(s, i, "*")
    if j == len(s):
        return (j - i, "") if final else NEED_MORE
    if j - i > 1 or s[j].isspace():
        return (j - i, "")  # bold marker or a stray/arithmetic star
    # A single star opens an *action emote* if a closing star follows on the same line.
    window_end = j + EMOTE_MAX_CHARS + 1
    close = _EMOTE_CLOSE.search(s, j, window_end)
    if close is not None:
        if close.group() == "*" and not s[close.start() - 1].isspace():
            return (close.end() - i, " ")
        return (1, "")
    if len(s) >= window_end or final:
        return (1, "")
    return NEED_MORE


def _underscores(s: str, i: int, final: bool) -> Step | None:
    j = _run_end(s, i, "_")
    if j == len(s) and not final:
        return NEED_MORE
    in_word = i > 0 and _is_alnum(s[i - 1]) and j < len(s) and _is_alnum(s[j])
    return (j - i, s[i:j] if in_word else "")  # keep snake_case, drop _emphasis_


def _backslash(s: str, i: int, final: bool) -> Step | None:
    if i + 1 == len(s):
        return None if final else NEED_MORE
    return (2, s[i + 1]) if s[i + 1] in "\"'" else None


def _dots(s: str, i: int, final: bool) -> Step | None:
    j = _run_end(s, i, ".\u2026")
    if j == len(s) and not final:
        return NEED_MORE
    run = s[i:j]
    if run == ".":
        step = speech.email_local_dot(s, i, final)
        if step is not None:
            return step
    weight = len(run) + 2 * run.count("\u2026")
    return (j - i, "..." if weight >= 3 else run)


def _hyphens(s: str, i: int, final: bool, speak_numbers: bool = False) -> Step | None:
    j = _run_end(s, i, "-")
    if j == len(s) and not final:
        return NEED_MORE
    if j - i >= 2:
        return (j - i, ", ")
    before_ok = i == 0 or not _is_alnum(s[i - 1])  # "-5", but not "10-20"
    if speak_numbers and before_ok and j < len(s) and s[j] in "0123456789":
        return (1, "minus ")
    return (1, "-")


def _marks(s: str, i: int, final: bool) -> Step | None:
    # "!!!", "???" and "?!?!" are one mark, the first: it is spoken at once, never held.
    return (1, "") if i > 0 and s[i - 1] in "!?" else (1, s[i])


def _entity(s: str, i: int, final: bool) -> Step | None:
    """An HTML entity (&amp;, &#39;, &#x2014;) becomes the character it names, cleaned like
    any other; half an entity at the end of a chunk waits for the rest."""
    m = _ENTITY.match(s, i)
    if m is not None:
        char = html.unescape(m.group())
        if len(char) == 1:
            char = _CHAR_MAP.get(char, "" if _EMOJI.match(char) else char)
        return (m.end() - i, char)
    if not final and _ENTITY_PREFIX.fullmatch(s, i):
        return NEED_MORE
    return None


def _tag(s: str, i: int, final: bool) -> Step | None:
    m = _TAG.match(s, i)
    if m is not None:
        return (m.end() - i, " " if m.group(1).lower() in _BLOCK_TAGS else "")
    if not final and _TAG_PREFIX.fullmatch(s, i):
        return NEED_MORE
    return None


_HANDLERS: Final[dict[str, Handler]] = {
    "*": _asterisks, "_": _underscores, "\\": _backslash, ".": _dots, "\u2026": _dots,
    "-": _hyphens, "<": _tag, "&": _entity, "@": speech.email_at, "!": _marks, "?": _marks,
}


def _number_start(
    s: str, i: int, final: bool, *, region: str, speak_numbers: bool
) -> Step | None:
    if i >= 2 and s[i - 1] in ".,:/-" and s[i - 2].isdigit():
        return None  # the rest of "v1.2.3" or "A4-5": a word that did not start as a number
    step = speech.phone(s, i, final, region)
    if step is not None or s[i] in "+(" or not speak_numbers:
        return step  # not a phone: digits stay as written
    return speech.number(s, i, final)


@lru_cache(maxsize=16)
def _handlers(speak_numbers: bool, region: str) -> dict[str, Handler]:
    numbers = partial(_number_start, region=region, speak_numbers=speak_numbers)
    table = dict(_HANDLERS, **{c: numbers for c in "0123456789+("})
    if speak_numbers:
        table["-"] = partial(_hyphens, speak_numbers=True)
        table.update({c: speech.money for c in speech.CURRENCY_SYMBOLS})
    return table


def _step_at(s: str, i: int, final: bool, handlers: dict[str, Handler]) -> Step:
    """Decide what the mark at s[i] becomes; `NEED_MORE` if the text so far cannot tell."""
    c = s[i]
    if c in _EMOTICON_START:
        step = _emoticon(s, i, final)
        if step is not None:
            return step
    if c in _CHAR_MAP:
        return (1, _CHAR_MAP[c])
    handler = handlers.get(c)
    if handler is not None:
        step = handler(s, i, final)
        if step is not None:
            return step
    if _EMOJI.match(c):
        return (1, "")
    return (1, c)


class StreamSanitizer:
    """Cleans one reply chunk by chunk; the pieces returned join to `sanitize(reply)`.

    Each `feed` scans only the new chunk plus the held-back suffix (bounded by
    `EMOTE_MAX_CHARS`/`TAG_ATTR_MAX_CHARS` and the `speech` limits), never the reply so far.
    After `flush` the object starts a fresh reply.

    `speak_numbers` (off by default) also writes numbers, money, percentages and times in
    words ("$5.20" -> "five dollars and twenty cents"); `phone_region` is the country whose
    numbers may be written without a `+` country code.
    """

    def __init__(self, *, speak_numbers: bool = False, phone_region: str = "US") -> None:
        self._handlers = _handlers(speak_numbers, phone_region)
        self._trigger = _TRIGGER_SPEAKING if speak_numbers else _TRIGGER
        self._reset()

    def feed(self, chunk: str) -> str:
        """Take the next raw chunk; return the text that is safe to speak now."""
        return self._run(chunk, final=False)

    def flush(self) -> str:
        """End of reply: decide everything still held back and return it."""
        out = self._run("", final=True)
        self._reset()
        return out

    def _reset(self) -> None:
        self._pending = ""       # raw text not yet decided
        self._context = ""       # last two decided raw characters, for word-boundary checks
        self._at_start = True    # no visible raw character decided yet
        self._started = False    # spacing: something non-blank was emitted
        self._capitalized = False
        self._pending_space = False  # a space is owed unless punctuation follows

    def _run(self, chunk: str, final: bool) -> str:
        return self._space(self._lex(chunk, final))

    def _lex(self, chunk: str, final: bool) -> str:
        if not chunk.isprintable():  # cheap test first: this runs once per streamed token
            chunk = _CONTROL.sub("", chunk)
        s = self._context + self._pending + chunk
        pos = len(self._context)
        n = len(s)
        out: list[str] = []
        # A speaker label ("Assistant:") only counts before the first visible character.
        if self._at_start:
            while pos < n and s[pos].isspace():
                pos += 1
            if pos < n:
                m = _SPEAKER.match(s, pos)
                if m is not None:
                    pos = m.end()
                    self._at_start = False
                elif final or not _SPEAKER_PREFIX.fullmatch(s, pos):
                    self._at_start = False
        while pos < n and not self._at_start:
            m = self._trigger.search(s, pos)
            if m is None:
                out.append(s[pos:])
                pos = n
                break
            i = m.start()
            if i > pos:
                out.append(s[pos:i])
            consumed, text = _step_at(s, i, final, self._handlers)
            if consumed == 0:  # undecidable yet: hold s[i:] until more text (or flush)
                pos = i
                break
            out.append(text)
            pos = i + consumed
        self._pending = s[pos:]
        self._context = s[pos - 2:pos] if pos >= 2 else s[:pos]
        return "".join(out)

    def _space(self, text: str) -> str:
        if not self._started:
            lead = _LEADING.match(text)
            if lead is not None:
                text = text[lead.end():]
            if not text:
                return ""
            self._started = True
        if self._pending_space:
            text = " " + text
        text = _SPACE_BEFORE_PUNCT.sub("", _SPACE_RUN.sub(" ", text))
        if not self._capitalized:
            first = _ALNUM.search(text)
            if first is not None:
                k = first.start()
                text = text[:k] + text[k].upper() + text[k + 1:]
                self._capitalized = True
        # A trailing space is owed, not emitted: the next chunk may start with punctuation.
        self._pending_space = text.endswith(" ")
        return text[:-1] if self._pending_space else text


def sanitize(text: str, *, speak_numbers: bool = False, phone_region: str = "US") -> str:
    """Clean a whole reply at once; the reference `StreamSanitizer` output must equal."""
    return StreamSanitizer(speak_numbers=speak_numbers, phone_region=phone_region)._run(
        text, final=True
    )
