"""Quantization detection (names, config files, MoE) and selection by engine, request and GPU,
with the single-process servers' rules: pre-quantized models win, 8-bit format by
architecture, clear errors."""

from __future__ import annotations

import json

import pytest

from workers.quantization import (
    PreQuantized, QuantizationError, detect_from_files, detect_from_name, detect_moe,
    detect_prequantized, from_trt_quant_algo, moe_from_config, plan_quantization,
    read_quant_files, select_quantization,
)

H100, L40S, A100, T4 = (9, 0), (8, 9), (8, 0), (7, 5)
CPU = None


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("name, method, bits, fmt", [
    ("SicariusSicariiStuff/Impish_Nemo_12B_GPTQ_4-bit-64", "gptq", 4, "hf"),
    ("SicariusSicariiStuff/Impish_Nemo_12B_GPTQ_4-bit-128", "gptq", 4, "hf"),
    ("someone/Model-7B-gptq_marlin", "gptq", 4, "hf"),
    ("cpatonn/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit", "awq", 4, "hf"),
    ("yapwithai/impish-12b-awq", "awq", 4, "hf"),
    ("RedHatAI/Llama-3.1-8B-Instruct-quantized.w4a16", "compressed-tensors", 4, "hf"),
    ("org/model-compressed-tensors", "compressed-tensors", 4, "hf"),
    ("Intel/Qwen2.5-7B-Instruct-int4-AutoRound", "auto-round", 4, "hf"),
    ("Qwen/Qwen3-4B-Instruct-2507-FP8", "fp8", 8, "hf"),
    ("RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w8a8", "int8", 8, "hf"),
    ("yapwithai/impish-12b-trt-awq", "int4_awq", 4, "trt"),
    ("org/model-trt-fp8", "fp8", 8, "trt"),
    ("org/Model-TRT-INT8", "int8_sq", 8, "trt"),
    ("org/model-trt-int-8", "int8_sq", 8, "trt"),
    ("org/model-trt-8bit", "8bit", 8, "trt"),
    ("org/model-trtllm-8-bit", "8bit", 8, "trt"),
    ("/models/impish-trt-awq", "int4_awq", 4, "trt"),
])
def test_repo_name_markers_detect_the_known_formats(name, method, bits, fmt):
    found = detect_from_name(name)
    assert found is not None
    assert (found.method, found.bits, found.format, found.source) == (method, bits, fmt,
                                                                       "model name")


@pytest.mark.parametrize("name", [
    "SicariusSicariiStuff/Impish_Nemo_12B",
    "Qwen/Qwen3-30B-A3B-Instruct-2507",
    "meta-llama/Llama-3.1-8B-Instruct",
    "org/model-trt",  # a trt marker alone says nothing about quantization
    "/home/me/.cache/textserve/models/tiny-chat",
])
def test_plain_repo_names_are_not_pre_quantized(name):
    assert detect_from_name(name) is None


# ------------------------------------------------------------------ files


