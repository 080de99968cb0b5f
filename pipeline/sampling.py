"""The decoding knobs of a chat request (``Sampling``, the one struct for them, on the wire
too) and the validation of a client's overrides into it (vLLM-like ranges)."""

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


@dataclass(frozen=True)
class SamplingChoice:
    """What a client chose for one turn: the decoding knobs and whether to clean the reply."""

    sampling: Sampling = field(default_factory=Sampling)
    sanitize_output: bool = True


SAMPLING_KEYS: Final = (*(k for k in Sampling.__struct_fields__ if k != "seed"), "sanitize_output")

# (low, high, low inclusive, high inclusive) for the float knobs.
_FLOAT_RANGES: Final[dict[str, tuple[float, float, bool, bool]]] = {
    "temperature": (0.0, 2.0, True, True),
    "top_p": (0.0, 1.0, False, True),
    "min_p": (0.0, 1.0, True, True),
    "repetition_penalty": (0.0, 2.0, False, True),
    "presence_penalty": (-2.0, 2.0, True, True),
    "frequency_penalty": (-2.0, 2.0, True, True),
}
TOP_K_MAX: Final = 1000


def _interval(low: float, high: float, low_in: bool, high_in: bool) -> str:
    return f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def _check_float(key: str, value: object) -> float:
    # bool is an int subclass; JSON true must not read as 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SamplingError(key, f"must be a number, got {type(value).__name__}")
    number = float(value)
    low, high, low_in, high_in = _FLOAT_RANGES[key]
    above_low = low <= number if low_in else low < number
    below_high = number <= high if high_in else number < high
    if math.isnan(number) or not (above_low and below_high):
        raise SamplingError(key, f"{value!r} is outside {_interval(low, high, low_in, high_in)}")
    return number


def _check_top_k(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SamplingError("top_k", f"must be an integer, got {type(value).__name__}")
    if value != -1 and not 1 <= value <= TOP_K_MAX:
        raise SamplingError("top_k", f"{value} must be -1 (off) or between 1 and {TOP_K_MAX}")
    return value


def validate_sampling(raw: object) -> SamplingChoice:
    """Check the `sampling` value of a `start` frame (None or an object) and type it."""
    if raw is None:
        return SamplingChoice()
    if not isinstance(raw, dict):
        raise SamplingError("sampling", f"sampling must be an object, got {type(raw).__name__}")
    values: dict[str, object] = {}
    for key, value in raw.items():
        if key not in SAMPLING_KEYS:
            raise SamplingError(str(key), f"unknown key; allowed: {', '.join(SAMPLING_KEYS)}")
        if value is None:
            continue  # explicit null = server default
        if key == "sanitize_output":
            if not isinstance(value, bool):
                raise SamplingError(key, f"must be true or false, got {type(value).__name__}")
            values[key] = value
        elif key == "top_k":
            values[key] = _check_top_k(value)
        else:
            values[key] = _check_float(key, value)
    sanitize = values.pop("sanitize_output", True)
    return SamplingChoice(Sampling(**values), bool(sanitize))  # type: ignore[arg-type]
