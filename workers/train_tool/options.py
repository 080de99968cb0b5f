"""The settings of a tool-model fit (their defaults are the builtin screenshot-intent recipe)."""

from __future__ import annotations

import msgspec

from ..tool_input import DEFAULT_HISTORY_TOKENS


class TrainOptions(msgspec.Struct, frozen=True, kw_only=True):
    seed: int = 0
    batch_size: int = 32
    epochs: int = 4
    learning_rate: float = 2e-4  # a small encoder's top layers and a few hundred steps
    warmup: float = 0.1  # share of the steps with a rising learning rate
    weight_decay: float = 0.01
    history_tokens: int = DEFAULT_HISTORY_TOKENS
    # Training examples are short; 128 bounds the few long ones (serving allows 512).
    max_length: int = 128
    # The embeddings and this many lower layers keep their pretrained weights: they run once
    # per example (workers/train_tool/trunk.py), not once per epoch, and backward stops above
    # them. Two of MiniLM's six: the four above learn how utterance and history interact.
    frozen_layers: int = 2
    # Matmuls in bfloat16 where the CPU has native bf16 (AVX512-BF16, AMX): ~1.7x faster
    # steps; the weights stay float32 and the held-out check runs in float32, as served.
    bf16: bool = True
    threads: int = 0  # torch intra-op threads; 0 = torch's choice
