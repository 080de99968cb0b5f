"""Which quantization a chat engine runs: from the model, the operator's request and the GPU.

Everything here is pure (repo names, decoded JSON dicts and a compute capability in, a frozen
``QuantPlan`` out) except ``read_quant_files`` at the bottom, the one reader. The rules are
those of the single-process Yap servers' QUANTIZATION setting (pre-quantized models win; the
8-bit format by GPU; the KV cache dtype by GPU and weight bits); where those servers disagreed
with each other the choice is argued in a comment beside the rule.

Call ``plan_quantization`` from an engine, log ``plan.describe()`` (operators read the backend
actually selected in the log, as they did with the single-process server), and pass
``plan.engine_arg`` and ``plan.kv_cache_dtype`` to the engine.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Capability = tuple[int, int] | None  # CUDA compute capability, e.g. (9, 0); None = no GPU
# Who loads a checkpoint: vLLM/transformers ("hf"), TensorRT-LLM ("trt"), or both ("modelopt").
Format = Literal["hf", "trt", "modelopt"]

ENGINES = ("vllm", "trt", "hf")
BIT_MODES = {"4bit": 4, "4-bit": 4, "8bit": 8, "8-bit": 8}
# Explicit methods an operator may name per engine (QUANTIZATION=...), besides "", none, BIT_MODES.
EXPLICIT = {
    "vllm": ("awq", "gptq", "fp8", "int8"),
    "trt": ("awq", "int4_awq", "fp8", "int8_sq"),
    "hf": (),
}
KV_DTYPES = ("auto", "fp8", "fp8_e5m2", "fp8_e4m3", "int8")

SM80, SM75, SM89 = (8, 0), (7, 5), (8, 9)


class QuantizationError(ValueError):
    """A combination that cannot run; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class PreQuantized:
    """What the checkpoint already is. ``family`` groups formats an explicit request matches
    (awq: AWQ, W4A16 compressed-tensors, AutoRound; gptq; fp8; int8)."""

    method: str  # awq | gptq | compressed-tensors | auto-round | fp8 | int8 | int4_awq | int8_sq
    bits: int  # 4 or 8; 0 when the source does not say
    family: str
    format: Format
    source: str  # "model name" or the file it was read from

    def label(self) -> str:
        bits = f", {self.bits}-bit" if self.bits else ""
        kind = " TensorRT-LLM checkpoint" if self.format == "trt" else ""
        return f"{self.method}{bits}{kind}, from the {self.source}"


@dataclass(frozen=True, slots=True)
class QuantPlan:
    """The decision an engine acts on.

    ``engine_arg`` is what to hand the engine: vLLM's ``quantization=`` (None = none, or let vLLM
    read the checkpoint's own config, which picks the fastest kernel, e.g. awq_marlin), or
    TensorRT-LLM's ``QuantAlgo`` name for a build (None = nothing to quantize). ``needs_export``
    says the weights must first be quantized offline (vLLM 4-bit: an AWQ/W4A16 export made with
    llmcompressor), since vLLM cannot quantize to 4 bits while loading.
    """

    engine: str
    method: str  # "none" or the format that runs, named as the engine names it
    bits: int  # 16 when unquantized
    prequantized: bool
    engine_arg: str | None
    kv_cache_dtype: str
    needs_export: bool = False
    moe: bool = False
    capability: Capability = None
    requested: str = ""
    source: str = ""  # why this method: the request, or where the pre-quantization was seen
    note: str = ""

    def describe(self) -> str:
        gpu = f"sm{self.capability[0]}{self.capability[1]}" if self.capability else "CPU"
        what = "no quantization" if self.method == "none" else self.method
        if self.note:
            what += f" ({self.note})"
        how = ("pre-quantized" if self.prequantized else "" if self.method == "none"
               else "quantized for the engine build" if self.engine == "trt"
               else "quantized while loading")
        if self.needs_export:
            how = "needs an offline AWQ (W4A16) export with llmcompressor first"
        parts = [f"{self.engine} quantization: {what}", how, f"on {gpu}",
                 f"{self.source}" if self.source else "",
                 "MoE model" if self.moe else "", f"KV cache {self.kv_cache_dtype}"]
        return ", ".join(p for p in parts if p)