@pytest.mark.parametrize("files, method, bits, fmt, source", [
    ({"config.json": {"model_type": "llama", "quantization_config": {
        "quant_method": "awq", "bits": 4, "group_size": 128}}}, "awq", 4, "hf", "config.json"),
    ({"config.json": {"model_type": "mistral", "quantization_config": {
        "quant_method": "gptq", "bits": 4, "desc_act": False}}}, "gptq", 4, "hf", "config.json"),
    ({"config.json": {"model_type": "qwen3_moe", "quantization_config": {
        "quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}}}}}},
     "compressed-tensors", 4, "hf", "config.json"),
    ({"config.json": {"model_type": "llama", "quantization_config": {
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}}}}},
     "fp8", 8, "hf", "config.json"),
    ({"config.json": {"model_type": "llama", "quantization_config": {
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "int"}}}}}},
     "int8", 8, "hf", "config.json"),
    ({"config.json": {"model_type": "qwen3", "quantization_config": {
        "quant_method": "fp8", "weight_block_size": [128, 128]}}}, "fp8", 8, "hf", "config.json"),
    ({"quantization_config.json": {"quant_method": "awq", "w_bit": 4}},
     "awq", 4, "hf", "quantization_config.json"),
    ({"quant_config.json": {"zero_point": True, "q_group_size": 128, "w_bit": 4,
                            "version": "GEMM"}}, "awq", 4, "hf", "quant_config.json"),
    ({"quantize_config.json": {"bits": 4, "group_size": 64, "desc_act": True}},
     "gptq", 4, "hf", "quantize_config.json"),
    ({"awq_metadata.json": {"scheme": "W4A16", "calib_dataset": "open_platypus"}},
     "awq", 4, "hf", "awq_metadata.json"),
    ({"config.json": {"architecture": "LlamaForCausalLM", "dtype": "float16",
                      "quantization": {"quant_algo": "W4A16_AWQ", "group_size": 128}}},
     "int4_awq", 4, "trt", "config.json"),
    ({"config.json": {"architecture": "LlamaForCausalLM",
                      "quantization": {"quant_algo": "W8A8_SQ_PER_CHANNEL"}}},
     "int8_sq", 8, "trt", "config.json"),
    ({"config.json": {"pretrained_config": {"quantization": {"quant_algo": "FP8"}},
                      "build_config": {"max_batch_size": 32}}}, "fp8", 8, "trt", "config.json"),
    ({"hf_quant_config.json": {"producer": {"name": "modelopt"},
                               "quantization": {"quant_algo": "FP8"}},
      "config.json": {"model_type": "llama"}}, "fp8", 8, "modelopt", "hf_quant_config.json"),
])
def test_config_files_state_the_format(files, method, bits, fmt, source):
    found = detect_from_files(files)
    assert found is not None
    assert (found.method, found.bits, found.format, found.source) == (method, bits, fmt, source)


def test_files_win_over_the_name_both_ways():
    awq = {"config.json": {"model_type": "llama",
                           "quantization_config": {"quant_method": "awq", "bits": 4}}}
    assert detect_prequantized("org/plain-model", awq).method == "awq"
    # A checkpoint whose config has no quantization section is plain, whatever the path says.
    plain = {"config.json": {"model_type": "llama"}}
    assert detect_prequantized("/exports/was-gptq-now-merged", plain) is None
    assert detect_prequantized("org/model-gptq", {}).method == "gptq"
    assert detect_prequantized("org/model-gptq", None).method == "gptq"


def test_an_unquantized_trt_checkpoint_or_engine_is_not_pre_quantized():
    assert detect_from_files({"config.json": {"architecture": "LlamaForCausalLM",
                                              "quantization": {"quant_algo": None}}}) is None
    assert from_trt_quant_algo("NO_QUANT", "config.json") is None
    assert from_trt_quant_algo(None, "config.json") is None


def test_read_quant_files_returns_only_the_json_objects_that_exist(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "awq_metadata.json").write_text(json.dumps({"scheme": "W4A16"}))
    (tmp_path / "quant_config.json").write_text("[1, 2]")  # not an object: left out
    (tmp_path / "quantization_config.json").write_text("{broken")
    assert read_quant_files(tmp_path) == {"config.json": {"model_type": "llama"},
                                          "awq_metadata.json": {"scheme": "W4A16"}}
    assert read_quant_files(tmp_path / "missing") == {}
    assert read_quant_files("Qwen/Qwen3-8B") == {}


# ------------------------------------------------------------------ MoE


@pytest.mark.parametrize("name, moe", [
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", True),
    ("cpatonn/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit", True),
    ("qwen3-30b-a3b", True),
    ("Qwen/Qwen3-235B-A22B", True),
    ("baidu/ERNIE-4.5-21B-A3B-PT", True),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", True),
    ("deepseek-ai/DeepSeek-V2-Lite-Chat", True),
    ("deepseek-ai/DeepSeek-V3", True),
    ("allenai/OLMoE-1B-7B-0924", True),
    ("microsoft/Phi-3.5-MoE-instruct", True),
    ("SicariusSicariiStuff/Impish_Nemo_12B", False),
    ("meta-llama/Llama-3.1-8B-Instruct", False),
    ("org/model-a3", False),
    ("org/Llama-3B-abc", False),
])
def test_moe_from_the_name(name, moe):
    assert detect_moe(name) is moe


