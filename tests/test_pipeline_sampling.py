"""Validation of client sampling overrides."""

from __future__ import annotations

import pytest

from pipeline import (
    SAMPLING_KEYS, Bound, Sampling, SamplingBounds, SamplingChoice, SamplingError, SamplingRequest,
    check_sampling, layered, validate_sampling,
)


def test_none_and_empty_object_mean_server_defaults() -> None:
    assert validate_sampling(None) == SamplingChoice() == validate_sampling({})
    assert SamplingChoice().sanitize_output is True
    assert SamplingChoice().sampling == Sampling()


def test_keys_are_the_yap_knobs_plus_seed_ignore_eos_and_the_reply_options() -> None:
    assert set(SAMPLING_KEYS) == {"temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                                  "presence_penalty", "frequency_penalty", "seed", "ignore_eos",
                                  "sanitize_output", "speak_numbers"}
    # The client's form names every knob of the engine's struct, and nothing else but options.
    assert set(Sampling.__struct_fields__) == set(SAMPLING_KEYS) - {"sanitize_output",
                                                                   "speak_numbers"}


def test_later_layers_override_earlier_ones_knob_by_knob() -> None:
    top = SamplingRequest(temperature=0.2, top_k=5)
    nested = SamplingRequest(temperature=0.9, sanitize_output=False)
    assert layered(top, None, nested) == SamplingRequest(temperature=0.9, top_k=5,
                                                         sanitize_output=False)


def test_bounds_of_a_deployment_narrow_the_ranges() -> None:
    narrow = SamplingBounds(temperature=Bound(0.0, 1.2), top_k=Bound(0, 60))
    assert check_sampling(SamplingRequest(temperature=1.2, top_k=0), narrow).sampling == Sampling(
        temperature=1.2, top_k=0)
    with pytest.raises(SamplingError, match=r"temperature: 1.5 is outside \[0, 1.2\]"):
        check_sampling(SamplingRequest(temperature=1.5), narrow)
    with pytest.raises(SamplingError, match="top_k: 61 must be -1"):
        check_sampling(SamplingRequest(top_k=61), narrow)


def test_valid_values_are_kept_and_ints_accepted_for_floats() -> None:
    choice = validate_sampling({"temperature": 1, "top_p": 0.85, "top_k": 40, "min_p": 0,
                                "repetition_penalty": 1.1, "presence_penalty": -2,
                                "frequency_penalty": 2.0, "sanitize_output": False})
    assert choice.sampling.temperature == 1.0 and isinstance(choice.sampling.temperature, float)
    assert choice.sampling.top_k == 40 and choice.sanitize_output is False
    assert choice.sampling == Sampling(
        temperature=1.0, top_p=0.85, top_k=40, min_p=0.0,
        repetition_penalty=1.1, presence_penalty=-2.0, frequency_penalty=2.0)


def test_explicit_null_means_default() -> None:
    assert validate_sampling({"temperature": None}) == SamplingChoice()


@pytest.mark.parametrize(("key", "value"), [
    ("temperature", 0), ("temperature", 2), ("top_p", 1), ("top_p", 1e-9), ("top_k", -1),
    ("top_k", 1), ("top_k", 1000), ("min_p", 0), ("min_p", 1), ("repetition_penalty", 2),
    ("presence_penalty", -2), ("frequency_penalty", 2),
])
def test_range_edges_that_are_allowed(key: str, value: float) -> None:
    assert getattr(validate_sampling({key: value}).sampling, key) == value


@pytest.mark.parametrize(("key", "value"), [
    ("temperature", -0.1), ("temperature", 2.01), ("top_p", 0), ("top_p", 1.5),
    ("top_k", 0), ("top_k", -2), ("top_k", 1001), ("min_p", -0.1), ("min_p", 1.1),
    ("repetition_penalty", 0), ("repetition_penalty", 2.5), ("presence_penalty", -2.1),
    ("frequency_penalty", 3), ("temperature", float("nan")), ("temperature", float("inf")),
])
def test_out_of_range_values_name_the_field(key: str, value: float) -> None:
    with pytest.raises(SamplingError) as err:
        validate_sampling({key: value})
    assert err.value.field == key
    assert err.value.code == "invalid_sampling"
    assert key in str(err.value)


@pytest.mark.parametrize(("key", "value"), [
    ("temperature", "0.5"), ("temperature", True), ("top_k", 1.5), ("top_k", True),
    ("top_k", "5"), ("sanitize_output", 1), ("sanitize_output", "false"), ("top_p", [0.5]),
])
def test_wrong_types_name_the_field(key: str, value: object) -> None:
    with pytest.raises(SamplingError) as err:
        validate_sampling({key: value})
    assert err.value.field == key


def test_unknown_key_is_rejected_by_name() -> None:
    with pytest.raises(SamplingError) as err:
        validate_sampling({"temperature": 0.5, "max_tokens": 10})
    assert err.value.field == "max_tokens"
    assert "unknown" in str(err.value)


@pytest.mark.parametrize("raw", [[], "hot", 1, True])
def test_sampling_must_be_an_object(raw: object) -> None:
    with pytest.raises(SamplingError) as err:
        validate_sampling(raw)
    assert err.value.field == "sampling"
