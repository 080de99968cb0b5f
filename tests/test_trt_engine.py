"""The ``trt`` engine as far as it runs without TensorRT-LLM and a GPU: the missing-package
error, settings errors at start, sampling mapping, the token budget, streamed outputs into
``ChatStep``s and the ``LLM(...)`` arguments for each source."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

from broker.frames import Sampling
from pipeline import PromptError
from workers.config import TrtOptions, WorkerConfig
from workers.detokenizer import IncrementalDetokenizer
from workers.engines import EngineDead, EngineUnavailable, RequestFailed, engine_factory
from workers.engines import trt as trt_engine
from workers.engines.trt import (
    TrtChatEngine, TrtStream, TrtUpdate, finish_reason, llm_settings, sampling_kwargs,
    token_budget,
)
from workers.engines.trt_config import EngineBuild, plan_trt

HAS_TRT = importlib.util.find_spec("tensorrt_llm") is not None
needs_no_trt = pytest.mark.skipif(HAS_TRT, reason="TensorRT-LLM is installed here")
H100 = (9, 0)


def config(model: str = "org/chat-model", device: str = "cuda:0", **trt) -> WorkerConfig:
    worker = {k: trt.pop(k) for k in ("quantization", "kv_dtype", "max_model_len", "gpu_frac")
              if k in trt}
    return WorkerConfig(name="chat-0", kind="chat", engine="trt", model=model, device=device,
                        trt=TrtOptions(**trt), **worker)


def start_error(cfg: WorkerConfig) -> str:
    with pytest.raises(EngineUnavailable) as err:
        asyncio.run(TrtChatEngine(cfg).start())
    assert "\n" not in str(err.value)
    return str(err.value)


# ------------------------------------------------------------------ loading and start


@needs_no_trt
def test_missing_package_names_the_extra_through_the_engine_factory():
    with pytest.raises(EngineUnavailable) as err:
        engine_factory("chat", "trt")(config())
    assert "pip install 'textserve[trt]'" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(EngineUnavailable, match=r"pip install 'textserve\[trt\]'"):
        trt_engine.load_tensorrt_llm()


def test_settings_errors_surface_at_start_before_any_import():
    assert start_error(config(engine_dir="/e", checkpoint_dir="/c")).startswith(
        "TRTLLM_ENGINE_DIR=/e and TRT_CHECKPOINT_DIR=/c are both set")
    assert start_error(config()) == (
        "TRT_MAX_BATCH_SIZE is required to build a TensorRT-LLM engine from org/chat-model; set "
        "it (e.g. 32) or point TRTLLM_ENGINE_DIR at a prebuilt engine")
    assert start_error(config(max_batch_size=8, dtype="int4")).startswith("TRT_DTYPE='int4'")


def test_the_engine_dir_config_is_read_at_start(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"build_config": {"max_batch_size": 32, "max_input_len": 1024, "max_seq_len": 1280}}))
    message = start_error(config(engine_dir=str(tmp_path), batch_size=64))
    assert message.startswith("TRT_BATCH_SIZE=64 exceeds the engine's max batch size 32 "
                              "(baked in)")
    assert start_error(config(engine_dir=str(tmp_path / "nothing"))).startswith(
        f"TRTLLM_ENGINE_DIR={tmp_path / 'nothing'} has no readable config.json")


def test_a_cpu_worker_is_told_trt_needs_a_gpu():
    assert start_error(config(device="cpu", max_batch_size=8)).startswith(
        "engine trt needs an NVIDIA GPU")
    if not importlib.util.find_spec("torch") or _cuda_available():
        return
    assert start_error(config(device="cuda:0", max_batch_size=8)).endswith(
        "(device 'cuda:0' is set, but torch sees no CUDA device)")


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


@needs_no_trt
def test_with_valid_settings_and_a_gpu_the_missing_package_is_the_error(monkeypatch):
    monkeypatch.setattr(trt_engine, "gpu_capability", lambda device: H100)
    message = start_error(config(max_batch_size=8, quantization="8bit"))
    assert message.startswith("engine 'trt' needs TensorRT-LLM: pip install 'textserve[trt]'")


def test_an_unstarted_engine_is_not_alive_and_refuses_requests():
    engine = TrtChatEngine(config())
    assert engine.name == "trt" and not engine.alive()
    engine.abort("unknown")  # ignored

    async def first_step():
        async for step in engine.generate("r1", "hello", 4, Sampling()):
            return step

    with pytest.raises(EngineDead, match="TensorRT-LLM is not running"):
        asyncio.run(first_step())
    asyncio.run(engine.close())  # nothing to close


# ------------------------------------------------------------------ sampling


@pytest.mark.parametrize("sampling, expected", [
    (Sampling(), {}),
    (Sampling(temperature=0.8, top_p=0.95, top_k=40),
     {"temperature": 0.8, "top_p": 0.95, "top_k": 40}),
    # temperature 0 is greedy: TensorRT-LLM wants top_k=1, not a zero temperature
    (Sampling(temperature=0.0, top_p=0.5, top_k=40, min_p=0.1), {"top_k": 1}),
    # "off" values are left to the runtime's defaults
    (Sampling(top_k=-1, top_p=1.0, min_p=0.0), {}),
    (Sampling(min_p=0.05, repetition_penalty=1.1, presence_penalty=-0.5,
              frequency_penalty=0.25, seed=7),
     {"min_p": 0.05, "repetition_penalty": 1.1, "presence_penalty": -0.5,
      "frequency_penalty": 0.25, "seed": 7}),
    (Sampling(presence_penalty=0.0, frequency_penalty=0.0),
     {"presence_penalty": 0.0, "frequency_penalty": 0.0}),
])
def test_sampling_maps_to_trt_sampling_params(sampling, expected):
    kwargs = sampling_kwargs(sampling, 64, [2], None)
    assert kwargs == {"max_tokens": 64, "detokenize": False, "end_id": 2, "pad_id": 2,
                      **expected}


def test_every_eos_id_stops_the_request():
    kwargs = sampling_kwargs(Sampling(), 10, [128009, 128001, 128008], 0)
    assert (kwargs["end_id"], kwargs["pad_id"], kwargs["stop_token_ids"]) == (128009, 0,
                                                                             [128001, 128008])
    assert "end_id" not in sampling_kwargs(Sampling(), 10, [], None)


# ------------------------------------------------------------------ token budget


PLAN = plan_trt(config(max_batch_size=8, max_input_len=100, max_output_len=20),
                capability=H100)


def test_token_budget_keeps_within_output_and_sequence_limits():
    assert (PLAN.max_input_len, PLAN.max_output_len, PLAN.max_seq_len) == (100, 20, 120)
    assert token_budget(10, 200, PLAN) == 20  # max_output_len
    assert token_budget(10, 5, PLAN) == 5
    assert token_budget(100, 200, PLAN) == 20
    engine_plan = plan_trt(config(engine_dir="/e"), capability=H100,
                           engine=EngineBuild(8, 100, 110))
    assert token_budget(100, 50, engine_plan) == 10  # max_seq_len - prompt


def test_a_prompt_over_the_input_limit_is_a_prompt_error():
    with pytest.raises(PromptError) as err:
        token_budget(101, 10, PLAN)
    assert (err.value.code, err.value.field) == ("chat_prompt_too_long", "chat_prompt")
    assert str(err.value) == "prompt is 101 tokens; this engine takes at most 100"


# ------------------------------------------------------------------ streamed outputs


@pytest.mark.parametrize("trt_reason, finished, tokens, budget, expected", [
    (None, False, 3, 10, None),
    ("stop", True, 3, 10, "stop"),
    ("length", True, 10, 10, "length"),
    ("cancelled", True, 2, 10, "cancelled"),
    (None, True, 10, 10, "length"),
    (None, True, 4, 10, "stop"),
])
def test_finish_reason_mapping(trt_reason, finished, tokens, budget, expected):
    assert finish_reason(trt_reason, finished, tokens, budget) == expected


@pytest.mark.parametrize("trt_reason", ["timeout", "mystery"])
def test_a_timeout_or_unknown_finish_fails_the_request(trt_reason):
    with pytest.raises(RequestFailed, match=f"TensorRT-LLM ended the request with '{trt_reason}'"):
        finish_reason(trt_reason, True, 1, 10)


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_models["chat"])


def stream_for(tokenizer, budget: int = 50) -> TrtStream:
    return TrtStream(IncrementalDetokenizer(tokenizer), frozenset({tokenizer.eos_token_id}),
                     prompt_tokens=7, budget=budget)


def test_streamed_outputs_become_deltas_that_add_up_to_the_text(tokenizer):
    text = "Hello there, café ☕ — naïve 😀 done."
    ids = tokenizer.encode(text, add_special_tokens=False)
    stream = stream_for(tokenizer)
    steps = []
    chunks = [ids[i:i + 1] for i in range(len(ids))]  # one token per engine step
    for n, chunk in enumerate(chunks):
        last = n == len(chunks) - 1
        step = stream.push(TrtUpdate(chunk, "stop" if last else None, last))
        if step is not None:
            steps.append(step)
    assert "".join(s.text for s in steps) == tokenizer.decode(ids)
    assert "\ufffd" not in "".join(s.text for s in steps[:-1])
    assert sum(s.tokens for s in steps) == len(ids)
    assert [s.finish_reason for s in steps[:-1]] == [None] * (len(steps) - 1)
    final = steps[-1]
    assert (final.finish_reason, final.prompt_tokens, final.completion_tokens) == (
        "stop", 7, len(ids))
    assert stream.ended


def test_eos_ids_count_as_tokens_but_never_as_text(tokenizer):
    ids = tokenizer.encode("Hi", add_special_tokens=False)
    stream = stream_for(tokenizer)
    step = stream.push(TrtUpdate(ids + [tokenizer.eos_token_id], "stop", True))
    assert (step.text, step.tokens, step.completion_tokens) == ("Hi", len(ids) + 1, len(ids) + 1)


def test_length_finish_and_a_step_with_no_text_yet(tokenizer):
    stream = stream_for(tokenizer, budget=3)
    assert stream.push(TrtUpdate([], None, False)) is None
    ids = tokenizer.encode("abc", add_special_tokens=False)[:3]
    step = stream.push(TrtUpdate(ids, "length", True))
    assert (step.finish_reason, step.completion_tokens) == ("length", len(ids))


def test_cancelled_stream_reports_what_it_produced(tokenizer):
    stream = stream_for(tokenizer)
    ids = tokenizer.encode("Hello", add_special_tokens=False)
    first = stream.push(TrtUpdate(ids, None, False))
    assert first is not None and first.text == "Hello"
    step = stream.cancelled()
    assert (step.text, step.tokens, step.finish_reason, step.completion_tokens) == (
        "", 0, "cancelled", len(ids))
    assert stream.ended
    runtime_cancel = stream_for(tokenizer).push(TrtUpdate([], "cancelled", True))
    assert runtime_cancel.finish_reason == "cancelled"


# ------------------------------------------------------------------ LLM(...) arguments


def test_llm_settings_for_a_prebuilt_engine_set_only_the_runtime():
    plan = plan_trt(config(engine_dir="/engines/x", batch_size=16, gpu_frac=0.7),
                    capability=H100, engine=EngineBuild(32, 1024, 1280, "FP8"))
    settings = llm_settings(plan)
    assert settings.kwargs == {"model": "/engines/x", "tokenizer": "org/chat-model",
                               "max_batch_size": 16}
    assert settings.kv_cache == {"enable_block_reuse": True, "free_gpu_memory_fraction": 0.7}
    assert (settings.build, settings.quant) == (None, None)


def test_llm_settings_for_an_on_the_fly_quantized_build():
    plan = plan_trt(config(max_batch_size=32, batch_size=8, max_input_len=5525,
                           max_output_len=150, quantization="8bit", kv_dtype="fp8",
                           dtype="bfloat16", kv_block_reuse=False, device="cuda:0,1"),
                    capability=H100)
    settings = llm_settings(plan)
    assert settings.kwargs == {"model": "org/chat-model", "tokenizer": "org/chat-model",
                               "max_batch_size": 8, "tensor_parallel_size": 2,
                               "enable_build_cache": True, "dtype": "bfloat16"}
    assert settings.build == {"max_batch_size": 32, "max_input_len": 5525, "max_seq_len": 5675}
    assert settings.quant == {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}
    assert settings.kv_cache["enable_block_reuse"] is False


def test_llm_settings_for_a_trt_checkpoint_let_it_bring_dtype_and_quantization():
    plan = plan_trt(config("yapwithai/impish-12b-trt-awq", max_batch_size=32), capability=H100)
    settings = llm_settings(plan)
    assert settings.kwargs["model"] == "yapwithai/impish-12b-trt-awq"
    assert "dtype" not in settings.kwargs
    assert settings.build == {"max_batch_size": 32, "max_input_len": 5760, "max_seq_len": 5960}
    assert settings.quant is None
    plain = llm_settings(plan_trt(config(max_batch_size=4), capability=H100))
    assert plain.quant is None and plain.kwargs["dtype"] == "float16"
    awq = llm_settings(plan_trt(config(max_batch_size=4, quantization="4bit"), capability=H100))
    assert awq.quant == {"quant_algo": "W4A16_AWQ"}
