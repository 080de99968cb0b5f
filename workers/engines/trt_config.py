"""The TensorRT-LLM settings of a worker, checked and resolved into one ``TrtPlan``.

Pure: it takes the ``WorkerConfig``, the GPU's compute capability and what was found on disk
(a prebuilt engine's build settings, the checkpoint's quantization files) and returns the plan
or a ``TrtConfigError`` naming the environment variable to change. The rules are the
single-process TRT server's: TRT_MAX_BATCH_SIZE is baked into an engine, so it is required
for every build (on-the-fly quantization, a TRT checkpoint, a plain HF model) and comes from
the engine itself with TRTLLM_ENGINE_DIR; TRT_BATCH_SIZE may lower it at runtime, never raise
it. ``read_engine_config`` at the bottom is the one reader.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import WorkerConfig
from ..quantization import (
    Capability, QuantPlan, detect_moe, detect_prequantized, from_trt_quant_algo,
    select_quantization,
)

Source = Literal["engine", "checkpoint", "hf"]
DTYPES = ("float16", "bfloat16", "float32")
# The single-process server's share for a model alone on its GPU, and TensorRT-LLM's own.
DEFAULT_GPU_FRAC = 0.9
DEFAULT_MAX_OUTPUT_LEN = 200  # the front's chat_max_out default (CHAT_MAX_OUT)


class TrtConfigError(ValueError):
    """A TensorRT-LLM setting that cannot work; one line naming the variable to change."""


@dataclass(frozen=True, slots=True)
class EngineBuild:
    """What a prebuilt engine's ``config.json`` says was baked in at build time."""

    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    quant_algo: str | None = None
    kv_cache_quant_algo: str | None = None
    world_size: int = 1  # GPUs it was built for (tensor x pipeline parallel)


@dataclass(frozen=True, slots=True)
class TrtPlan:
    """Everything the trt engine needs to construct ``LLM(...)``, already validated."""

    source: Source  # a prebuilt engine, a TRT checkpoint to build, or an HF model to build
    model: str  # what LLM(model=...) loads: the engine dir, the checkpoint dir or the HF model
    tokenizer: str  # the HF model directory or id the prompt is tokenized with
    max_batch_size: int  # the engine's: baked in, or to bake in
    batch_size: int  # runtime; <= max_batch_size
    max_input_len: int
    max_output_len: int
    max_seq_len: int  # prompt + reply
    dtype: str
    free_gpu_memory_fraction: float
    kv_block_reuse: bool
    quant: QuantPlan
    tensor_parallel_size: int = 1  # the worker's GPUs: a model larger than one GPU spans them

    @property
    def builds(self) -> bool:
        return self.source != "engine"

    def describe(self) -> str:
        what = {"engine": f"prebuilt engine {self.model}",
                "checkpoint": f"engine built from TRT checkpoint {self.model}",
                "hf": f"engine built from {self.model}"}[self.source]
        baked = "baked in" if self.source == "engine" else "to bake in"
        return (f"trt: {what}; max batch size {self.max_batch_size} ({baked}), runtime batch "
                f"size {self.batch_size}; input <= {self.max_input_len}, output <= "
                f"{self.max_output_len}, sequence <= {self.max_seq_len} tokens; {self.dtype}; "
                f"KV cache {self.free_gpu_memory_fraction:.0%} of free GPU memory, block reuse "
                f"{'on' if self.kv_block_reuse else 'off'}"
                + (f"; tensor parallel over {self.tensor_parallel_size} GPUs"
                   if self.tensor_parallel_size > 1 else ""))


def parse_engine_config(config: Mapping[str, Any], engine_dir: str) -> EngineBuild:
    """The build settings of an engine directory's ``config.json`` (decoded)."""
    build = config.get("build_config")
    if not isinstance(build, Mapping):
        build = config.get("builder_config")  # engines from before TensorRT-LLM 0.9
    max_batch = build.get("max_batch_size") if isinstance(build, Mapping) else None
    if not isinstance(max_batch, int) or max_batch < 1:
        raise TrtConfigError(f"TRTLLM_ENGINE_DIR={engine_dir}: config.json has no "
                             "build_config.max_batch_size; is it a TensorRT-LLM engine directory?")
    assert isinstance(build, Mapping)
    pretrained = config.get("pretrained_config")
    quant = pretrained.get("quantization") if isinstance(pretrained, Mapping) else None
    quant = quant if isinstance(quant, Mapping) else {}
    mapping = pretrained.get("mapping") if isinstance(pretrained, Mapping) else None
    world = mapping.get("world_size") if isinstance(mapping, Mapping) else None
    max_input = int(build.get("max_input_len") or 0)
    max_seq = int(build.get("max_seq_len") or 0) or (
        max_input + int(build.get("max_output_len") or 0))
    if max_seq < 2:
        raise TrtConfigError(f"TRTLLM_ENGINE_DIR={engine_dir}: config.json has no "
                             "build_config.max_seq_len; rebuild the engine")
    return EngineBuild(max_batch_size=max_batch, max_input_len=max_input, max_seq_len=max_seq,
                       quant_algo=quant.get("quant_algo"),
                       kv_cache_quant_algo=quant.get("kv_cache_quant_algo"),
                       world_size=world if isinstance(world, int) and world > 0 else 1)


