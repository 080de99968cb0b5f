"""Fine-tunes a sequence classifier on yes/no tool examples and saves it as an HF directory.

Deterministic for a seed on one machine and thread count: the head's initialisation, dropout
and batch order all come from the seed, and torch runs its deterministic kernels. Inputs are
laid out by ``workers.tool_input``, the same code the classifier engine serves with.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from ..engines.torch_env import native_bf16
from ..tool_input import ToolInputEncoder
from .data import LABELS, Example
from .metrics import Scores, report, score
from .options import TrainOptions
from .trunk import FrozenTrunk, has_layer_stack


class EpochLog(msgspec.Struct, frozen=True):
    epoch: int
    loss: float
    validation_accuracy: float
    seconds: float


class TrainResult(msgspec.Struct, frozen=True):
    base: str
    options: TrainOptions
    train_examples: int
    epochs: list[EpochLog]
    heldout_name: str
    heldout: Scores
    seconds: float


def batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of example indices, each of similar lengths (little padding): sort
    within windows of a few batches, then shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 8
    out = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


@contextlib.contextmanager
def _process_settings(options: TrainOptions) -> Iterator[None]:
    """Seed, thread count, deterministic kernels and quiet transformers for one fit, put back
    afterwards: a worker that builds its model in-process goes on serving with its own."""
    import torch
    from transformers.utils import logging as hf_logging

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier weights" is the point here
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
        hf_logging.set_verbosity(verbosity)


def train_tool_model(train: Sequence[Example], validation: Sequence[Example],
                     heldout: Sequence[Example], *, base: str, out: str | Path,
                     options: TrainOptions = TrainOptions(), heldout_name: str = "test",
                     log: Callable[[str], None] = print) -> TrainResult:
    with _process_settings(options):
        return _fit(train, validation, heldout, base, Path(out), options, heldout_name, log)


def _fit(train: Sequence[Example], validation: Sequence[Example], heldout: Sequence[Example],
         base: str, out: Path, options: TrainOptions, heldout_name: str,
         log: Callable[[str], None]) -> TrainResult:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    started = time.monotonic()
    hf_logging.disable_progress_bar()
    rng = random.Random(options.seed)

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)}, dtype=torch.float32)
    frozen = freeze_lower(model, options.frozen_layers)
    encoder = ToolInputEncoder(tokenizer, history_tokens=options.history_tokens,
                               max_length=options.max_length)
    encoded = [encoder.encode(ex.text, ex.history) for ex in train]
    targets = [LABELS.index(ex.label) for ex in train]
    lengths = [len(ids) for ids, _ in encoded]
    per_epoch = -(-len(train) // options.batch_size)
    bf16 = options.bf16 and native_bf16()
    log(f"training {base} on {len(train)} examples: {options.epochs} epochs of {per_epoch} "
        f"batches of {options.batch_size}, seed {options.seed}, {frozen:,} of "
        f"{sum(p.numel() for p in model.parameters()):,} weights frozen"
        f"{', bf16 matmuls' if bf16 else ''}")

    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else (
        contextlib.nullcontext)
    trunk = None
    if options.frozen_layers > 0 and has_layer_stack(model):
        trunk = FrozenTrunk(model, options.frozen_layers)
        with autocast():
            cached = _cache_states(trunk, encoder, encoded)
            val_cached = _cache_states(
                trunk, encoder, [encoder.encode(ex.text, ex.history) for ex in validation])
        log(f"frozen layers run once: {time.monotonic() - started:.0f} s")

    def inputs_for(rows: Sequence[int], states: Sequence[Any] | None = None) -> dict[str, Any]:
        if trunk is not None:
            return trunk.inputs([(states if states is not None else cached)[i] for i in rows])
        return _tensors(encoder.pad([encoded[i] for i in rows]))

    def validation_accuracy() -> float:
        if not validation:
            return 0.0
        if trunk is None:
            return score([ex.label for ex in validation],
                         predict(model, encoder, validation)).accuracy
        model.eval()
        right = 0
        with torch.inference_mode(), autocast():
            for start in range(0, len(validation), 64):
                rows = range(start, min(start + 64, len(validation)))
                best = model(**inputs_for(rows, val_cached)).logits.argmax(-1).tolist()
                right += sum(LABELS[b] == validation[i].label for i, b in zip(rows, best))
        return right / len(validation)

    steps = options.epochs * per_epoch
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=options.learning_rate,
                                  weight_decay=options.weight_decay)
    warmup = max(1, int(steps * options.warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        (step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
    epochs: list[EpochLog] = []
    with trunk if trunk is not None else contextlib.nullcontext():
        for epoch in range(1, options.epochs + 1):
            epoch_start = time.monotonic()
            model.train()
            total = 0.0
            for batch in batches(lengths, options.batch_size, rng):
                labels = torch.tensor([targets[i] for i in batch])
                with autocast():
                    loss = model(**inputs_for(batch), labels=labels).loss
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                schedule.step()
                total += loss.item() * len(batch)
            accuracy = validation_accuracy()
            epochs.append(EpochLog(epoch, total / len(train), accuracy,
                                   time.monotonic() - epoch_start))
            log(f"epoch {epoch}/{options.epochs}: loss {total / len(train):.4f}, validation "
                f"accuracy {accuracy:.1%}, {epochs[-1].seconds:.0f} s")

    # The whole model again, through the serving input format: what a worker will see.
    scores = score([ex.label for ex in heldout], predict(model, encoder, heldout))
    log(report(heldout_name, scores))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    result = TrainResult(base=base, options=options, train_examples=len(train), epochs=epochs,
                         heldout_name=heldout_name, heldout=scores,
                         seconds=time.monotonic() - started)
    (out / "metrics.json").write_bytes(msgspec.json.format(msgspec.json.encode(result)) + b"\n")
    return result


def _cache_states(trunk: FrozenTrunk, encoder: ToolInputEncoder,
                  encoded: Sequence[tuple[list[int], list[int]]]) -> list[Any]:
    """The trunk's output per example, computed in batches of similar length."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    padded = (_tensors(encoder.pad([encoded[i] for i in order[start:start + 64]]))
              for start in range(0, len(order), 64))
    states = [None] * len(encoded)
    for i, state in zip(order, trunk.states(list(padded))):
        states[i] = state
    return states


def freeze_lower(model: Any, layers: int) -> int:
    """Freezes the embeddings and the ``layers`` lowest transformer layers (BERT-style names:
    ``...embeddings...``, ``...layer.N...``); returns the number of weights frozen."""
    lower = tuple(f"layer.{i}." for i in range(layers))
    frozen = 0
    for name, param in model.named_parameters():
        if "embeddings" in name or any(part in name for part in lower):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def predict(model: Any, encoder: ToolInputEncoder, examples: Sequence[Example],
            threshold: float = 0.5, batch_size: int = 64) -> list[str]:
    """The label of each example: "yes" when P(yes) >= threshold, as the engine decides."""
    import torch

    model.eval()
    encoded = [encoder.encode(ex.text, ex.history) for ex in examples]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    labels = [""] * len(encoded)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            logits = model(**_tensors(encoder.pad([encoded[i] for i in chunk]))).logits
            for i, p in zip(chunk, logits.float().softmax(-1)[:, 1].tolist()):
                labels[i] = "yes" if p >= threshold else "no"
    return labels


def _tensors(batch: dict[str, list[list[int]]]) -> dict[str, Any]:
    import torch

    return {name: torch.tensor(rows) for name, rows in batch.items()}

