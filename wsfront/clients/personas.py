"""Personas as the clients send them: named presets (built in, or read from a TOML or JSON
persona file), and the orders in which the switch clients cycle personality styles and
assistant genders."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec

from .connection import ClientFailure

GENDERS: Final = ("woman", "man")
# The personalities the single-process Yap server's switch test went through, in its order.
SWITCH_PERSONALITIES: Final = ("flirty", "savage", "religious", "delulu", "spiritual")
_GENDER_ALIASES: Final = {"female": "woman", "male": "man"}


class PersonaPreset(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One persona: a full ``text`` (sent as ``persona_text``), or the parts the server composes
    one from (``personality`` as ``persona_style``, and ``gender``)."""

    text: str | None = None
    personality: str | None = None
    gender: str | None = None

    def fields(self) -> dict[str, str]:
        """The persona part of a ``start``."""
        if self.text is not None:
            return {"persona_text": self.text}
        fields = {"persona_style": self.personality, "gender": self.gender}
        return {k: v for k, v in fields.items() if v}

    def describe(self) -> str:
        if self.text is not None:
            return f"custom text, {len(self.text)} chars"
        return " ".join(f"{k}={v}" for k, v in self.fields().items()) or "server default"


BUILTIN_PRESETS: Final[dict[str, PersonaPreset]] = {
    "anna_flirty": PersonaPreset(personality="flirty", gender="woman"),
    "mark_savage": PersonaPreset(personality="savage", gender="man"),
    "zoe_delulu": PersonaPreset(personality="delulu", gender="woman"),
    "leo_nerdy": PersonaPreset(personality="nerdy", gender="man"),
    "grace_religious": PersonaPreset(personality="religious", gender="woman"),
    "sam_spiritual": PersonaPreset(personality="spiritual", gender="man"),
    "mia_wholesome": PersonaPreset(personality="wholesome", gender="woman"),
    "captain_jo": PersonaPreset(text=(
        "You are Captain Jo, a cheerful retired sea captain and a voice companion in a live "
        "conversation. You love a good tale of the sea and gentle teasing, and you call the "
        "user 'matey' now and then. Everything you say is spoken aloud, so reply in one to "
        "three short sentences, with no emojis, lists or markdown.")),
}


def load_persona_file(path: Path) -> dict[str, PersonaPreset]:
    """Presets from a file: TOML tables or a JSON object, one entry per name, e.g.
    ``[nova]`` / ``personality = "nerdy"`` / ``gender = "woman"``, or ``text = "..."``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ClientFailure(f"cannot read persona file {path}: {exc.strerror or exc}") from None
    decode = msgspec.json.decode if path.suffix.lower() == ".json" else msgspec.toml.decode
    try:
        entries = decode(raw, type=dict[str, object])
    except msgspec.DecodeError as exc:
        raise ClientFailure(f"persona file {path}: {exc}") from None
    presets = {}
    for name, entry in entries.items():  # one at a time, so that an error names the persona
        try:
            presets[name] = msgspec.convert(entry, PersonaPreset)
        except msgspec.ValidationError as exc:
            raise ClientFailure(f"persona file {path}: persona {name!r}: {exc}") from None
    if not presets:
        raise ClientFailure(f"persona file {path}: no personas in it")
    return presets


def personality_cycle(turns: int, gender: str | None = None) -> list[PersonaPreset]:
    """The switch test's order: the personalities in turn, genders alternating unless one is
    fixed."""
    fixed = _GENDER_ALIASES.get(gender.strip().lower(), gender.strip().lower()) if gender else None
    return [PersonaPreset(personality=SWITCH_PERSONALITIES[i % len(SWITCH_PERSONALITIES)],
                          gender=fixed or GENDERS[i % len(GENDERS)]) for i in range(turns)]


def gender_cycle(turns: int, personality: str | None = None) -> list[PersonaPreset]:
    """The gender switch test's order: the assistant's gender alternating, one personality
    (the server's default when none is given)."""
    return [PersonaPreset(personality=personality, gender=GENDERS[i % len(GENDERS)])
            for i in range(turns)]
