"""TensorRT-LLM settings: the TRT_MAX_BATCH_SIZE / TRT_BATCH_SIZE rules, the three
sources (prebuilt engine, TRT checkpoint, HF model), fractions, dtypes and quantization."""

from __future__ import annotations

import dataclasses
import json

import pytest

from workers.config import TrtOptions, WorkerConfig
from workers.engines.trt_config import (
    EngineBuild, TrtConfigError, gpu_count, is_trt_checkpoint, parse_engine_config, plan_trt,
    read_engine_config,
)
from workers.quantization import QuantizationError

H100, A100 = (9, 0), (8, 0)
ENGINE_32 = EngineBuild(max_batch_size=32, max_input_len=4096, max_seq_len=4352)
AWQ_CHECKPOINT = {"config.json": {"architecture": "LlamaForCausalLM", "dtype": "float16",
                                  "quantization": {"quant_algo": "W4A16_AWQ"}}}


def config(model: str = "SicariusSicariiStuff/Impish_Nemo_12B", **trt) -> WorkerConfig:
    worker = {"device": "cuda:0"} | {
        k: trt.pop(k) for k in ("gpu_frac", "quantization", "kv_dtype", "max_model_len", "device")
        if k in trt}
    return WorkerConfig(name="chat-0", kind="chat", engine="trt", model=model,
                        trt=TrtOptions(**trt), **worker)


# ------------------------------------------------------------------ batch sizes


def test_a_build_without_trt_max_batch_size_is_refused_naming_both_ways_out():
    with pytest.raises(TrtConfigError) as err:
        plan_trt(config(), capability=H100)
    assert str(err.value) == (
        "TRT_MAX_BATCH_SIZE is required to build a TensorRT-LLM engine from "
        "SicariusSicariiStuff/Impish_Nemo_12B; set it (e.g. 32) or point TRTLLM_ENGINE_DIR at "
        "a prebuilt engine")


@pytest.mark.parametrize("cfg, what", [
    (config(quantization="4bit"), "SicariusSicariiStuff/Impish_Nemo_12B"),
    (config("yapwithai/impish-12b-trt-awq"), "TRT checkpoint yapwithai/impish-12b-trt-awq"),
    (config(checkpoint_dir="/ckpt/impish-int4"), "TRT checkpoint /ckpt/impish-int4"),
])
def test_trt_max_batch_size_is_required_for_quantizing_and_for_checkpoints(cfg, what):
    with pytest.raises(TrtConfigError, match=f"required to build a TensorRT-LLM engine from "
                                             f"{what};"):
        plan_trt(cfg, capability=H100)


def test_a_prebuilt_engine_brings_its_own_max_batch_size():
    plan = plan_trt(config(engine_dir="/engines/impish"), capability=H100, engine=ENGINE_32)
    assert (plan.source, plan.model, plan.max_batch_size, plan.batch_size) == (
        "engine", "/engines/impish", 32, 32)
    assert not plan.builds
    assert plan.tokenizer == "SicariusSicariiStuff/Impish_Nemo_12B"


def test_trt_batch_size_lowers_the_runtime_batch():
    plan = plan_trt(config(engine_dir="/engines/impish", batch_size=16), capability=H100,
                    engine=ENGINE_32)
    assert (plan.max_batch_size, plan.batch_size) == (32, 16)
    assert "max batch size 32 (baked in), runtime batch size 16" in plan.describe()
    plan = plan_trt(config(max_batch_size=64, batch_size=8), capability=H100)
    assert (plan.max_batch_size, plan.batch_size) == (64, 8)


def test_trt_batch_size_above_the_engine_max_names_both_values():
    with pytest.raises(TrtConfigError) as err:
        plan_trt(config(engine_dir="/engines/impish", batch_size=48), capability=H100,
                 engine=ENGINE_32)
    assert str(err.value).startswith(
        "TRT_BATCH_SIZE=48 exceeds the engine's max batch size 32 (baked in); lower "
        "TRT_BATCH_SIZE or build with TRT_MAX_BATCH_SIZE>=48")
    with pytest.raises(TrtConfigError, match=r"TRT_BATCH_SIZE=33 exceeds the engine's max batch "
                                             r"size 32 \(TRT_MAX_BATCH_SIZE\)"):
        plan_trt(config(max_batch_size=32, batch_size=33), capability=H100)


def test_trt_max_batch_size_that_contradicts_a_prebuilt_engine_is_an_error():
    with pytest.raises(TrtConfigError, match=r"TRT_MAX_BATCH_SIZE=64 does not match the max batch "
                                             r"size 32 baked into TRTLLM_ENGINE_DIR=/e"):
        plan_trt(config(engine_dir="/e", max_batch_size=64), capability=H100, engine=ENGINE_32)
    plan = plan_trt(config(engine_dir="/e", max_batch_size=32), capability=H100, engine=ENGINE_32)
    assert plan.max_batch_size == 32