# ------------------------------------------------------------------ detection: names

# As the single-process TRT server read names: trt + awq -> TRT AWQ checkpoint; trt +
# fp8/8bit/8-bit/int8/int-8 -> fp8/int8 ones.
# "8bit" alone does not say which of the two; the checkpoint's own config does.
_TRT_8BIT_MARKERS = (("fp8", "fp8"), ("int8", "int8_sq"), ("int-8", "int8_sq"),
                     ("8bit", "8bit"), ("8-bit", "8bit"))
# As the single-process servers read names: awq, w4a16, compressed-tensors, autoround ->
# 4-bit AWQ family; gptq -> GPTQ.
_AWQ_MARKERS = (("awq", "awq"), ("w4a16", "compressed-tensors"),
                ("compressed-tensors", "compressed-tensors"), ("autoround", "auto-round"))
# Beyond the single-process servers' list, the two 8-bit suffixes every publisher uses
# (Qwen/...-FP8, RedHatAI/...-quantized.w8a8): serving one as "unquantized" would then
# quantize it again.
_HF_8BIT_MARKERS = (("fp8", "fp8"), ("w8a8", "int8"))


def detect_from_name(model: str) -> PreQuantized | None:
    """Pre-quantization as the repo name (or local path) announces it, by the markers the
    single-process servers knew."""
    name = model.lower()
    if "trt" in name:
        if "awq" in name:
            return PreQuantized("int4_awq", 4, "awq", "trt", "model name")
        for marker, method in _TRT_8BIT_MARKERS:
            if marker in name:
                return PreQuantized(method, 8, _family(method), "trt", "model name")
    if "gptq" in name:  # also gptq_marlin
        return PreQuantized("gptq", 4, "gptq", "hf", "model name")
    for marker, method in _AWQ_MARKERS:
        if marker in name:
            return PreQuantized(method, 4, "awq", "hf", "model name")
    for marker, method in _HF_8BIT_MARKERS:
        if marker in name:
            return PreQuantized(method, 8, method, "hf", "model name")
    return None


def _family(method: str) -> str:
    if method in ("awq", "awq_marlin", "int4_awq", "compressed-tensors", "auto-round", "w4a16"):
        return "awq"
    if method in ("gptq", "gptq_marlin", "int4_gptq"):
        return "gptq"
    if method in ("int8", "int8_sq", "int8_wo", "w8a8"):
        return "int8"
    return method  # fp8, 8bit, bitsandbytes, ...


# ------------------------------------------------------------------ detection: files

# TensorRT-LLM / ModelOpt quant_algo -> (method as QUANTIZATION names it, bits)
_TRT_ALGOS = {
    "W4A16_AWQ": ("int4_awq", 4), "W4A8_AWQ": ("int4_awq", 4), "W4A16_GPTQ": ("int4_gptq", 4),
    "W4A16": ("int4_wo", 4), "W8A16": ("int8_wo", 8), "FP8": ("fp8", 8),
    "FP8_PER_CHANNEL_PER_TOKEN": ("fp8", 8), "FP8_BLOCK_SCALES": ("fp8", 8), "NVFP4": ("nvfp4", 4),
}


def from_trt_quant_algo(algo: object, source: str, fmt: Format = "trt") -> PreQuantized | None:
    """A TensorRT-LLM checkpoint's or engine's ``quant_algo`` (None / NO_QUANT: not quantized)."""
    if not isinstance(algo, str) or algo.upper() in ("", "NO_QUANT", "NONE"):
        return None
    algo = algo.upper()
    if algo.startswith("W8A8_SQ"):
        method, bits = "int8_sq", 8
    else:
        method, bits = _TRT_ALGOS.get(algo, (algo.lower(), 0))
    return PreQuantized(method, bits, _family(method), fmt, source)


