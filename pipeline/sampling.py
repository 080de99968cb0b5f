"""Decoding knobs: ``Sampling`` (the one struct for them, on the internal wire too), the
client's form of them (``SamplingRequest``, every knob optional) and its range check against
``SamplingBounds`` into a ``SamplingChoice``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import msgspec

from .errors import SamplingError


class Sampling(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """Decoding knobs for one chat request; ``None`` means the engine's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    ignore_eos: bool | None = None  # generate max_tokens whatever the model says (benchmarks)


class SamplingRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The knobs as a client sends them (a JSON object, each optional), and the reply options
    that travel with them. ``null`` means the server's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    ignore_eos: bool | None = None
    sanitize_output: bool | None = None  # clean the reply for text-to-speech (default on)
    speak_numbers: bool | None = None  # numbers, money, percentages, times in words (default off)


KNOBS: Final = Sampling.__struct_fields__
SAMPLING_KEYS: Final = SamplingRequest.__struct_fields__


@dataclass(frozen=True)
class Bound:
    low: float
    high: float
    low_inclusive: bool = True
    high_inclusive: bool = True

    def admits(self, value: float) -> bool:
        above = self.low <= value if self.low_inclusive else self.low < value
        below = value <= self.high if self.high_inclusive else value < self.high
        return above and below and not math.isnan(value)

    def __str__(self) -> str:
        return (f"{'[' if self.low_inclusive else '('}{self.low:g}, {self.high:g}"
                f"{']' if self.high_inclusive else ')'}")


@dataclass(frozen=True)
class SamplingBounds:
    """The range each knob may take; ``top_k`` -1 (off) is always allowed. The defaults are
    vLLM's (and the OpenAI API's) own limits; a deployment narrows them (``[wsfront]``)."""

    temperature: Bound = Bound(0.0, 2.0)
    top_p: Bound = Bound(0.0, 1.0, low_inclusive=False)
    top_k: Bound = Bound(1, 1000)
    min_p: Bound = Bound(0.0, 1.0)
    repetition_penalty: Bound = Bound(0.0, 2.0, low_inclusive=False)
    presence_penalty: Bound = Bound(-2.0, 2.0)
    frequency_penalty: Bound = Bound(-2.0, 2.0)


@dataclass(frozen=True)
class SamplingChoice:
    """What a client chose for one turn: the decoding knobs and how to clean the reply."""

    sampling: Sampling = field(default_factory=Sampling)
    sanitize_output: bool = True
    speak_numbers: bool = False


def layered(*requests: SamplingRequest | None) -> SamplingRequest:
    """One request from several, each later one's set knobs over the earlier ones' (a
    client may send knobs at the top of its message and in nested objects)."""
    merged: dict[str, object] = {}
    for request in requests:
        if request is not None:
            merged.update((k, v) for k in SAMPLING_KEYS if (v := getattr(request, k)) is not None)
    return SamplingRequest(**merged)  # type: ignore[arg-type]


def check_sampling(request: SamplingRequest | None,
                   bounds: SamplingBounds = SamplingBounds()) -> SamplingChoice:
    """Range-check a client's knobs; ``SamplingError`` names the first one out of range."""
    if request is None:
        return SamplingChoice()
    knobs: dict[str, float | int] = {}
    for key in KNOBS:
        value = getattr(request, key)
        if value is None:
            continue
        if key == "top_k":
            if value != -1 and not bounds.top_k.admits(value):
                raise SamplingError(key, f"{value} must be -1 (off) or between "
                                         f"{bounds.top_k.low:g} and {bounds.top_k.high:g}")
        elif key == "ignore_eos":
            value = bool(value)
        elif key != "seed":
            bound: Bound = getattr(bounds, key)
            if not bound.admits(value):
                raise SamplingError(key, f"{value!r} is outside {bound}")
            value = float(value)
        knobs[key] = value
    return SamplingChoice(Sampling(**knobs),  # type: ignore[arg-type]
                          sanitize_output=request.sanitize_output is not False,
                          speak_numbers=request.speak_numbers is True)


def validate_sampling(raw: object, bounds: SamplingBounds = SamplingBounds()) -> SamplingChoice:
    """Check an already-parsed JSON value (None or an object) as a ``sampling`` object."""
    if raw is None:
        return SamplingChoice()
    if not isinstance(raw, dict):
        raise SamplingError("sampling", f"sampling must be an object, got {type(raw).__name__}")
    try:
        request = msgspec.convert(raw, SamplingRequest, strict=True)
    except msgspec.ValidationError as exc:
        raise SamplingError(*_field_and_reason(str(exc))) from None
    return check_sampling(request, bounds)


def _field_and_reason(error: str) -> tuple[str, str]:
    """msgspec's "Expected `float`, got `str` - at `$.top_p`" as (field, reason)."""
    reason, _, where = error.partition(" - at `$")
    name = where.rstrip("`").lstrip(".").split(".")[-1] or "sampling"
    if reason.startswith("Object contains unknown field"):
        name = reason.split("`")[1]
        reason = f"unknown key; allowed: {', '.join(SAMPLING_KEYS)}"
    return name, reason
