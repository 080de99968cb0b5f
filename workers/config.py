"""A worker's settings: one Struct, filled from a ``[[workers]]`` table or from flags."""

from __future__ import annotations

from typing import Literal

import msgspec


class VllmOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[workers.vllm]``: settings only the vllm engine reads (their env vars in comments)."""

    # ENFORCE_EAGER: no compiled graphs (no CUDA graphs on a GPU: faster start, slower steps).
    # Unset: eager on a CPU, where vLLM's torch.compile path recompiles for new batch shapes
    # mid-stream (200-400 ms stalls at 8 and 32 sessions here) for no gain; compiled on a GPU.
    enforce_eager: bool | None = None
    cache_reset_interval_s: float = 600.0  # CACHE_RESET_INTERVAL_SECONDS; 0 = never
    max_num_seqs: int = 0  # 0 = the worker's capacity
    kv_cache_space_gib: float = 1.0  # CPU only: VLLM_CPU_KVCACHE_SPACE when it is not set


class TrtOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[workers.trt]``: settings only the trt engine reads (their env vars in comments)."""

    engine_dir: str = ""  # TRTLLM_ENGINE_DIR: a prebuilt engine (its batch size is baked in)
    checkpoint_dir: str = ""  # TRT_CHECKPOINT_DIR: a (quantized) checkpoint to build from
    max_batch_size: int = 0  # TRT_MAX_BATCH_SIZE: required to build an engine; 0 = unset
    batch_size: int = 0  # TRT_BATCH_SIZE: runtime override, <= the engine's max; 0 = max
    max_input_len: int = 0  # TRT_MAX_INPUT_LEN; 0 = the worker's max_model_len
    max_output_len: int = 0  # TRT_MAX_OUTPUT_LEN; 0 = the front's chat_max_out
    dtype: str = "float16"  # TRT_DTYPE
    kv_free_gpu_frac: float = 0.0  # TRT_KV_FREE_GPU_FRAC; 0 = the worker's gpu_frac
    kv_block_reuse: bool = True  # TRT_KV_ENABLE_BLOCK_REUSE


class WorkerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    kind: Literal["chat", "tool"]
    engine: str = ""  # chat: hf (default) | vllm | trt; tool: classifier (default)
    model: str = ""  # HF id, local path, or builtin:tiny-chat / builtin:tiny-tool
    connect: str = ""  # broker backend endpoint; the supervisor fills it
    # A client key bundle (broker/curve.py) for a tcp:// broker that speaks CurveZMQ; "" = none.
    curve_dir: str = ""
    # The interpreter the supervisor runs this worker with; "" = its own. vLLM and TensorRT-LLM
    # pin their own torch and transformers, so they live in a virtualenv of their own.
    python: str = ""
    device: str = "cpu"  # "cpu" or "cuda:N"; the supervisor sets CUDA_VISIBLE_DEVICES from it
    # CPU cores the supervisor pins this worker to: "" (its plan: supervisor/placement.py),
    # "none", or a list like "0-3,6". The worker itself only sees the result (its affinity).
    cpus: str = ""
    capacity: int = 32  # concurrent requests this worker accepts
    model_cache: str = "~/.cache/textserve/models"  # where builtin models are built
    dtype: str = "auto"
    # GPU memory share (CHAT_GPU_FRAC / TOOL_GPU_FRAC); 0 = the usual split: chat 0.70 and
    # tool 0.20 when both share a GPU, 0.90 for a worker alone on its GPU.
    gpu_frac: float = 0.0
    # "" (use the model as it is, pre-quantized or not), "4bit", "8bit", or an explicit method
    # (awq, gptq, fp8, int8_sq, none); see workers/quantization.py
    quantization: str = ""
    kv_dtype: str = "auto"  # KV_DTYPE: auto | fp8 | fp8_e5m2 | fp8_e4m3 | int8
    # torch intra-op threads; 0 = one per CPU this process may run on. torch's own default is
    # every core of the host, which oversubscribes cores shared by several workers.
    torch_threads: int = 0
    # Both from the broker's [broker] settings (the supervisor hands them down): a broker
    # silent for heartbeat_liveness intervals has restarted or hung, so register again.
    heartbeat_interval_s: float = 0.25
    heartbeat_liveness: int = 12
    # chat prompt limits (the Yap server's defaults; env HISTORY_MAX_TOKENS etc. through the supervisor)
    history_max_tokens: int = 3000
    user_utt_max_tokens: int = 350
    chat_prompt_max_tokens: int = 2000  # CHAT_PROMPT_MAX_TOKENS: the persona's budget
    exact_token_trim: bool = True  # EXACT_TOKEN_TRIM=0: budgets by length, not the tokenizer
    max_model_len: int = 5760
    # STREAM_FLUSH_MS: a request's first text goes out at once; later text is held up to this
    # long and merged into one delta (fewer frames through broker, front and client sockets).
    # 0: one frame per engine step.
    stream_flush_ms: float = 0.0
    # tool decision
    tool_threshold: float = 0.5
    tool_positive_label: str = "yes"
    tool_max_batch: int = 16
    # TOOL_HISTORY_TOKENS: how much of the conversation (its newest tokens) the tool model
    # reads beside the utterance; workers/tool_input.py lays the pair out
    tool_history_tokens: int = 900
    vllm: VllmOptions = msgspec.field(default_factory=VllmOptions)
    trt: TrtOptions = msgspec.field(default_factory=TrtOptions)

    def resolved_engine(self) -> str:
        return self.engine or ("hf" if self.kind == "chat" else "classifier")