def _from_hf_section(section: Mapping[str, Any], source: str) -> PreQuantized | None:
    """A Hugging Face ``quantization_config`` (config.json section or a side file)."""
    method = str(section.get("quant_method") or section.get("method") or "").lower()
    method = {"autoround": "auto-round", "intel/auto-round": "auto-round",
              "awq_marlin": "awq", "gptq_marlin": "gptq"}.get(method, method)
    bits = section.get("bits") or section.get("w_bit") or section.get("num_bits") or 0
    if not method:  # AutoAWQ's quant_config.json and AutoGPTQ's quantize_config.json say no method
        if "w_bit" in section or "q_group_size" in section:
            method = "awq"
        elif "desc_act" in section or section.get("checkpoint_format") == "gptq":
            method = "gptq"
        else:
            return None
    if method == "modelopt":
        return from_trt_quant_algo(section.get("quant_algo"), source, "modelopt")
    if method == "compressed-tensors":
        bits, is_float = _compressed_tensors_weights(section)
        if bits == 8:
            method = "fp8" if is_float else "int8"
    elif method == "fp8":
        bits = 8
    elif method == "bitsandbytes":
        bits = 4 if section.get("load_in_4bit") else 8
    fam = _family(method)
    if method in ("awq", "gptq", "auto-round") and not bits:
        bits = 4
    return PreQuantized(method, int(bits) if isinstance(bits, int) else 0, fam, "hf", source)


def _compressed_tensors_weights(section: Mapping[str, Any]) -> tuple[int, bool]:
    for group in (section.get("config_groups") or {}).values():
        weights = group.get("weights") if isinstance(group, Mapping) else None
        if isinstance(weights, Mapping) and weights.get("num_bits"):
            return int(weights["num_bits"]), weights.get("type") == "float"
    return 0, False


def _from_metadata(meta: Mapping[str, Any], source: str) -> PreQuantized | None:
    """The AWQ exporter's ``awq_metadata.json`` (as the single-process server's export wrote
    it): a method or scheme name, in any of a few keys."""
    for key in ("quant_method", "method", "quantization", "scheme", "quant_format"):
        value = meta.get(key)
        if isinstance(value, str) and value:
            value = value.lower()
            if value in ("w4a16", "awq", "int4_awq", "w4a16_asym"):
                return PreQuantized("awq", 4, "awq", "hf", source)
            return PreQuantized(value, 0, _family(value), "hf", source)
    return None


def detect_from_files(files: Mapping[str, Mapping[str, Any]]) -> PreQuantized | None:
    """Pre-quantization as the checkpoint's own files state it (``read_quant_files``' output).

    Checked in order of authority: ModelOpt's hf_quant_config.json, then config.json (a
    TensorRT-LLM checkpoint's ``quantization``, an engine's ``pretrained_config``, or a Hugging
    Face ``quantization_config``), then the side files exporters leave beside the weights.
    """
    modelopt = files.get("hf_quant_config.json")
    if modelopt and isinstance(modelopt.get("quantization"), Mapping):
        return from_trt_quant_algo(modelopt["quantization"].get("quant_algo"),
                                   "hf_quant_config.json", "modelopt")
    config = files.get("config.json") or {}
    if isinstance(config.get("pretrained_config"), Mapping):  # an engine directory's config
        config = config["pretrained_config"]
    trt_quant = config.get("quantization")
    if isinstance(trt_quant, Mapping) and "quant_algo" in trt_quant:  # a TRT-LLM checkpoint
        return from_trt_quant_algo(trt_quant.get("quant_algo"), "config.json")
    if isinstance(config.get("quantization_config"), Mapping):
        return _from_hf_section(config["quantization_config"], "config.json")
    for name in ("quantization_config.json", "quant_config.json", "quantize_config.json"):
        if name in files:
            found = _from_hf_section(files[name], name)
            if found:
                return found
    if "awq_metadata.json" in files:
        return _from_metadata(files["awq_metadata.json"], "awq_metadata.json")
    return None


