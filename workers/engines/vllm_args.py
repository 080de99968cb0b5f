"""What the ``vllm`` engine asks of vLLM, as pure functions of the worker's config.

Kept apart from ``vllm.py`` so the mapping is tested without vLLM installed: the worker's
settings become ``AsyncEngineArgs`` keywords, a ``Sampling`` frame becomes ``SamplingParams``
keywords, and vLLM's finish reasons become ours.
"""

from __future__ import annotations

from typing import Any

from pipeline import Sampling

from ..config import WorkerConfig
from .base import StepReason

# The single-process servers ran vLLM with long contexts on models whose config says less;
# vLLM refuses a max_model_len beyond the model's unless this is set (1 by default, as there).
ALLOW_LONG_MAX_MODEL_LEN = "VLLM_ALLOW_LONG_MAX_MODEL_LEN"
CPU_KVCACHE_SPACE = "VLLM_CPU_KVCACHE_SPACE"
OMP_WAIT_POLICY = "OMP_WAIT_POLICY"
OMP_THREADS_BIND = "VLLM_CPU_OMP_THREADS_BIND"


def engine_kwargs(cfg: WorkerConfig, quantization: str | None, kv_cache_dtype: str) -> dict[str, Any]:
    """``AsyncEngineArgs`` for this worker. ``quantization`` and ``kv_cache_dtype`` come from
    ``workers.quantization`` (what the model and the GPU call for)."""
    kwargs: dict[str, Any] = {
        "model": cfg.model,
        "tokenizer": cfg.model,
        "dtype": cfg.dtype,
        "max_model_len": cfg.max_model_len,
        # Every active request must fit in one batch: the broker never sends more than capacity.
        "max_num_seqs": cfg.vllm.max_num_seqs or cfg.capacity,
        "enable_prefix_caching": True,  # personas and histories repeat across turns
        "kv_cache_dtype": kv_cache_dtype,
        "enforce_eager": (cfg.vllm.enforce_eager if cfg.vllm.enforce_eager is not None
                          else cfg.device == "cpu"),
        "quantization": quantization,
        # The model's generation_config.json gives the defaults a request does not set.
        "generation_config": "auto",
        "disable_log_stats": False,  # keeps vLLM's counters (prefix cache hits) running
        "enable_log_requests": False,  # one INFO line per request is too much at voice rates
    }
    if cfg.device != "cpu":
        kwargs["gpu_memory_utilization"] = cfg.gpu_frac or 0.9
    return kwargs


def engine_env(cfg: WorkerConfig, environ: dict[str, str],
               pinned: frozenset[int] = frozenset()) -> dict[str, str]:
    """Environment variables vLLM reads at import time that the worker sets (never overriding
    what the operator set). ``pinned``: the cores the supervisor pinned this worker to."""
    env = {}
    if cfg.device == "cpu" and pinned and OMP_THREADS_BIND not in environ:
        # vLLM's CPU backend binds its model threads to every core of the NUMA node by
        # itself, escaping the supervisor's placement: keep it on the worker's cores, away
        # from the front and the broker.
        env[OMP_THREADS_BIND] = ",".join(map(str, sorted(pinned)))
    if ALLOW_LONG_MAX_MODEL_LEN not in environ:
        env[ALLOW_LONG_MAX_MODEL_LEN] = "1"
    if cfg.device == "cpu" and CPU_KVCACHE_SPACE not in environ:
        # vLLM's CPU backend sizes its KV cache in GiB from this, not from a GPU fraction.
        env[CPU_KVCACHE_SPACE] = f"{cfg.vllm.kv_cache_space_gib:g}"
    if cfg.device == "cpu" and OMP_WAIT_POLICY not in environ:
        # The model's OpenMP threads share the cores with this worker, the broker and the
        # front: spinning between steps would starve them (TTFT p50 47 -> 25 ms for vLLM's own
        # server on 2 cores, benchmarks/vllm_side_by_side.py).
        env[OMP_WAIT_POLICY] = "PASSIVE"
    return env


# What a model's generation config may preset (vLLM's ``get_diff_sampling_param`` names).
MODEL_DEFAULT_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                      "presence_penalty", "frequency_penalty")


def sampling_kwargs(sampling: Sampling, max_tokens: int,
                    model_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """``SamplingParams`` keywords: every knob the client set; else the model's generation
    config (as vLLM's own server does); else vLLM's defaults."""
    kwargs: dict[str, Any] = {k: v for k, v in (model_defaults or {}).items()
                              if k in MODEL_DEFAULT_KEYS}
    kwargs["max_tokens"] = max_tokens
    if sampling.temperature is not None:
        kwargs["temperature"] = max(float(sampling.temperature), 0.0)  # 0: greedy in vLLM
    if sampling.top_p is not None:
        kwargs["top_p"] = min(max(float(sampling.top_p), 1e-6), 1.0)
    if sampling.top_k is not None:
        kwargs["top_k"] = 0 if sampling.top_k <= 0 else int(sampling.top_k)  # 0: all tokens
    if sampling.min_p is not None:
        kwargs["min_p"] = float(sampling.min_p)
    if sampling.repetition_penalty is not None:
        kwargs["repetition_penalty"] = float(sampling.repetition_penalty)
    if sampling.presence_penalty is not None:
        kwargs["presence_penalty"] = float(sampling.presence_penalty)
    if sampling.frequency_penalty is not None:
        kwargs["frequency_penalty"] = float(sampling.frequency_penalty)
    if sampling.seed is not None:
        kwargs["seed"] = int(sampling.seed)
    if sampling.ignore_eos:
        kwargs["ignore_eos"] = True
    return kwargs


def finish_reason(reason: str | None) -> StepReason:
    """vLLM's ``CompletionOutput.finish_reason`` -> ours ("abort" is a cancel)."""
    if reason == "length":
        return "length"
    if reason == "abort":
        return "cancelled"
    return "stop"  # "stop": EOS or a stop string / token