@pytest.mark.parametrize("config, moe", [
    ({"model_type": "qwen3_moe", "num_experts": 128}, True),
    ({"model_type": "mixtral", "num_local_experts": 8}, True),
    ({"model_type": "deepseek_v3", "n_routed_experts": 256}, True),
    ({"model_type": "ernie4_5_moe", "moe_num_experts": 64}, True),
    ({"model_type": "some_new_arch", "num_experts": 16}, True),
    ({"architecture": "MixtralForCausalLM", "moe": {"num_experts": 8, "top_k": 2}}, True),
    ({"model_type": "llava", "text_config": {"model_type": "mixtral"}}, True),
    ({"model_type": "ernie4_5"}, False),
    ({"model_type": "qwen2", "num_experts": 0}, False),
    ({"model_type": "llama"}, False),
])
def test_moe_from_config(config, moe):
    assert moe_from_config(config) is moe


def test_config_overrides_the_name_for_moe():
    # ERNIE-4.5-0.3B carries an MoE name marker but is dense; its config says so.
    assert detect_moe("baidu/ERNIE-4.5-0.3B-PT", {"model_type": "ernie4_5"}) is False
    assert detect_moe("baidu/ERNIE-4.5-0.3B-PT", None) is True
    assert detect_moe("org/plain", {"model_type": "qwen3_moe"}) is True
    assert moe_from_config({}) is None


# ------------------------------------------------------------------ selection: on the fly


@pytest.mark.parametrize("engine, requested, gpu, method, arg, note", [
    # vLLM: 8bit is FP8, W8A8 on L40S/H100 and W8A16 on A100.
    ("vllm", "8bit", H100, "fp8", "fp8", "W8A8"),
    ("vllm", "8bit", L40S, "fp8", "fp8", "W8A8"),
    ("vllm", "8-bit", A100, "fp8", "fp8", "W8A16: FP8 weights, 16-bit compute"),
    ("vllm", "fp8", A100, "fp8", "fp8", "W8A16: FP8 weights, 16-bit compute"),
    # TRT: 4bit INT4-AWQ everywhere; 8bit FP8 on sm89/sm90, INT8-SQ on sm80.
    ("trt", "4bit", H100, "int4_awq", "W4A16_AWQ", "W4A16_AWQ"),
    ("trt", "4bit", A100, "int4_awq", "W4A16_AWQ", "W4A16_AWQ"),
    ("trt", "awq", L40S, "int4_awq", "W4A16_AWQ", "W4A16_AWQ"),
    ("trt", "8bit", H100, "fp8", "FP8", "FP8"),
    ("trt", "8bit", L40S, "fp8", "FP8", "FP8"),
    ("trt", "8bit", A100, "int8_sq", "W8A8_SQ_PER_CHANNEL", "W8A8_SQ_PER_CHANNEL"),
    ("trt", "8bit", (8, 6), "int8_sq", "W8A8_SQ_PER_CHANNEL", "W8A8_SQ_PER_CHANNEL"),
    ("trt", "int8_sq", H100, "int8_sq", "W8A8_SQ_PER_CHANNEL", "W8A8_SQ_PER_CHANNEL"),
    ("trt", "FP8", H100, "fp8", "FP8", "FP8"),
    ("trt", "8bit", (10, 0), "fp8", "FP8", "FP8"),
])
def test_on_the_fly_formats_follow_the_gpu(engine, requested, gpu, method, arg, note):
    plan = select_quantization(engine, requested, gpu)
    assert (plan.method, plan.engine_arg, plan.note, plan.prequantized) == (method, arg, note,
                                                                            False)


