"""Labelled tool examples: the JSONL format, its loader, and the deterministic split.

One example a line: ``{"text": utterance, "history": recent transcript (optional),
"label": "yes" | "no"}``. A bad line stops the load with ``DataError`` naming file:line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import msgspec

LABELS = ("no", "yes")  # class index 0, 1: the model's id2label


class Example(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    text: str
    label: Literal["no", "yes"]
    history: str = ""


class DataError(ValueError):
    """A data file that cannot be trained on; the message names the file and line."""


_decoder = msgspec.json.Decoder(Example)


def parse_lines(lines: Iterable[str], source: str) -> list[Example]:
    """Examples from JSONL lines; blank lines are skipped."""
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            example = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise DataError(f"{source}:{number}: {_describe(exc)}") from None
        if not example.text.strip():
            raise DataError(f"{source}:{number}: text is empty")
        examples.append(example)
    if not examples:
        raise DataError(f"{source}: no examples")
    return examples


def load_examples(path: str | Path) -> list[Example]:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_lines(f, str(path))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def _describe(exc: msgspec.DecodeError) -> str:
    message = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        if "label" in message and "Invalid enum value" in message:
            return f"label must be \"yes\" or \"no\" ({message})"
        if "Expected `object`" in message:
            return "not a JSON object"
        return message
    return f"not valid JSON ({message})"


def split_examples(examples: Sequence[Example], validation: float = 0.1, test: float = 0.1,
                   ) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, validation, test) by a hash of the normalized utterance: stable across runs
    and machines, and one utterance never lands on both sides (whatever its history)."""
    parts: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    for ex in examples:
        key = re.sub(r"[^a-z0-9]+", " ", ex.text.lower()).strip()
        bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
        index = 2 if bucket < test else 1 if bucket < test + validation else 0
        parts[index].append(ex)
    return parts
