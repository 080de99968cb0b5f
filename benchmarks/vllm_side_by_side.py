"""One model, the same prompts, three ways to serve it with vLLM, side by side in one run:

1. vLLM's ``AsyncLLM`` called in-process (the floor: no transport at all);
2. this stack with the ``vllm`` engine, over WebSocket (front -> broker -> worker -> back);
3. vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``), streaming
   ``/v1/completions`` over HTTP.

    python benchmarks/vllm_side_by_side.py [--turns 4] [--max-tokens 64] [--concurrency 1 8 32]

Run it with the project's python; the vLLM phases run in ``.venv-vllm`` (scripts/vllm-venv.sh),
as the stack's chat worker does. Prints time to first token (p50/p95, ms) and streamed tokens/s
(all sessions together) per concurrency. Phases run one after another, never sharing CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import PromptLimits, render_prompt  # noqa: E402
from prompts import PERSONA, UTTERANCES  # noqa: E402

Samples = list[tuple[float, int]]  # (time to first token in s, tokens streamed) per turn


def utterance(session: int, turn: int) -> str:
    return UTTERANCES[(session + turn) % len(UTTERANCES)]


def row(samples: Samples, wall_s: float) -> tuple[float, float, float]:
    ttfts = sorted(t * 1000 for t, _ in samples)
    p95 = ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]
    return statistics.median(ttfts), p95, sum(n for _, n in samples) / wall_s


async def sessions(run_turn, concurrency: int, turns: int) -> tuple[Samples, float]:
    async def session(index: int) -> Samples:
        return [await run_turn(index, turn) for turn in range(turns)]

    t0 = time.perf_counter()
    per = await asyncio.gather(*(session(i) for i in range(concurrency)))
    return [s for ss in per for s in ss], time.perf_counter() - t0


# ------------------------------------------------------------------ phase 1: in-process


async def engine_phase(model: str, levels: list[int], turns: int, max_tokens: int) -> dict:
    from pipeline import Sampling
    from workers.config import VllmOptions, WorkerConfig
    from workers.engines.vllm import VllmChatEngine

    engine = VllmChatEngine(WorkerConfig(name="bench", kind="chat", model=model, capacity=max(levels),
                                         vllm=VllmOptions(cache_reset_interval_s=0)))
    await engine.start()
    limits = PromptLimits()
    ids = iter(range(1 << 30))

    async def run_turn(index: int, turn: int) -> tuple[float, int]:
        t0 = time.perf_counter()  # rendering the prompt is part of a turn, as in the worker
        prompt = render_prompt(engine.tokenizer, PERSONA, "", utterance(index, turn), limits)
        first, tokens = None, 0
        async for step in engine.generate(f"b-{next(ids)}", prompt, max_tokens, Sampling()):
            if first is None and step.text:
                first = time.perf_counter() - t0
            tokens += step.tokens
        return first or 0.0, tokens

    try:
        await sessions(run_turn, 1, 1)  # warm-up
        return {c: await sessions(run_turn, c, turns) for c in levels}
    finally:
        await engine.close()


# ------------------------------------------------------------------ phase 3: vLLM's server


async def server_phase(model: str, levels: list[int], turns: int, max_tokens: int) -> dict:
    import aiohttp
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    limits = PromptLimits()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
         "--port", str(port), "--max-model-len", "5760", "--enable-prefix-caching",
         "--max-num-seqs", str(max(levels)),
         # eager, as the worker runs vLLM on a CPU by default (and the in-process phase)
         "--enforce-eager"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 300
            while True:
                try:
                    async with http.get(f"{url}/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("vLLM's server did not come up")
                await asyncio.sleep(0.5)

            async def run_turn(index: int, turn: int) -> tuple[float, int]:
                t0 = time.perf_counter()
                prompt = render_prompt(tokenizer, PERSONA, "", utterance(index, turn), limits)
                body = {"model": model, "prompt": prompt, "max_tokens": max_tokens,
                        "stream": True, "stream_options": {"include_usage": True}}
                first, tokens = None, 0
                async with http.post(f"{url}/v1/completions", json=body) as r:
                    async for line in r.content:
                        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                            continue
                        chunk = json.loads(line[6:])
                        if chunk.get("usage"):
                            tokens = chunk["usage"]["completion_tokens"]
                        if first is None and chunk["choices"] and chunk["choices"][0]["text"]:
                            first = time.perf_counter() - t0
                return first or 0.0, tokens

            await sessions(run_turn, 1, 1)
            return {c: await sessions(run_turn, c, turns) for c in levels}
    finally:
        server.terminate()
        server.wait(60)


# ------------------------------------------------------------------ phase 2: this stack


def stack_phase(python: str, levels: list[int], turns: int, max_tokens: int) -> dict:
    from supervisor.sandbox import MODEL_CACHE, Stack, open_client

    config = "\n".join([
        "[supervisor]", f'model_cache = "{MODEL_CACHE}"', "start_timeout_s = 300", "",
        "[[workers]]", 'name = "chat-0"', 'kind = "chat"', 'engine = "vllm"',
        'model = "builtin:tiny-chat"', f'python = "{python}"', f"capacity = {max(levels)}", "",
        "[workers.vllm]", "cache_reset_interval_s = 0", ""])
    stack = Stack(config_text=config, env={"CHAT_MAX_OUT": str(max_tokens), "DEPLOY_MODE": "chat"})
    stack.start()

    async def run(concurrency: int, turns: int) -> tuple[Samples, float]:
        clients = [await open_client(stack.url) for _ in range(concurrency)]

        async def run_turn(index: int, turn: int) -> tuple[float, int]:
            ws = clients[index]
            t0 = time.perf_counter()
            # Raw tokens: the sanitizer holds back half words, which would count engine
            # steps as transport time.
            await ws.send(json.dumps({"type": "start", "session_id": f"bench-{index}",
                                      "user_utterance": utterance(index, turn),
                                      "sampling": {"sanitize_output": False}}))
            first = None
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "token" and first is None:
                    first = time.perf_counter() - t0
                elif frame["type"] == "done":
                    return first or 0.0, frame["usage"]["completion_tokens"]
                elif frame["type"] == "error":
                    raise RuntimeError(f"turn failed: {frame}")

        try:
            return await sessions(run_turn, concurrency, turns)
        finally:
            for ws in clients:
                await ws.close()

    try:
        asyncio.run(run(1, 1))
        return {c: asyncio.run(run(c, turns)) for c in levels}
    finally:
        stack.stop()


# ------------------------------------------------------------------ driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_vllm_venv(python: str, phase: str, args: argparse.Namespace) -> dict:
    """Run one phase in the vLLM virtualenv; it prints its results as JSON on the last line."""
    cmd = [python, __file__, "--phase", phase, "--turns", str(args.turns), "--max-tokens",
           str(args.max_tokens), "--concurrency", *map(str, args.concurrency)]
    # vLLM's own server gets what the vllm engine sets for itself on a CPU (vllm_args.engine_env).
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"phase {phase} failed ({done.returncode}); rerun it alone: {' '.join(cmd)}")
    return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=4, help="turns per session")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--phase", choices=("engine", "server"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase is not None:  # inside the vLLM venv
        from workers.builtin_models import resolve_model

        from supervisor.sandbox import MODEL_CACHE
        model = resolve_model("builtin:tiny-chat", MODEL_CACHE)
        phase = engine_phase if args.phase == "engine" else server_phase
        results = asyncio.run(phase(model, args.concurrency, args.turns, args.max_tokens))
        print(json.dumps(results))
        return

    from supervisor.sandbox import build_models
    build_models()
    results = {
        "vLLM AsyncLLM in-process": in_vllm_venv(args.vllm_python, "engine", args),
        "this stack (vllm), WS": stack_phase(args.vllm_python, args.concurrency, args.turns,
                                             args.max_tokens),
        "vLLM OpenAI server, HTTP": in_vllm_venv(args.vllm_python, "server", args),
    }
    print(f"\nbuiltin:tiny-chat on vLLM {args.max_tokens} tokens per reply, {args.turns} turns "
          f"per session, {os.cpu_count()} CPUs")
    print(f"{'path':<26} {'sessions':>8} {'TTFT p50 ms':>12} {'TTFT p95 ms':>12} {'tokens/s':>10}")
    for level in args.concurrency:
        for name, by_level in results.items():
            samples, wall = by_level[level]
            p50, p95, tps = row([tuple(s) for s in samples], wall)
            print(f"{name:<26} {level:>8} {p50:>12.1f} {p95:>12.1f} {tps:>10.0f}")


if __name__ == "__main__":
    main()