def detect_prequantized(model: str, files: Mapping[str, Mapping[str, Any]] | None = None
                        ) -> PreQuantized | None:
    """The files when they say anything (they are what the engine will load), else the name."""
    if files:
        found = detect_from_files(files)
        if found or _files_say_unquantized(files):
            return found
    return detect_from_name(model)


def _files_say_unquantized(files: Mapping[str, Mapping[str, Any]]) -> bool:
    # A config.json with a model_type and no quantization section is a plain checkpoint, even
    # if a directory name on the way happens to contain a marker.
    config = files.get("config.json") or {}
    return bool(config.get("model_type") or config.get("architecture"))


# ------------------------------------------------------------------ detection: MoE

# MoE by name, as the single-process TRT server told: "-aXb" (active parameters, e.g.
# qwen3-30b-a3b) and moe/mixtral/deepseek-v2/v3/ernie-4.5.
_MOE_ACTIVE = re.compile(r"[-_]a\d+(?:\.\d+)?b(?![a-z0-9])")
_MOE_NAME_MARKERS = ("moe", "mixtral", "deepseek-v2", "deepseek-v3", "deepseek_v2",
                     "deepseek_v3", "ernie-4.5", "ernie4.5", "ernie-4_5")
# model_type (HF) or architecture (TRT-LLM checkpoint) fragments of MoE families
_MOE_MODEL_TYPES = ("moe", "mixtral", "deepseek_v2", "deepseek_v3", "deepseekv2", "deepseekv3",
                    "dbrx", "jamba", "gpt_oss", "gptoss")
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def moe_from_name(model: str) -> bool:
    name = model.lower()
    return bool(_MOE_ACTIVE.search(name)) or any(m in name for m in _MOE_NAME_MARKERS)


def moe_from_config(config: Mapping[str, Any] | None) -> bool | None:
    """True/False from a config.json dict; None when it has nothing to say (no model_type)."""
    if not config:
        return None
    for section in (config, config.get("text_config"), config.get("pretrained_config")):
        if not isinstance(section, Mapping):
            continue
        model_type = str(section.get("model_type") or section.get("architecture") or "").lower()
        if any(fragment in model_type for fragment in _MOE_MODEL_TYPES):
            return True
        trt_moe = section.get("moe")  # a TRT-LLM checkpoint's {"num_experts": 8, ...}
        for values in (section, trt_moe if isinstance(trt_moe, Mapping) else {}):
            if any(_count(values.get(key)) > 1 for key in _EXPERT_KEYS):
                return True
    return False if _files_say_unquantized({"config.json": config}) else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def detect_moe(model: str, config: Mapping[str, Any] | None = None) -> bool:
    """The config when it has one (ERNIE-4.5-0.3B is dense despite its name), else the name."""
    from_config = moe_from_config(config)
    return moe_from_name(model) if from_config is None else from_config


# ------------------------------------------------------------------ selection


def _sm(capability: Capability) -> str:
    return f"sm{capability[0]}{capability[1]}" if capability else "CPU"


def _normalize(requested: str) -> str:
    value = requested.strip().lower()
    return "" if value == "none" else value