def is_trt_checkpoint(files: Mapping[str, Mapping[str, Any]]) -> bool:
    """A TensorRT-LLM checkpoint's config.json names one ``architecture`` (an HF config names
    a list of ``architectures``) and carries a ``quantization`` section."""
    config = files.get("config.json") or {}
    return isinstance(config.get("architecture"), str) and "quantization" in config


def plan_trt(cfg: WorkerConfig, *, capability: Capability, engine: EngineBuild | None = None,
             files: Mapping[str, Mapping[str, Any]] | None = None,
             default_max_output_len: int = DEFAULT_MAX_OUTPUT_LEN) -> TrtPlan:
    """Check ``cfg.trt`` (and the worker settings it falls back on) and resolve the plan.

    ``engine`` is ``parse_engine_config`` of TRTLLM_ENGINE_DIR (required when it is set);
    ``files`` are the quantization files of what gets built (the checkpoint directory, or the
    model's). Settings are checked before the GPU, so a misconfiguration is reported as such
    even on a machine without one. Raises ``TrtConfigError`` or ``QuantizationError`` (both
    ``ValueError``) with a one-line message.
    """
    opts, files = cfg.trt, files or {}
    if opts.engine_dir and opts.checkpoint_dir:
        raise TrtConfigError(f"TRTLLM_ENGINE_DIR={opts.engine_dir} and TRT_CHECKPOINT_DIR="
                             f"{opts.checkpoint_dir} are both set; set only one (a prebuilt "
                             "engine, or a checkpoint to build one from)")
    if opts.dtype not in DTYPES:
        raise TrtConfigError(f"TRT_DTYPE={opts.dtype!r} is not supported; use one of: "
                             f"{', '.join(DTYPES)}")
    for var, value in (("TRT_MAX_BATCH_SIZE", opts.max_batch_size),
                       ("TRT_BATCH_SIZE", opts.batch_size),
                       ("TRT_MAX_INPUT_LEN", opts.max_input_len),
                       ("TRT_MAX_OUTPUT_LEN", opts.max_output_len)):
        if value < 0:
            raise TrtConfigError(f"{var}={value} must be a positive integer (or unset)")
    fraction = _kv_fraction(cfg)
    gpus = gpu_count(cfg.device)

    name = opts.checkpoint_dir or cfg.model
    prequantized = detect_prequantized(name, files)
    if opts.engine_dir:
        if engine is None:
            raise TrtConfigError(f"TRTLLM_ENGINE_DIR={opts.engine_dir} has no readable "
                                 "config.json; point it at a built TensorRT-LLM engine")
        if engine.world_size != gpus:
            raise TrtConfigError(
                f"the engine in TRTLLM_ENGINE_DIR={opts.engine_dir} was built for "
                f"{engine.world_size} GPU(s) but the worker's device {cfg.device!r} has {gpus}; "
                "give the worker as many (e.g. device = \"cuda:0,1\") or rebuild")
        source: Source = "engine"
        model = opts.engine_dir
    elif opts.checkpoint_dir or is_trt_checkpoint(files) or (
            prequantized is not None and prequantized.format == "trt"):
        source, model = "checkpoint", name
    else:
        source, model = "hf", cfg.model

    max_batch, batch = _batch_sizes(opts.max_batch_size, opts.batch_size, source, model, engine)
    max_output = opts.max_output_len or default_max_output_len
    if engine is not None:
        max_input, max_seq = _engine_lengths(opts.max_input_len, cfg.max_model_len, engine,
                                             opts.engine_dir)
        max_output = min(max_output, max_seq - 1)
    else:
        max_input = opts.max_input_len or cfg.max_model_len
        max_seq = max_input + max_output

    moe = detect_moe(name, files.get("config.json"))
    if engine is not None:
        quant = _engine_quant(cfg, capability, engine, moe)
    elif source == "checkpoint" and prequantized is None:
        quant = _plain_checkpoint_quant(cfg, capability, model, moe)
    else:
        quant = select_quantization("trt", cfg.quantization, capability, prequantized, moe=moe,
                                    kv_dtype=cfg.kv_dtype)
    return TrtPlan(source=source, model=model, tokenizer=cfg.model, max_batch_size=max_batch,
                   batch_size=batch, max_input_len=max_input, max_output_len=max_output,
                   max_seq_len=max_seq, dtype=opts.dtype, free_gpu_memory_fraction=fraction,
                   kv_block_reuse=opts.kv_block_reuse, quant=quant, tensor_parallel_size=gpus)


def gpu_count(device: str) -> int:
    """How many GPUs a worker's ``device`` names: "cuda:0,1" is two, "cuda:0" or "cpu" one."""
    if not device.startswith("cuda"):
        return 1
    return max(1, len([d for d in device.partition(":")[2].split(",") if d.strip()]))


