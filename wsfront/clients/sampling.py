"""The sampling flags every client takes (``--temperature``, ``--top-p``, ...), and the
``sampling`` object of a ``start`` they make. The names are the protocol's keys; each flag is
also accepted with underscores (``--top_p``), as the single-process Yap server's clients spelled
them. Ranges are the server's to check: an out-of-range value comes back as ``invalid_sampling``
naming the field."""

from __future__ import annotations

import argparse
from typing import Final

# protocol key -> how the flag's value is read
SAMPLING_FLAGS: Final[dict[str, type]] = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "min_p": float,
    "repetition_penalty": float,
    "presence_penalty": float,
    "frequency_penalty": float,
}

Sampling = dict[str, float | int | bool]


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "sampling (sent as the start's `sampling` object; omitted ones keep the server's defaults)")
    for key, kind in SAMPLING_FLAGS.items():
        names = [f"--{key.replace('_', '-')}"] + ([f"--{key}"] if "_" in key else [])
        group.add_argument(*names, dest=key, type=kind, metavar=kind.__name__.upper())
    group.add_argument("--no-sanitize", action="store_true",
                       help="sanitize_output=false: the model's raw text, not cleaned for speech")


def sampling_from(args: argparse.Namespace) -> Sampling:
    """The flags that were given, as the ``sampling`` object of a ``start``."""
    sampling: Sampling = {key: value for key in SAMPLING_FLAGS
                          if (value := getattr(args, key, None)) is not None}
    if getattr(args, "no_sanitize", False):
        sampling["sanitize_output"] = False
    return sampling
