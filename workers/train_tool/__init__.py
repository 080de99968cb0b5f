"""Train a yes/no tool model (``python -m workers.train_tool``): data, metrics and the fit."""

from .data import LABELS, DataError, Example, load_examples, parse_lines, split_examples
from .metrics import Scores, report, score

__all__ = ["LABELS", "DataError", "Example", "Scores", "load_examples", "parse_lines", "report",
           "score", "split_examples"]
