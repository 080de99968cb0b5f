"""Engine settings in the stack config: the single-process servers' env vars, GPU fractions, a
worker's own interpreter, and the TensorRT-LLM reply budget."""

from __future__ import annotations

import sys

import pytest

from supervisor.children import child_specs
from supervisor.config import ConfigError, apply_env, load_config, resolve

BASE = {"TEXT_API_KEY": "k"}


def write(tmp_path, workers: str, extra: str = ""):
    path = tmp_path / "supervisor.toml"
    path.write_text(f'[supervisor]\nrun_dir = "run"\n{extra}\n{workers}')
    return path


CHAT_TOOL = '''
[[workers]]
name = "chat-0"
kind = "chat"
model = "m"
device = "{chat}"

[[workers]]
name = "tool-0"
kind = "tool"
model = "t"
device = "{tool}"
'''


def stack(tmp_path, env=None, chat="cuda:0", tool="cuda:0", workers=None):
    path = write(tmp_path, workers or CHAT_TOOL.format(chat=chat, tool=tool))
    return resolve(apply_env(load_config(path), {**BASE, **(env or {})}))


def test_default_gpu_split_is_70_20_on_a_shared_gpu_and_90_alone(tmp_path):
    shared = stack(tmp_path)
    assert [w.gpu_frac for w in shared.workers] == [0.70, 0.20]
    alone = stack(tmp_path, chat="cuda:0", tool="cuda:1")
    assert [w.gpu_frac for w in alone.workers] == [0.90, 0.90]
    cpu = stack(tmp_path, chat="cpu", tool="cpu")
    assert [w.gpu_frac for w in cpu.workers] == [0.0, 0.0]


def test_gpu_frac_env_vars_and_the_one_gpu_budget(tmp_path):
    cfg = stack(tmp_path, {"CHAT_GPU_FRAC": "0.8", "TOOL_GPU_FRAC": "0.15"})
    assert [w.gpu_frac for w in cfg.workers] == [0.8, 0.15]
    with pytest.raises(ConfigError, match=r"GPU 0: gpu_frac of chat-0, tool-0 adds up to 1.10"):
        stack(tmp_path, {"CHAT_GPU_FRAC": "0.9", "TOOL_GPU_FRAC": "0.2"})
    with pytest.raises(ConfigError, match=r"CHAT_GPU_FRAC='1.5': expected a number in \[0.01, 1\]"):
        stack(tmp_path, {"CHAT_GPU_FRAC": "1.5"})


def test_engine_env_vars_reach_the_chat_workers_only(tmp_path):
    cfg = stack(tmp_path, {
        "CHAT_MAX_LEN": "4096", "QUANTIZATION": "8BIT", "KV_DTYPE": "fp8", "ENFORCE_EAGER": "1",
        "CACHE_RESET_INTERVAL_SECONDS": "0", "TRTLLM_ENGINE_DIR": "/engines/x",
        "TRT_MAX_BATCH_SIZE": "32", "TRT_BATCH_SIZE": "16", "TRT_DTYPE": "bfloat16",
        "TRT_KV_FREE_GPU_FRAC": "0.6", "TRT_KV_ENABLE_BLOCK_REUSE": "0", "STREAM_FLUSH_MS": "15"})
    chat, tool = cfg.workers
    assert (chat.max_model_len, chat.quantization, chat.kv_dtype) == (4096, "8bit", "fp8")
    assert chat.stream_flush_ms == 15 and tool.stream_flush_ms == 0
    assert chat.vllm.enforce_eager is True and chat.vllm.cache_reset_interval_s == 0
    assert (chat.trt.engine_dir, chat.trt.max_batch_size, chat.trt.batch_size) == ("/engines/x", 32, 16)
    assert (chat.trt.dtype, chat.trt.kv_free_gpu_frac, chat.trt.kv_block_reuse) == ("bfloat16", 0.6, False)
    assert tool.max_model_len == 5760 and tool.quantization == "" and tool.vllm.enforce_eager is None


@pytest.mark.parametrize("var, value, message", [
    ("KV_DTYPE", "fp4", "KV_DTYPE='fp4': expected one of auto, fp8, fp8_e5m2, fp8_e4m3, int8"),
    ("TRT_DTYPE", "int4", "TRT_DTYPE='int4': expected one of float16, bfloat16, float32"),
    ("TRT_MAX_BATCH_SIZE", "0", "TRT_MAX_BATCH_SIZE='0': expected an integer in [1, 65536]"),
    ("ENFORCE_EAGER", "maybe", "ENFORCE_EAGER='maybe': expected 1/0 or true/false"),
    ("CHAT_MAX_LEN", "lots", "CHAT_MAX_LEN='lots': expected an integer"),
    ("STREAM_FLUSH_MS", "-1", "STREAM_FLUSH_MS='-1': expected a number in [0, 1000]"),
])
def test_bad_engine_env_values_are_one_line_errors(tmp_path, var, value, message):
    with pytest.raises(ConfigError) as info:
        stack(tmp_path, {var: value})
    assert str(info.value) == message


def test_trt_reply_budget_defaults_to_the_fronts(tmp_path):
    assert stack(tmp_path, {"CHAT_MAX_OUT": "150"}).workers[0].trt.max_output_len == 150
    assert stack(tmp_path, {"CHAT_MAX_OUT": "150", "TRT_MAX_OUTPUT_LEN": "90"}).workers[0].trt.max_output_len == 90


def test_a_worker_runs_with_its_own_interpreter(tmp_path):
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    workers = CHAT_TOOL.format(chat="cpu", tool="cpu").replace(
        'model = "m"', 'model = "m"\nengine = "vllm"\npython = "venv/bin/python"')
    cfg = stack(tmp_path, workers=workers)
    assert cfg.workers[0].python == str(venv_python)
    argv = {spec.name: spec.argv(tmp_path / "c.json") for spec in child_specs(cfg)}
    assert argv["chat-0"][0] == str(venv_python)
    assert argv["tool-0"][0] == sys.executable and argv["broker"][0] == sys.executable


def test_a_missing_interpreter_is_a_config_error(tmp_path):
    workers = CHAT_TOOL.format(chat="cpu", tool="cpu").replace(
        'model = "m"', 'model = "m"\npython = "nowhere/bin/python"')
    with pytest.raises(ConfigError, match=r"chat-0: python .*nowhere/bin/python' is not an executable"):
        stack(tmp_path, workers=workers)


def test_engine_tables_in_the_file(tmp_path):
    chat_first = CHAT_TOOL.format(chat="cuda:0", tool="cuda:1").replace(
        'device = "cuda:0"\n', 'device = "cuda:0"\n\n[workers.vllm]\nmax_num_seqs = 12\n'
        'enforce_eager = true\n\n[workers.trt]\nmax_batch_size = 8\n')
    cfg = stack(tmp_path, workers=chat_first)
    assert cfg.workers[0].vllm.max_num_seqs == 12 and cfg.workers[0].vllm.enforce_eager
    assert cfg.workers[0].trt.max_batch_size == 8
    assert cfg.workers[1].vllm.max_num_seqs == 0
    with pytest.raises(ConfigError, match=r"unknown key .*max_seqs"):
        stack(tmp_path, workers=chat_first.replace("max_num_seqs", "max_seqs"))