def test_vllm_4bit_needs_an_awq_export_first():
    plan = select_quantization("vllm", "4bit", H100)
    assert (plan.method, plan.bits, plan.engine_arg, plan.needs_export) == ("awq", 4, None, True)
    assert "llmcompressor" in plan.describe()


@pytest.mark.parametrize("engine", ["vllm", "trt", "hf"])
@pytest.mark.parametrize("requested", ["", "none", "None", " none "])
def test_no_quantization_requested_on_a_plain_model(engine, requested):
    gpu = H100 if engine == "trt" else CPU
    plan = select_quantization(engine, requested, gpu)
    assert (plan.method, plan.bits, plan.engine_arg, plan.prequantized) == ("none", 16, None,
                                                                            False)


def test_trt_moe_takes_the_dense_formats():
    """MoE follows INT4-AWQ / FP8 / INT8-SQ like dense models (not "FP8 only")."""
    for requested, gpu, method in [("4bit", H100, "int4_awq"), ("8bit", H100, "fp8"),
                                   ("8bit", A100, "int8_sq")]:
        plan = plan_quantization("trt", "Qwen/Qwen3-30B-A3B-Instruct-2507", requested, gpu)
        assert (plan.method, plan.moe) == (method, True)
        assert "MoE model" in plan.describe()


# ------------------------------------------------------------------ selection: pre-quantized


@pytest.mark.parametrize("engine, model, requested, gpu, method", [
    ("vllm", "SicariusSicariiStuff/Impish_Nemo_12B_GPTQ_4-bit-64", "", H100, "gptq"),
    # 4bit with a GPTQ repo: GPTQ, not an AWQ export.
    ("vllm", "SicariusSicariiStuff/Impish_Nemo_12B_GPTQ_4-bit-64", "4bit", A100, "gptq"),
    ("vllm", "SicariusSicariiStuff/Impish_Nemo_12B_GPTQ_4-bit-32", "gptq", A100, "gptq"),
    ("vllm", "cpatonn/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit", "", H100, "awq"),
    ("vllm", "cpatonn/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit", "awq", H100, "awq"),
    ("vllm", "cpatonn/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit", "none", H100, "awq"),
    ("vllm", "Qwen/Qwen3-4B-Instruct-2507-FP8", "8bit", A100, "fp8"),
    ("vllm", "yapwithai/impish-12b-awq", "", CPU, "awq"),
    ("hf", "yapwithai/impish-12b-awq", "", CPU, "awq"),
    ("trt", "yapwithai/impish-12b-trt-awq", "", H100, "int4_awq"),
    ("trt", "yapwithai/impish-12b-trt-awq", "4bit", A100, "int4_awq"),
    ("trt", "org/model-trt-fp8", "8bit", H100, "fp8"),
    ("trt", "org/model-trt-int8", "", A100, "int8_sq"),
    ("trt", "org/model-trt-8bit", "", H100, "8bit"),
])
def test_a_pre_quantized_model_runs_as_it_is(engine, model, requested, gpu, method):
    plan = plan_quantization(engine, model, requested, gpu)
    assert (plan.method, plan.prequantized, plan.engine_arg, plan.needs_export) == (
        method, True, None, False)
    assert plan.describe().startswith(f"{engine} quantization: {method}")
    assert "pre-quantized" in plan.describe() and "from the model name" in plan.describe()


def test_a_trt_8bit_checkpoint_of_unknown_kind_says_the_checkpoint_decides():
    plan = plan_quantization("trt", "org/model-trt-8bit", "", H100)
    assert "fp8 or int8_sq, as the checkpoint says" in plan.describe()


def test_an_fp8_checkpoint_on_a100_runs_w8a16_in_vllm():
    plan = plan_quantization("vllm", "Qwen/Qwen3-4B-Instruct-2507-FP8", "", A100)
    assert plan.note == "W8A16: FP8 weights, 16-bit compute"


# ------------------------------------------------------------------ KV cache dtype


