"""The tool client's labelled cases: built-in screenshot-intent ones, or JSONL lines, each one
utterance ``{"text": ..., "label": "yes"|"no"}`` (with an optional ``"history"``: the transcript
before it, as the training data has it) or a little conversation
``{"steps": [{"text": ..., "label": ...}, ...]}`` whose later steps are judged with the earlier
ones as history (the tool model sees recent history); and the ``--limit`` / ``--max-steps``
selection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .connection import ClientFailure

_LABELS = {"yes": "yes", "no": "no", "true": "yes", "false": "no", "1": "yes", "0": "no"}

_SINGLE = (
    ("take a screenshot", "yes"),
    ("can you look at my screen for a second", "yes"),
    ("what do you see on my screen right now", "yes"),
    ("read what this page says", "yes"),
    ("check out this picture i'm looking at", "yes"),
    ("what do you think of this outfit on my screen", "yes"),
    ("look at this and tell me what you think", "yes"),
    ("describe what's on my display", "yes"),
    ("hello there", "no"),
    ("who was columbus", "no"),
    ("tell me a joke", "no"),
    ("how was your day", "no"),
    ("what is the capital of france", "no"),
    ("i had a long day at work", "no"),
    ("what should i cook tonight", "no"),
    ("do you like music", "no"),
)
_CONVERSATIONS = (
    (("i'm picking an outfit for tonight", "no"), ("what do you think of this one on my screen", "yes")),
    (("i'm reading an article about whales", "no"), ("can you read this paragraph for me", "yes"),
     ("thanks, that was interesting", "no")),
    (("tell me about your weekend", "no"), ("mine was quiet, i mostly read", "no")),
)


@dataclass(frozen=True)
class Step:
    text: str
    label: str  # "yes" | "no"


@dataclass(frozen=True)
class Case:
    steps: tuple[Step, ...]
    history: str = ""  # the conversation before the first step


BUILTIN_CASES = tuple([Case((Step(t, label),)) for t, label in _SINGLE]
                      + [Case(tuple(Step(t, label) for t, label in c)) for c in _CONVERSATIONS])


def load_cases(path: Path | None) -> list[Case]:
    if path is None:
        return list(BUILTIN_CASES)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ClientFailure(f"cannot read {path}: {exc.strerror or exc}") from None
    cases = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            raw_steps = item["steps"] if isinstance(item, dict) and "steps" in item else [item]
            if not isinstance(raw_steps, list) or not raw_steps:
                raise ValueError("steps must be a non-empty list")
            history = item.get("history") or "" if isinstance(item, dict) else ""
            if not isinstance(history, str):
                raise ValueError("history must be a string")
            cases.append(Case(tuple(_step(s) for s in raw_steps), history))
        except (ValueError, KeyError, TypeError) as exc:
            raise ClientFailure(f"{path}:{number}: expected {{\"text\": ..., \"label\": "
                                f"\"yes\"|\"no\"}} or {{\"steps\": [...]}} "
                                f"({type(exc).__name__}: {exc})") from None
    if not cases:
        raise ClientFailure(f"{path}: no cases")
    return cases


def select_cases(cases: list[Case], limit: int | None,
                 max_steps: int | None) -> tuple[list[Case], int]:
    """The first ``limit`` cases, less those longer than ``max_steps`` (0 or None: no cap),
    and how many were skipped for their length."""
    chosen = cases[:limit] if limit is not None else list(cases)
    if not max_steps or max_steps <= 0:
        return chosen, 0
    kept = [c for c in chosen if len(c.steps) <= max_steps]
    return kept, len(chosen) - len(kept)


def _step(raw: Any) -> Step:
    text, label = raw["text"], _LABELS[str(raw["label"]).strip().lower()]
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty text")
    return Step(text, label)
