"""How well a yes/no tool model decides: confusion counts and the scores derived from them."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

POSITIVE = "yes"


class Scores(msgspec.Struct, frozen=True):
    examples: int
    true_positive: int
    false_positive: int
    true_negative: int
    false_negative: int
    accuracy: float
    precision: float  # of the predicted "yes", how many were "yes"
    recall: float  # of the true "yes", how many were found
    f1: float


def score(truth: Sequence[str], predicted: Sequence[str]) -> Scores:
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    tp = sum(t == POSITIVE and p == POSITIVE for t, p in zip(truth, predicted))
    fp = sum(t != POSITIVE and p == POSITIVE for t, p in zip(truth, predicted))
    fn = sum(t == POSITIVE and p != POSITIVE for t, p in zip(truth, predicted))
    tn = len(truth) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = (tp + tn) / len(truth) if truth else 0.0
    return Scores(len(truth), tp, fp, tn, fn, accuracy, precision, recall, f1)


def report(name: str, s: Scores) -> str:
    """A few lines for a terminal: the scores, then the confusion matrix."""
    return "\n".join([
        f"{name} ({s.examples} examples): accuracy {s.accuracy:.1%}  precision {s.precision:.1%}"
        f"  recall {s.recall:.1%}  F1 {s.f1:.3f}",
        "confusion (rows: true label, columns: predicted)",
        f"{'':>10}{'no':>8}{'yes':>8}",
        f"{'no':>10}{s.true_negative:>8}{s.false_positive:>8}",
        f"{'yes':>10}{s.false_negative:>8}{s.true_positive:>8}",
    ])
