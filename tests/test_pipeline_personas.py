"""Built-in personas: style/gender/identity normalization and composition."""

from __future__ import annotations

import pytest

from pipeline import STYLES, PersonaError, compose_persona, normalize_gender
from pipeline.personas import normalize_style, normalize_user_identity


def test_defaults_are_wholesome_woman_talking_to_non_binary_user() -> None:
    persona = compose_persona(None, None, None)
    assert (persona.style, persona.gender, persona.user_identity) == (
        "wholesome", "woman", "non-binary")
    assert "You are a woman" in persona.text
    assert "they and them" in persona.text


@pytest.mark.parametrize(("raw", "expected"), [
    ("woman", "woman"), ("female", "woman"), ("man", "man"), ("male", "man"),
    (" Female ", "woman"), ("MAN", "man"), (None, "woman"), ("", "woman"),
])
def test_normalize_gender_accepts_aliases(raw: str | None, expected: str) -> None:
    assert normalize_gender(raw) == expected


@pytest.mark.parametrize("raw", ["robot", "non-binary", "w"])
def test_unknown_gender_raises_persona_error_naming_gender(raw: str) -> None:
    with pytest.raises(PersonaError) as err:
        normalize_gender(raw)
    assert err.value.field == "gender"
    assert err.value.code == "invalid_persona"
    assert raw in str(err.value)


@pytest.mark.parametrize(("raw", "expected"), [
    ("non-binary", "non-binary"), ("nonbinary", "non-binary"), ("woman", "woman"),
    ("male", "man"), (None, "non-binary"),
])
def test_normalize_user_identity(raw: str | None, expected: str) -> None:
    assert normalize_user_identity(raw) == expected


def test_unknown_user_identity_names_its_field() -> None:
    with pytest.raises(PersonaError) as err:
        normalize_user_identity("alien")
    assert err.value.field == "user_identity"


def test_unknown_style_raises_persona_error_naming_persona_style() -> None:
    with pytest.raises(PersonaError) as err:
        compose_persona("grumpy", None, None)
    assert err.value.field == "persona_style"
    assert "wholesome" in str(err.value)  # lists what is allowed


def test_style_is_case_insensitive() -> None:
    assert normalize_style("  Nerdy ") == "nerdy"


def test_every_style_composes_a_distinct_short_spoken_persona() -> None:
    texts = {compose_persona(style, "man", "woman").text for style in STYLES}
    assert len(texts) == len(STYLES) == 7
    for text in texts:
        assert "You are a man" in text and "is a woman" in text
        assert 3 <= text.count(".") <= 8
        assert "*" not in text and "#" not in text and text.isascii()


def test_composition_is_deterministic_for_prefix_caching() -> None:
    assert compose_persona("flirty", "male", "woman") == compose_persona("FLIRTY", "man", "woman")


def test_persona_is_frozen() -> None:
    persona = compose_persona(None, None, None)
    with pytest.raises(AttributeError):
        persona.text = "x"  # type: ignore[misc]
    assert persona == compose_persona(None, None, None)  # the refused assignment left it whole
