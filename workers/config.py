"""A worker's settings: one Struct, filled from a ``[[workers]]`` table or from flags."""

from __future__ import annotations

from typing import Literal

import msgspec


class WorkerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    kind: Literal["chat", "tool"]
    engine: str = ""  # chat: hf (default) | vllm | trt; tool: classifier (default)
    model: str = ""  # HF id, local path, or builtin:tiny-chat / builtin:tiny-tool
    connect: str = ""  # broker backend endpoint; the supervisor fills it
    device: str = "cpu"  # "cpu" or "cuda:N"; the supervisor sets CUDA_VISIBLE_DEVICES from it
    capacity: int = 32  # concurrent requests this worker accepts
    model_cache: str = "~/.cache/textserve/models"  # where builtin models are built
    dtype: str = "auto"
    # torch intra-op threads; 0 = one per CPU this process may run on. torch's own default is
    # every core of the host, which oversubscribes cores shared by several workers.
    torch_threads: int = 0
    heartbeat_interval_s: float = 0.25
    # chat prompt limits (seed defaults; env CHAT_MAX_OUT etc. override through the supervisor)
    history_max_tokens: int = 3000
    user_utt_max_tokens: int = 350
    max_model_len: int = 5760
    # tool decision
    tool_threshold: float = 0.5
    tool_positive_label: str = "yes"
    tool_max_batch: int = 16

    def resolved_engine(self) -> str:
        return self.engine or ("hf" if self.kind == "chat" else "classifier")