def _kv_fraction(cfg: WorkerConfig) -> float:
    # TRT_KV_FREE_GPU_FRAC defaults to CHAT_GPU_FRAC, as in the single-process TRT server.
    var, value = (("TRT_KV_FREE_GPU_FRAC", cfg.trt.kv_free_gpu_frac) if cfg.trt.kv_free_gpu_frac
                  else ("CHAT_GPU_FRAC", cfg.gpu_frac) if cfg.gpu_frac
                  else ("", DEFAULT_GPU_FRAC))
    if not 0.0 < value <= 1.0:
        raise TrtConfigError(f"{var}={value} must be a fraction in (0, 1]")
    return value


def _batch_sizes(max_batch: int, batch: int, source: Source, model: str,
                 engine: EngineBuild | None) -> tuple[int, int]:
    if engine is not None:
        if max_batch and max_batch != engine.max_batch_size:
            raise TrtConfigError(
                f"TRT_MAX_BATCH_SIZE={max_batch} does not match the max batch size "
                f"{engine.max_batch_size} baked into TRTLLM_ENGINE_DIR={model}; unset it (use "
                "TRT_BATCH_SIZE to run smaller batches) or rebuild the engine")
        max_batch = engine.max_batch_size
    elif not max_batch:
        what = "TRT checkpoint " if source == "checkpoint" else ""
        raise TrtConfigError(
            f"TRT_MAX_BATCH_SIZE is required to build a TensorRT-LLM engine from {what}{model}; "
            "set it (e.g. 32) or point TRTLLM_ENGINE_DIR at a prebuilt engine")
    if batch > max_batch:
        raise TrtConfigError(
            f"TRT_BATCH_SIZE={batch} exceeds the engine's max batch size {max_batch} "
            f"({'baked in' if engine else 'TRT_MAX_BATCH_SIZE'}); lower TRT_BATCH_SIZE or build "
            f"with TRT_MAX_BATCH_SIZE>={batch}")
    return max_batch, batch or max_batch


def _engine_lengths(max_input: int, max_model_len: int, engine: EngineBuild,
                    engine_dir: str) -> tuple[int, int]:
    if engine.max_input_len and max_input > engine.max_input_len:
        raise TrtConfigError(f"TRT_MAX_INPUT_LEN={max_input} exceeds the {engine.max_input_len} "
                             f"baked into TRTLLM_ENGINE_DIR={engine_dir}; lower it or rebuild")
    limit = engine.max_input_len or engine.max_seq_len
    return (max_input or min(max_model_len, limit)), engine.max_seq_len


def _engine_quant(cfg: WorkerConfig, capability: Capability, engine: EngineBuild,
                  moe: bool) -> QuantPlan:
    """A prebuilt engine runs with what was baked in; a request can only agree with it."""
    baked = from_trt_quant_algo(engine.quant_algo, "engine's config.json")
    if baked is None:
        if cfg.quantization.strip().lower() not in ("", "none"):
            raise TrtConfigError(
                f"QUANTIZATION={cfg.quantization} cannot change the prebuilt engine in "
                f"TRTLLM_ENGINE_DIR={cfg.trt.engine_dir} (built unquantized); unset it or "
                "build a quantized engine")
    if cfg.kv_dtype.strip().lower() not in ("", "auto"):
        raise TrtConfigError(
            f"KV_DTYPE={cfg.kv_dtype} cannot change the prebuilt engine in TRTLLM_ENGINE_DIR="
            f"{cfg.trt.engine_dir} (its KV cache is "
            f"{(engine.kv_cache_quant_algo or 'model dtype').lower()}); unset KV_DTYPE")
    requested = cfg.quantization if baked is not None else ""
    return select_quantization("trt", requested, capability, baked, moe=moe)


def _plain_checkpoint_quant(cfg: WorkerConfig, capability: Capability, checkpoint: str,
                            moe: bool) -> QuantPlan:
    """An unquantized TRT checkpoint builds as it is: TensorRT-LLM quantizes from HF weights,
    and the checkpoint's config fixes its KV cache."""
    if cfg.quantization.strip().lower() not in ("", "none"):
        raise TrtConfigError(
            f"QUANTIZATION={cfg.quantization} cannot quantize the unquantized TRT checkpoint "
            f"{checkpoint}; quantize from the HF model (unset TRT_CHECKPOINT_DIR) or use a "
            "quantized checkpoint")
    if cfg.kv_dtype.strip().lower() not in ("", "auto"):
        raise TrtConfigError(f"KV_DTYPE={cfg.kv_dtype} cannot change the TRT checkpoint "
                             f"{checkpoint}; unset KV_DTYPE")
    return select_quantization("trt", "", capability, None, moe=moe)


# ------------------------------------------------------------------ the one reader


def read_engine_config(engine_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{engine_dir}/config.json`` decoded, or None when it is missing or not a JSON object."""
    try:
        value = json.loads((Path(engine_dir).expanduser() / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
