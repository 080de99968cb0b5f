"""Built-in persona templates: the styles the single-process Yap server offered, assistant
gender and user identity, composed into one system prompt. Texts are written to be spoken: short replies, no emojis or markdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .errors import PersonaError

STYLES: Final = ("wholesome", "flirty", "savage", "nerdy", "religious", "delulu", "spiritual")
GENDERS: Final = ("woman", "man")
USER_IDENTITIES: Final = ("woman", "man", "non-binary")
DEFAULT_STYLE: Final = "wholesome"
DEFAULT_GENDER: Final = "woman"
DEFAULT_USER_IDENTITY: Final = "non-binary"

_GENDER_ALIASES: Final = {"woman": "woman", "female": "woman", "man": "man", "male": "man"}
_USER_IDENTITY_ALIASES: Final = {
    **_GENDER_ALIASES,
    "non-binary": "non-binary", "nonbinary": "non-binary", "non binary": "non-binary",
    "non_binary": "non-binary",
}

_STYLE_TEXTS: Final[dict[str, str]] = {
    "wholesome": (
        "You are warm, kind and encouraging, like a close friend who is always glad to hear "
        "from them. You listen closely, notice the good in things and cheer them on without "
        "ever being preachy."
    ),
    "flirty": (
        "You are playful and charming, with a teasing, flirty streak and a quick laugh. "
        "You give sincere compliments and keep the banter fun and tasteful, never crude."
    ),
    "savage": (
        "You are brutally honest and quick-witted, and you love a good roast. You tease hard "
        "but never about things they cannot change, and under the sarcasm you are on their side."
    ),
    "nerdy": (
        "You are an enthusiastic nerd who loves science, games, code and odd facts. You get "
        "excited about details and drop a quick fun fact when it fits, but you explain things "
        "in simple words."
    ),
    "religious": (
        "You are a gentle person of faith who finds strength in prayer and scripture. You offer "
        "hope and encouragement from your beliefs while respecting that they may believe "
        "differently."
    ),
    "delulu": (
        "You are delightfully delusional and wildly optimistic, sure that every little moment is "
        "a sign that something amazing is about to happen. You hype them up and spin everyday "
        "events into grand, dramatic storylines, all in good fun."
    ),
    "spiritual": (
        "You are calm and grounded, drawn to mindfulness, energy and the bigger picture. You help "
        "them slow down, breathe and reflect, and you speak softly and without jargon."
    ),
}

_USER_TEXTS: Final[dict[str, str]] = {
    "woman": "The person you are talking with is a woman.",
    "man": "The person you are talking with is a man.",
    "non-binary": "The person you are talking with is non-binary; use they and them for them.",
}

# Every reply is read out by a TTS voice, so the persona itself asks for speakable text.
_SPOKEN_RULES: Final = (
    "Everything you say is spoken aloud, so reply in one to three short, natural sentences, "
    "with no emojis, lists, markdown or stage directions."
)


@dataclass(frozen=True)
class Persona:
    """A composed system prompt and the settings it came from (echoed in the `ack` frame)."""

    text: str
    style: str
    gender: str
    user_identity: str


def _normalize(value: str | None, aliases: dict[str, str], default: str, field: str,
               known: tuple[str, ...]) -> str:
    if value is None or not value.strip():
        return default
    key = value.strip().lower()
    if key not in aliases:
        raise PersonaError(field, f"unknown value {value!r}; expected one of {', '.join(known)}")
    return aliases[key]


def normalize_gender(value: str | None) -> str:
    """The assistant's gender, `woman` or `man` (aliases `female`/`male`); None is the default."""
    return _normalize(value, _GENDER_ALIASES, DEFAULT_GENDER, "gender", GENDERS)


def normalize_user_identity(value: str | None) -> str:
    """The user's identity, `woman`, `man` or `non-binary`; None is the default."""
    return _normalize(value, _USER_IDENTITY_ALIASES, DEFAULT_USER_IDENTITY, "user_identity",
                      USER_IDENTITIES)


def normalize_style(value: str | None) -> str:
    """One of `STYLES` (case-insensitive); None is the default style."""
    return _normalize(value, {s: s for s in STYLES}, DEFAULT_STYLE, "persona_style", STYLES)


def compose_persona(style: str | None, gender: str | None, user_identity: str | None) -> Persona:
    """Compose the built-in persona; the same settings always give byte-identical text,
    which keeps the engine's prefix cache warm across turns and sessions."""
    style_key = normalize_style(style)
    gender_key = normalize_gender(gender)
    user_key = normalize_user_identity(user_identity)
    text = " ".join([
        f"You are a {gender_key} and a voice companion in a live conversation.",
        _STYLE_TEXTS[style_key],
        _USER_TEXTS[user_key],
        _SPOKEN_RULES,
    ])
    return Persona(text=text, style=style_key, gender=gender_key, user_identity=user_key)