# ------------------------------------------------------------------ sources


def test_engine_dir_and_checkpoint_dir_together_are_refused():
    with pytest.raises(TrtConfigError, match=r"TRTLLM_ENGINE_DIR=/e and TRT_CHECKPOINT_DIR=/c are "
                                             r"both set; set only one"):
        plan_trt(config(engine_dir="/e", checkpoint_dir="/c"), capability=H100, engine=ENGINE_32)


def test_an_engine_dir_without_its_config_is_refused():
    with pytest.raises(TrtConfigError, match=r"TRTLLM_ENGINE_DIR=/e has no readable config.json"):
        plan_trt(config(engine_dir="/e"), capability=H100, engine=None)


@pytest.mark.parametrize("cfg, files, source, model, method", [
    (config(max_batch_size=32), {}, "hf", "SicariusSicariiStuff/Impish_Nemo_12B", "none"),
    (config(max_batch_size=32, quantization="8bit"), {}, "hf",
     "SicariusSicariiStuff/Impish_Nemo_12B", "fp8"),
    (config("yapwithai/impish-12b-trt-awq", max_batch_size=32), {}, "checkpoint",
     "yapwithai/impish-12b-trt-awq", "int4_awq"),
    (config(checkpoint_dir="/ckpt/x", max_batch_size=32), AWQ_CHECKPOINT, "checkpoint",
     "/ckpt/x", "int4_awq"),
    (config("/models/local-export", max_batch_size=32), AWQ_CHECKPOINT, "checkpoint",
     "/models/local-export", "int4_awq"),
    (config(checkpoint_dir="/ckpt/plain", max_batch_size=16),
     {"config.json": {"architecture": "LlamaForCausalLM", "quantization": {"quant_algo": None}}},
     "checkpoint", "/ckpt/plain", "none"),
])
def test_the_source_and_its_quantization(cfg, files, source, model, method):
    plan = plan_trt(cfg, capability=H100, files=files)
    assert (plan.source, plan.model, plan.quant.method) == (source, model, method)
    assert plan.builds


def test_is_trt_checkpoint_tells_trt_from_hf_configs():
    assert is_trt_checkpoint(AWQ_CHECKPOINT)
    assert not is_trt_checkpoint({"config.json": {"architectures": ["LlamaForCausalLM"],
                                                  "model_type": "llama"}})
    assert not is_trt_checkpoint({})


# ------------------------------------------------------------------ lengths, memory, dtype


def test_lengths_default_to_the_worker_context_and_the_reply_cap():
    plan = plan_trt(config(max_batch_size=8, max_model_len=5760), capability=H100)
    assert (plan.max_input_len, plan.max_output_len, plan.max_seq_len) == (5760, 200, 5960)
    plan = plan_trt(config(max_batch_size=8, max_input_len=5525, max_output_len=150),
                    capability=H100)
    assert (plan.max_input_len, plan.max_output_len, plan.max_seq_len) == (5525, 150, 5675)
    plan = plan_trt(config(max_batch_size=8), capability=H100, default_max_output_len=150)
    assert plan.max_output_len == 150


def test_a_prebuilt_engine_bounds_the_lengths():
    plan = plan_trt(config(engine_dir="/e", max_model_len=5760), capability=H100,
                    engine=ENGINE_32)
    assert (plan.max_input_len, plan.max_seq_len) == (4096, 4352)
    with pytest.raises(TrtConfigError, match=r"TRT_MAX_INPUT_LEN=8192 exceeds the 4096 baked into "
                                             r"TRTLLM_ENGINE_DIR=/e"):
        plan_trt(config(engine_dir="/e", max_input_len=8192), capability=H100, engine=ENGINE_32)


@pytest.mark.parametrize("overrides, fraction", [
    ({}, 0.9),
    ({"gpu_frac": 0.7}, 0.7),
    ({"gpu_frac": 0.7, "kv_free_gpu_frac": 0.5}, 0.5),
    ({"kv_free_gpu_frac": 1.0}, 1.0),
])
def test_kv_cache_fraction_falls_back_on_the_chat_gpu_fraction(overrides, fraction):
    plan = plan_trt(config(max_batch_size=8, **overrides), capability=H100)
    assert plan.free_gpu_memory_fraction == fraction