def select_quantization(engine: str, requested: str, capability: Capability,
                        prequantized: PreQuantized | None = None, *, moe: bool = False,
                        kv_dtype: str = "auto") -> QuantPlan:
    """The quantization ``engine`` runs, or a ``QuantizationError`` naming what to change.

    ``requested`` is the QUANTIZATION setting: "" / "none" (the model as it is), "4bit",
    "8bit", or an explicit method (``EXPLICIT[engine]``). A pre-quantized model always runs as
    it is: a request it already satisfies (4bit for an AWQ repo) is fine, one it cannot
    (8bit for an AWQ repo) is an error, since re-quantizing 4-bit weights is impossible and
    serving something other than what was asked for would hide a wrong memory budget.
    """
    if engine not in ENGINES:
        raise QuantizationError(f"unknown engine {engine!r} for quantization; known: "
                                f"{', '.join(ENGINES)}")
    raw = requested
    requested = _normalize(requested)
    known = ("", *BIT_MODES, *EXPLICIT[engine])
    if requested not in known:
        allowed = ", ".join(["none", *BIT_MODES, *EXPLICIT[engine]])
        raise QuantizationError(f"QUANTIZATION={raw!r} is not known to engine {engine}; "
                                f"use one of: {allowed}")
    if engine == "trt" and capability is None:
        raise QuantizationError("engine trt needs an NVIDIA GPU (TensorRT-LLM does not run on "
                                "CPU); set the worker's device to cuda:N or use engine vllm/hf")
    if engine == "hf" and requested:
        raise QuantizationError(f"engine hf runs the model as it is; QUANTIZATION={raw} needs "
                                "engine vllm or trt (or point at a pre-quantized model)")
    common = {"engine": engine, "moe": moe, "capability": capability, "requested": requested}
    if prequantized is not None:
        return _run_prequantized(engine, requested, capability, prequantized, kv_dtype, common)
    if not requested:
        kv = _kv_dtype(engine, kv_dtype, capability, weight_bits=16, fixed_by=None)
        return QuantPlan(method="none", bits=16, prequantized=False, engine_arg=None,
                         kv_cache_dtype=kv, **common)
    if engine == "vllm":
        return _vllm_on_the_fly(requested, capability, kv_dtype, common)
    return _trt_on_the_fly(requested, capability, kv_dtype, common)


def _run_prequantized(engine: str, requested: str, capability: Capability, pq: PreQuantized,
                      kv_dtype: str, common: dict[str, Any]) -> QuantPlan:
    loaders = {"vllm": ("hf", "modelopt"), "trt": ("trt", "modelopt"), "hf": ("hf",)}[engine]
    if pq.format not in loaders:
        if pq.format == "trt":
            raise QuantizationError(f"the model is a TensorRT-LLM checkpoint ({pq.label()}); "
                                    f"engine {engine} cannot load it: use engine trt")
        if engine == "hf":
            raise QuantizationError(f"the model is a ModelOpt checkpoint ({pq.label()}); "
                                    "transformers cannot load it: use engine vllm or trt")
        raise QuantizationError(
            f"the model is pre-quantized for vLLM/transformers ({pq.label()}); TensorRT-LLM "
            "builds from a TRT checkpoint ('trt' + 'awq'/'fp8'/'int8' in its name) or from the "
            f"unquantized model with QUANTIZATION=4bit|8bit: use engine vllm, or point at one")
    if requested and not _satisfies(requested, pq):
        raise QuantizationError(
            f"the model is already quantized ({pq.label()}); QUANTIZATION={requested} cannot "
            "re-quantize it: unset QUANTIZATION to serve it as it is, or point at the "
            "unquantized model")
    if pq.family == "fp8":
        floor = SM89 if engine == "trt" else SM80
        if capability is not None and capability < floor:
            raise QuantizationError(f"the model holds FP8 weights ({pq.label()}), which need "
                                    f"{_sm(floor)}+; this GPU is {_sm(capability)}")
    method, note = pq.method, ""
    if method == "8bit":  # a "trt-8bit" name: the checkpoint's config says which at build time
        note = "fp8 or int8_sq, as the checkpoint says"
    elif engine == "vllm" and pq.family == "fp8" and capability is not None and capability < SM89:
        note = "W8A16: FP8 weights, 16-bit compute"
    kv = _kv_dtype(engine, kv_dtype, capability, weight_bits=pq.bits or 16,
                   fixed_by=pq if engine == "trt" else None)
    return QuantPlan(method=method, bits=pq.bits, prequantized=True, engine_arg=None,
                     kv_cache_dtype=kv, source=f"from the {pq.source}", note=note, **common)


