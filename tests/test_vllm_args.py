"""What the ``vllm`` engine asks of vLLM (pure mapping), and the error a worker without vLLM
gives. The engine itself runs in the vLLM tier (tests_vllm/, scripts/test-vllm.sh)."""

from __future__ import annotations

import importlib.util

import pytest

from broker.frames import Sampling
from workers.config import VllmOptions, WorkerConfig
from workers.engines import EngineUnavailable, engine_factory
from workers.engines.vllm_args import engine_env, engine_kwargs, finish_reason, sampling_kwargs


def chat(**overrides) -> WorkerConfig:
    return WorkerConfig(name="chat-0", kind="chat", engine="vllm", model="/models/m", **overrides)


def test_engine_kwargs_carry_the_worker_settings():
    cfg = chat(capacity=24, max_model_len=4096, dtype="bfloat16", device="cuda:1", gpu_frac=0.7,
               vllm=VllmOptions(enforce_eager=True))
    kwargs = engine_kwargs(cfg, "awq_marlin", "fp8_e5m2")
    assert kwargs["model"] == kwargs["tokenizer"] == "/models/m"
    assert kwargs["max_model_len"] == 4096
    assert kwargs["max_num_seqs"] == 24  # the broker never sends a worker more than capacity
    assert kwargs["enable_prefix_caching"] is True
    assert kwargs["gpu_memory_utilization"] == 0.7
    assert kwargs["quantization"] == "awq_marlin"
    assert kwargs["kv_cache_dtype"] == "fp8_e5m2"
    assert kwargs["enforce_eager"] is True
    assert kwargs["dtype"] == "bfloat16"
    assert kwargs["generation_config"] == "auto"  # the model's defaults, under the client's


def test_eager_by_default_on_a_cpu_compiled_on_a_gpu_unless_set():
    assert engine_kwargs(chat(device="cpu"), None, "auto")["enforce_eager"] is True
    assert engine_kwargs(chat(device="cuda:0"), None, "auto")["enforce_eager"] is False
    compiled_cpu = chat(device="cpu", vllm=VllmOptions(enforce_eager=False))
    assert engine_kwargs(compiled_cpu, None, "auto")["enforce_eager"] is False


def test_cpu_workers_size_the_kv_cache_in_gib_not_by_gpu_fraction():
    cfg = chat(vllm=VllmOptions(kv_cache_space_gib=2, max_num_seqs=4))
    kwargs = engine_kwargs(cfg, None, "auto")
    assert "gpu_memory_utilization" not in kwargs
    assert kwargs["max_num_seqs"] == 4
    assert engine_env(cfg, {}) == {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1", "VLLM_CPU_KVCACHE_SPACE": "2",
                                   "OMP_WAIT_POLICY": "PASSIVE"}


def test_engine_env_never_overrides_the_operator():
    env = engine_env(chat(), {"VLLM_CPU_KVCACHE_SPACE": "8", "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "0",
                              "OMP_WAIT_POLICY": "ACTIVE"})
    assert env == {}
    assert engine_env(chat(device="cuda:0"), {}) == {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}


def test_a_pinned_cpu_worker_keeps_vllms_threads_on_its_cores():
    assert engine_env(chat(), {}, frozenset({3, 1}))["VLLM_CPU_OMP_THREADS_BIND"] == "1,3"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in engine_env(chat(), {}, frozenset())
    assert "VLLM_CPU_OMP_THREADS_BIND" not in engine_env(chat(), {"VLLM_CPU_OMP_THREADS_BIND": "0"},
                                                         frozenset({1}))


def test_sampling_maps_every_client_knob():
    kwargs = sampling_kwargs(Sampling(temperature=0.0, top_p=0.9, top_k=-1, min_p=0.05,
                                      repetition_penalty=1.1, presence_penalty=0.2,
                                      frequency_penalty=0.3, seed=7, ignore_eos=True), 50)
    assert kwargs == {"max_tokens": 50, "temperature": 0.0, "top_p": 0.9, "top_k": 0, "min_p": 0.05,
                      "repetition_penalty": 1.1, "presence_penalty": 0.2,
                      "frequency_penalty": 0.3, "seed": 7, "ignore_eos": True}


def test_sampling_leaves_unset_knobs_to_vllm():
    assert sampling_kwargs(Sampling(), 10) == {"max_tokens": 10}
    assert sampling_kwargs(Sampling(top_k=40, top_p=0.0), 3) == {"max_tokens": 3, "top_k": 40,
                                                                  "top_p": 1e-6}


def test_the_models_generation_config_fills_what_the_client_left_unset():
    defaults = {"temperature": 0.8, "top_k": 50, "top_p": 0.95, "max_new_tokens": 200}
    kwargs = sampling_kwargs(Sampling(temperature=0.2), 16, defaults)
    assert kwargs == {"max_tokens": 16, "temperature": 0.2, "top_k": 50, "top_p": 0.95}


@pytest.mark.parametrize("reason, ours", [("stop", "stop"), ("length", "length"),
                                          ("abort", "cancelled"), (None, "stop")])
def test_finish_reasons(reason, ours):
    assert finish_reason(reason) == ours


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None,
                    reason="vLLM is installed in this interpreter")
def test_a_worker_without_vllm_names_how_to_install_it():
    with pytest.raises(EngineUnavailable) as info:
        engine_factory("chat", "vllm")(chat())
    message = str(info.value)
    assert "not installed" in message and "scripts/vllm-venv.sh" in message
    assert "textserve[vllm]" in message