@pytest.mark.parametrize("overrides, message", [
    ({"kv_free_gpu_frac": 1.5}, r"TRT_KV_FREE_GPU_FRAC=1.5 must be a fraction in \(0, 1\]"),
    ({"kv_free_gpu_frac": -0.2}, r"TRT_KV_FREE_GPU_FRAC=-0.2 must be a fraction"),
    ({"gpu_frac": 1.2}, r"CHAT_GPU_FRAC=1.2 must be a fraction"),
    ({"dtype": "float8"}, r"TRT_DTYPE='float8' is not supported; use one of: float16, bfloat16, "
                          r"float32"),
    ({"batch_size": -1}, r"TRT_BATCH_SIZE=-1 must be a positive integer"),
    ({"max_batch_size": -4}, r"TRT_MAX_BATCH_SIZE=-4 must be a positive integer"),
    ({"max_input_len": -1}, r"TRT_MAX_INPUT_LEN=-1"),
])
def test_bad_values_name_their_variable(overrides, message):
    with pytest.raises(TrtConfigError, match=message):
        plan_trt(config(**({"max_batch_size": 8} | overrides)), capability=H100)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_supported_dtypes(dtype):
    assert plan_trt(config(max_batch_size=8, dtype=dtype), capability=H100).dtype == dtype


def test_block_reuse_follows_the_setting():
    assert plan_trt(config(max_batch_size=8), capability=H100).kv_block_reuse is True
    plan = plan_trt(config(max_batch_size=8, kv_block_reuse=False), capability=H100)
    assert plan.kv_block_reuse is False and "block reuse off" in plan.describe()


# ------------------------------------------------------------------ quantization


def test_quantization_follows_the_gpu_for_builds():
    assert plan_trt(config(max_batch_size=8, quantization="8bit"), capability=A100
                    ).quant.engine_arg == "W8A8_SQ_PER_CHANNEL"
    assert plan_trt(config(max_batch_size=8, quantization="4bit"), capability=A100
                    ).quant.engine_arg == "W4A16_AWQ"


def test_a_prebuilt_engine_runs_its_baked_in_quantization():
    fp8 = dataclasses.replace(ENGINE_32, quant_algo="FP8")
    plan = plan_trt(config(engine_dir="/e"), capability=H100, engine=fp8)
    assert (plan.quant.method, plan.quant.prequantized, plan.quant.engine_arg) == ("fp8", True,
                                                                                   None)
    assert plan_trt(config(engine_dir="/e", quantization="8bit"), capability=H100,
                    engine=fp8).quant.method == "fp8"
    with pytest.raises(QuantizationError, match=r"already quantized \(fp8, 8-bit TensorRT-LLM "
                                                r"checkpoint, from the engine's config.json\)"):
        plan_trt(config(engine_dir="/e", quantization="4bit"), capability=H100, engine=fp8)
    with pytest.raises(QuantizationError, match=r"need sm89\+; this GPU is sm80"):
        plan_trt(config(engine_dir="/e"), capability=A100, engine=fp8)


def test_an_unquantized_prebuilt_engine_refuses_a_quantization_or_kv_request():
    with pytest.raises(TrtConfigError, match=r"QUANTIZATION=4bit cannot change the prebuilt engine "
                                             r"in TRTLLM_ENGINE_DIR=/e \(built unquantized\)"):
        plan_trt(config(engine_dir="/e", quantization="4bit"), capability=H100, engine=ENGINE_32)
    with pytest.raises(TrtConfigError, match=r"KV_DTYPE=fp8 cannot change the prebuilt engine"):
        plan_trt(config(engine_dir="/e", kv_dtype="fp8"), capability=H100, engine=ENGINE_32)
    plan = plan_trt(config(engine_dir="/e", quantization="none"), capability=H100,
                    engine=ENGINE_32)
    assert plan.quant.method == "none"


def test_an_unquantized_checkpoint_cannot_be_quantized_or_change_its_kv_cache():
    plain = {"config.json": {"architecture": "LlamaForCausalLM", "quantization": {}}}
    with pytest.raises(TrtConfigError, match=r"QUANTIZATION=8bit cannot quantize the unquantized "
                                             r"TRT checkpoint /c"):
        plan_trt(config(checkpoint_dir="/c", max_batch_size=8, quantization="8bit"),
                 capability=H100, files=plain)
    with pytest.raises(TrtConfigError, match=r"KV_DTYPE=fp8 cannot change the TRT checkpoint /c"):
        plan_trt(config(checkpoint_dir="/c", max_batch_size=8, kv_dtype="fp8"),
                 capability=H100, files=plain)