def _satisfies(requested: str, pq: PreQuantized) -> bool:
    if requested in BIT_MODES:
        return pq.bits in (0, BIT_MODES[requested])
    wanted = {"awq": "awq", "int4_awq": "awq", "gptq": "gptq", "fp8": "fp8",
              "int8": "int8", "int8_sq": "int8"}[requested]
    return pq.family == wanted or (pq.method == "8bit" and wanted in ("fp8", "int8"))


def _vllm_on_the_fly(requested: str, capability: Capability, kv_dtype: str,
                     common: dict[str, Any]) -> QuantPlan:
    source = f"from QUANTIZATION={requested}"
    if requested == "gptq":
        raise QuantizationError("QUANTIZATION=gptq needs a pre-quantized GPTQ model (a repo with "
                                "'gptq' in its name); for 4-bit from this model use 4bit (AWQ)")
    if requested == "int8":
        raise QuantizationError("vLLM cannot quantize to INT8 while loading; use 8bit (FP8: "
                                "W8A8 on sm89+, W8A16 on sm80) or an INT8 pre-quantized model")
    if capability is None:
        raise QuantizationError(f"QUANTIZATION={requested} needs an NVIDIA GPU; on CPU serve "
                                "the model unquantized or a pre-quantized one")
    if requested in ("4bit", "4-bit", "awq"):
        if capability < SM75:
            raise QuantizationError(f"AWQ 4-bit kernels need sm75+; this GPU is "
                                    f"{_sm(capability)}")
        # As the single-process servers did: vLLM 4-bit is AWQ (W4A16) made by llmcompressor,
        # for every model, Qwen and MoE included; vLLM then loads the export and reads its
        # format itself.
        kv = _kv_dtype("vllm", kv_dtype, capability, weight_bits=4, fixed_by=None)
        return QuantPlan(method="awq", bits=4, prequantized=False, engine_arg=None,
                         kv_cache_dtype=kv, needs_export=True, source=source, **common)
    # 8bit / fp8, as the single-process vLLM servers did: FP8 everywhere, W8A8 on L40S/H100
    # and W8A16 (FP8 weights, 16-bit compute via Marlin) on A100. "INT8 on A100" is the TRT
    # rule; vLLM has no INT8 quantization at load time, so FP8-W8A16 is the only 8-bit it can
    # do there.
    if capability < SM80:
        raise QuantizationError(f"FP8 in vLLM needs sm80+ (W8A16 on A100, W8A8 on L40S/H100); "
                                f"this GPU is {_sm(capability)}")
    note = "W8A8" if capability >= SM89 else "W8A16: FP8 weights, 16-bit compute"
    kv = _kv_dtype("vllm", kv_dtype, capability, weight_bits=8, fixed_by=None)
    return QuantPlan(method="fp8", bits=8, prequantized=False, engine_arg="fp8",
                     kv_cache_dtype=kv, source=source, note=note, **common)


def _trt_on_the_fly(requested: str, capability: Capability, kv_dtype: str,
                    common: dict[str, Any]) -> QuantPlan:
    assert capability is not None  # checked by select_quantization
    source = f"from QUANTIZATION={requested}"
    # MoE: one summary table of the single-process servers' documentation said "FP8 only
    # (other quants error)" for TRT MoE, while their quantization rules said three times that
    # MoE takes the dense formats (4-bit INT4-AWQ for all models; "MoE models follow the same
    # quantization formats as dense models"). MoE follows the dense rules here, and a format
    # TensorRT-LLM refuses for an architecture fails in its build with its own message.
    if requested in ("4bit", "4-bit", "awq", "int4_awq"):
        method, algo, bits = "int4_awq", "W4A16_AWQ", 4
    elif requested == "fp8" or (requested in ("8bit", "8-bit") and capability >= SM89):
        if capability < SM89:
            raise QuantizationError(f"QUANTIZATION=fp8 needs sm89/sm90 (L40S/H100); this GPU "
                                    f"is {_sm(capability)}: use 8bit (INT8-SQ here) or int8_sq")
        method, algo, bits = "fp8", "FP8", 8
    else:  # 8bit below sm89, or int8_sq asked for (int8_sq: INT8-SQ on any sm80+ GPU)
        if capability < SM80:
            raise QuantizationError(f"8-bit TensorRT-LLM formats need sm80+ (INT8-SQ on A100, "
                                    f"FP8 on L40S/H100); this GPU is {_sm(capability)}")
        method, algo, bits = "int8_sq", "W8A8_SQ_PER_CHANNEL", 8
    kv = _kv_dtype("trt", kv_dtype, capability, weight_bits=bits, fixed_by=None)
    return QuantPlan(method=method, bits=bits, prequantized=False, engine_arg=algo,
                     kv_cache_dtype=kv, source=source, note=algo, **common)