@pytest.mark.parametrize("engine, model, requested, gpu, kv_dtype, expected", [
    # auto -> fp8_e5m2 on H100/L40S, 16-bit ("auto") on A100 and in 4-bit mode.
    ("vllm", "org/plain", "", H100, "auto", "fp8_e5m2"),
    ("vllm", "org/plain", "8bit", L40S, "auto", "fp8_e5m2"),
    ("vllm", "org/plain", "8bit", A100, "auto", "auto"),
    ("vllm", "org/plain", "", CPU, "auto", "auto"),
    ("vllm", "org/plain-gptq", "", H100, "auto", "auto"),
    ("vllm", "org/plain", "4bit", H100, "auto", "auto"),
    ("vllm", "org/plain", "", A100, "fp8", "fp8"),
    ("vllm", "org/plain", "", H100, "FP8_E4M3", "fp8_e4m3"),
    ("vllm", "org/plain", "", H100, "", "fp8_e5m2"),
    ("trt", "org/plain", "", H100, "auto", "auto"),
    ("trt", "org/plain", "4bit", H100, "fp8", "fp8"),
    ("trt", "org/plain", "8bit", A100, "int8", "int8"),
    ("hf", "org/plain", "", CPU, "auto", "auto"),
])
def test_kv_cache_dtype(engine, model, requested, gpu, kv_dtype, expected):
    plan = plan_quantization(engine, model, requested, gpu, kv_dtype=kv_dtype)
    assert plan.kv_cache_dtype == expected
    assert plan.describe().endswith(f"KV cache {expected}")


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("engine, model, requested, gpu, kv_dtype, message", [
    ("vllm", "org/plain", "3bit", H100, "auto",
     r"QUANTIZATION='3bit' is not known to engine vllm; use one of: none, 4bit, 4-bit, 8bit, "
     r"8-bit, awq, gptq, fp8, int8"),
    ("trt", "org/plain", "gptq", H100, "auto", r"not known to engine trt"),
    ("vllm", "org/plain", "int8_sq", H100, "auto", r"not known to engine vllm"),
    ("hf", "org/plain", "4bit", CPU, "auto",
     r"engine hf runs the model as it is; QUANTIZATION=4bit needs engine vllm or trt"),
    ("hf", "org/plain", "awq", CPU, "auto", r"not known to engine hf"),
    ("hf", "org/plain", "", CPU, "fp8", r"engine hf keeps its KV cache in the model dtype"),
    ("trt", "org/plain", "", CPU, "auto", r"engine trt needs an NVIDIA GPU"),
    ("trt", "org/plain", "4bit", CPU, "auto", r"engine trt needs an NVIDIA GPU"),
    ("trt", "org/plain", "fp8", A100, "auto",
     r"QUANTIZATION=fp8 needs sm89/sm90 \(L40S/H100\); this GPU is sm80: use 8bit"),
    ("trt", "org/plain", "8bit", T4, "auto", r"8-bit TensorRT-LLM formats need sm80\+.*sm75"),
    ("vllm", "org/plain", "8bit", T4, "auto", r"FP8 in vLLM needs sm80\+.*this GPU is sm75"),
    ("vllm", "org/plain", "8bit", CPU, "auto", r"QUANTIZATION=8bit needs an NVIDIA GPU"),
    ("vllm", "org/plain", "4bit", CPU, "auto", r"QUANTIZATION=4bit needs an NVIDIA GPU"),
    ("vllm", "org/plain", "4bit", (7, 0), "auto", r"AWQ 4-bit kernels need sm75\+"),
    ("vllm", "org/plain", "gptq", H100, "auto", r"needs a pre-quantized GPTQ model"),
    ("vllm", "org/plain", "int8", H100, "auto", r"vLLM cannot quantize to INT8 while loading"),
    # Pre-quantized conflicts: the model cannot be re-quantized.
    ("vllm", "cpatonn/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit", "8bit", H100, "auto",
     r"the model is already quantized \(awq, 4-bit, from the model name\); QUANTIZATION=8bit "
     r"cannot re-quantize it: unset QUANTIZATION"),
    ("vllm", "SicariusSicariiStuff/Impish_Nemo_12B_GPTQ_4-bit-64", "awq", H100, "auto",
     r"already quantized \(gptq, 4-bit"),
    ("vllm", "Qwen/Qwen3-4B-Instruct-2507-FP8", "4bit", H100, "auto",
     r"already quantized \(fp8, 8-bit"),
    ("trt", "org/model-trt-fp8", "int8_sq", H100, "auto", r"already quantized \(fp8, 8-bit"),
    ("trt", "yapwithai/impish-12b-trt-awq", "8bit", H100, "auto", r"already quantized"),
    # Formats the engine cannot load.
    ("vllm", "yapwithai/impish-12b-trt-awq", "", H100, "auto",
     r"is a TensorRT-LLM checkpoint .*engine vllm cannot load it: use engine trt"),
    ("hf", "org/model-trt-fp8", "", CPU, "auto", r"engine hf cannot load it"),
    ("trt", "cpatonn/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit", "", H100, "auto",
     r"pre-quantized for vLLM/transformers .*use engine vllm"),
    ("trt", "SicariusSicariiStuff/Impish_Nemo_12B_GPTQ_4-bit-64", "4bit", H100, "auto",
     r"pre-quantized for vLLM/transformers"),
    # Architecture floors for pre-quantized FP8.
    ("trt", "org/model-trt-fp8", "", A100, "auto", r"FP8 weights .* need sm89\+; this GPU is sm80"),
    ("vllm", "Qwen/Qwen3-4B-Instruct-2507-FP8", "", T4, "auto", r"need sm80\+; this GPU is sm75"),
    # KV cache dtypes.
    ("vllm", "org/plain", "", H100, "int8", r"vLLM has no INT8 KV cache"),
    ("vllm", "org/plain", "", H100, "fp4", r"KV_DTYPE='fp4' is not known"),
    ("trt", "org/plain", "", H100, "fp8_e5m2", r"TensorRT-LLM's FP8 KV cache is e4m3"),
    ("trt", "org/plain", "4bit", A100, "fp8", r"an FP8 KV cache needs sm89/sm90"),
    ("trt", "yapwithai/impish-12b-trt-awq", "", H100, "fp8",
     r"KV_DTYPE=fp8 cannot change a pre-quantized TensorRT-LLM checkpoint"),
])
def test_invalid_combinations_raise_one_line_operator_errors(engine, model, requested, gpu,
                                                             kv_dtype, message):
    with pytest.raises(QuantizationError, match=message) as err:
        plan_quantization(engine, model, requested, gpu, kv_dtype=kv_dtype)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_modelopt_checkpoints_load_in_vllm_and_trt_but_not_hf():
    pq = PreQuantized("fp8", 8, "fp8", "modelopt", "hf_quant_config.json")
    assert select_quantization("vllm", "", H100, pq).method == "fp8"
    assert select_quantization("trt", "8bit", H100, pq).method == "fp8"
    with pytest.raises(QuantizationError, match="ModelOpt checkpoint"):
        select_quantization("hf", "", CPU, pq)


def test_unknown_engine_is_an_error():
    with pytest.raises(QuantizationError, match="unknown engine 'llama'"):
        select_quantization("llama", "", H100)


def test_describe_is_one_line_naming_engine_method_gpu_and_kv():
    plan = plan_quantization("trt", "SicariusSicariiStuff/Impish_Nemo_12B", "8bit", A100)
    assert plan.describe() == ("trt quantization: int8_sq (W8A8_SQ_PER_CHANNEL), quantized for "
                               "the engine build, on sm80, from QUANTIZATION=8bit, KV cache auto")
    plan = plan_quantization("vllm", "org/plain", "", None)
    assert plan.describe() == "vllm quantization: no quantization, on CPU, KV cache auto"