def test_an_hf_awq_repo_is_refused_for_trt_and_cpu_is_refused_after_the_settings():
    with pytest.raises(QuantizationError, match=r"pre-quantized for vLLM/transformers"):
        plan_trt(config("cpatonn/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit", max_batch_size=8),
                 capability=H100)
    with pytest.raises(QuantizationError, match=r"engine trt needs an NVIDIA GPU"):
        plan_trt(config(max_batch_size=8), capability=None)
    # A settings mistake is reported as such even without a GPU.
    with pytest.raises(TrtConfigError, match=r"TRT_MAX_BATCH_SIZE is required"):
        plan_trt(config(), capability=None)


def test_moe_is_detected_from_the_checkpoint_config():
    files = {"config.json": {"architecture": "MixtralForCausalLM",
                             "moe": {"num_experts": 8, "top_k": 2},
                             "quantization": {"quant_algo": "FP8"}}}
    plan = plan_trt(config(checkpoint_dir="/c", max_batch_size=8), capability=H100, files=files)
    assert (plan.quant.method, plan.quant.moe) == ("fp8", True)


def test_describe_logs_source_batch_sizes_lengths_and_memory():
    plan = plan_trt(config(max_batch_size=32, batch_size=16, max_input_len=5525,
                           max_output_len=150, gpu_frac=0.7), capability=H100)
    assert plan.describe() == (
        "trt: engine built from SicariusSicariiStuff/Impish_Nemo_12B; max batch size 32 (to "
        "bake in), runtime batch size 16; input <= 5525, output <= 150, sequence <= 5675 "
        "tokens; float16; KV cache 70% of free GPU memory, block reuse on")


# ------------------------------------------------------------------ engine config.json


def test_parse_engine_config_reads_the_build_and_quantization():
    config_json = {"version": "0.20.0",
                   "pretrained_config": {"architecture": "LlamaForCausalLM",
                                         "quantization": {"quant_algo": "W4A16_AWQ",
                                                          "kv_cache_quant_algo": "FP8"}},
                   "build_config": {"max_batch_size": 64, "max_input_len": 5525,
                                    "max_seq_len": 5675}}
    assert parse_engine_config(config_json, "/e") == EngineBuild(64, 5525, 5675, "W4A16_AWQ",
                                                                 "FP8")
    legacy = {"builder_config": {"max_batch_size": 8, "max_input_len": 1024,
                                 "max_output_len": 256}}
    assert parse_engine_config(legacy, "/e") == EngineBuild(8, 1024, 1280)


@pytest.mark.parametrize("config_json", [{}, {"build_config": {"max_batch_size": 0}},
                                         {"build_config": "x"},
                                         {"pretrained_config": {"architecture": "X"}}])
def test_parse_engine_config_refuses_what_is_not_an_engine(config_json):
    with pytest.raises(TrtConfigError, match=r"TRTLLM_ENGINE_DIR=/e: config.json has no "
                                             r"build_config.max_batch_size"):
        parse_engine_config(config_json, "/e")


def test_read_engine_config(tmp_path):
    assert read_engine_config(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"build_config": {"max_batch_size": 4}}))
    assert read_engine_config(tmp_path) == {"build_config": {"max_batch_size": 4}}
    (tmp_path / "config.json").write_text("not json")
    assert read_engine_config(tmp_path) is None


# ------------------------------------------------------------------ tensor parallel


@pytest.mark.parametrize("device, count", [("cpu", 1), ("cuda", 1), ("cuda:3", 1),
                                           ("cuda:0,1", 2), ("cuda:0,1,2,3", 4)])
def test_gpu_count(device, count):
    assert gpu_count(device) == count


def test_a_worker_with_several_gpus_builds_tensor_parallel():
    plan = plan_trt(config(max_batch_size=8, device="cuda:0,1"), capability=H100)
    assert plan.tensor_parallel_size == 2
    assert plan.describe().endswith("; tensor parallel over 2 GPUs")
    assert plan_trt(config(max_batch_size=8), capability=H100).tensor_parallel_size == 1


def test_a_prebuilt_engine_needs_as_many_gpus_as_it_was_built_for():
    tp2 = dataclasses.replace(ENGINE_32, world_size=2)
    with pytest.raises(TrtConfigError, match=r"built for 2 GPU\(s\) but the worker's device "
                                             r"'cuda:0' has 1"):
        plan_trt(config(engine_dir="/e"), capability=H100, engine=tp2)
    plan = plan_trt(config(engine_dir="/e", device="cuda:0,1"), capability=H100, engine=tp2)
    assert plan.tensor_parallel_size == 2
    assert parse_engine_config({"build_config": {"max_batch_size": 4, "max_seq_len": 64},
                                "pretrained_config": {"mapping": {"world_size": 2}}},
                               "/e").world_size == 2