def _kv_dtype(engine: str, requested: str, capability: Capability, *, weight_bits: int,
              fixed_by: PreQuantized | None) -> str:
    """KV_DTYPE for the engine. As the single-process vLLM server did, auto means fp8_e5m2 on
    L40S/H100 (sm89+) and 16-bit on A100, except in 4-bit mode, which keeps a 16-bit KV cache."""
    value = (requested or "auto").strip().lower()
    if value not in KV_DTYPES:
        raise QuantizationError(f"KV_DTYPE={requested!r} is not known; use one of: "
                                f"{', '.join(KV_DTYPES)}")
    if engine == "hf":
        if value != "auto":
            raise QuantizationError(f"engine hf keeps its KV cache in the model dtype; "
                                    f"KV_DTYPE={value} needs engine vllm or trt")
        return "auto"
    if engine == "vllm":
        if value == "int8":
            raise QuantizationError("vLLM has no INT8 KV cache; use KV_DTYPE=fp8 (or auto)")
        if value == "auto" and capability is not None and capability >= SM89 and weight_bits > 4:
            return "fp8_e5m2"
        return value
    # TensorRT-LLM: FP8 (e4m3) or INT8 KV, chosen at build time.
    if value == "auto":
        return "auto"
    if fixed_by is not None:
        raise QuantizationError(f"KV_DTYPE={value} cannot change a pre-quantized TensorRT-LLM "
                                f"checkpoint ({fixed_by.label()}); unset KV_DTYPE")
    if value == "fp8_e5m2":
        raise QuantizationError("TensorRT-LLM's FP8 KV cache is e4m3; use KV_DTYPE=fp8")
    if value in ("fp8", "fp8_e4m3"):
        if capability is None or capability < SM89:
            raise QuantizationError(f"an FP8 KV cache needs sm89/sm90; this GPU is "
                                    f"{_sm(capability)}: use KV_DTYPE=int8 or auto")
        return "fp8"
    return "int8"


def plan_quantization(engine: str, model: str, requested: str, capability: Capability,
                      files: Mapping[str, Mapping[str, Any]] | None = None, *,
                      kv_dtype: str = "auto") -> QuantPlan:
    """Detection and selection in one call: what an engine calls at start."""
    files = files or {}
    return select_quantization(engine, requested, capability,
                               detect_prequantized(model, files),
                               moe=detect_moe(model, files.get("config.json")), kv_dtype=kv_dtype)


# ------------------------------------------------------------------ the one reader

QUANT_FILES = ("config.json", "hf_quant_config.json", "quantization_config.json",
               "quant_config.json", "quantize_config.json", "awq_metadata.json")


def read_quant_files(model_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The decoded JSON files of ``QUANT_FILES`` that exist in ``model_dir`` (a hub id or a
    missing directory gives {}); a file that is not a JSON object is left out."""
    found: dict[str, dict[str, Any]] = {}
    directory = Path(model_dir).expanduser()
    if not directory.is_dir():
        return found
    for name in QUANT_FILES:
        try:
            value = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(value, dict):
            found[name] = value
    return found
