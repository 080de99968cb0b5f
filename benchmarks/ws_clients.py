"""The WebSocket paths of the side-by-side benchmark: the same requests ``vllm bench serve``
sends over HTTP (random prompts of a fixed token length, a fixed reply length with
ignore_eos, temperature 0, one user message each), sent over this stack's Yap socket (``/ws``)
and its OpenAI Responses socket (``/v1/responses``), one connection per concurrent client,
timed the way the benchmark times HTTP: time to first text, the gaps between text messages,
output tokens/s from the usage the server reports. Returns the benchmark's result keys, so
one table holds every path.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from typing import Any

from websockets.asyncio.client import connect


def random_prompts(model_dir: str, count: int, input_len: int, seed: int = 0) -> list[str]:
    """Prompts of ``input_len`` tokens of the model's tokenizer, random tokens as vLLM's
    random dataset makes them (seeded, so every WS path sends the same ones)."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    vocab = [i for i in range(tokenizer.vocab_size) if i not in special]
    prompts = []
    for _ in range(count):
        ids = [rng.choice(vocab) for _ in range(input_len)]
        text = tokenizer.decode(ids)
        for _ in range(5):  # random ids re-encode longer: cut until the text is input_len
            again = tokenizer.encode(text, add_special_tokens=False)
            if len(again) <= input_len:
                break
            text = tokenizer.decode(again[:input_len])
        prompts.append(text)
    return prompts


async def _yap(ws: Any, prompt: str, output_len: int, index: int) -> tuple[float, list[float], int, int]:
    t0 = time.perf_counter()
    await ws.send(json.dumps({"type": "start", "session_id": f"bench-{index}",
                              "user_utterance": prompt, "persona_text": "",
                              "sampling": {"sanitize_output": False, "temperature": 0,
                                           "ignore_eos": True}}))
    arrivals: list[float] = []
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "token":
            arrivals.append(time.perf_counter())
        elif frame["type"] == "done":
            usage = frame["usage"]
            return t0, arrivals, usage["prompt_tokens"], usage["completion_tokens"]
        elif frame["type"] == "error":
            raise RuntimeError(f"turn failed: {frame}")


async def _responses(ws: Any, prompt: str, output_len: int, index: int
                     ) -> tuple[float, list[float], int, int]:
    t0 = time.perf_counter()
    await ws.send(json.dumps({"type": "response.create", "input": prompt,
                              "max_output_tokens": output_len, "temperature": 0,
                              "ignore_eos": True, "user": f"bench-{index}"}))
    arrivals: list[float] = []
    while True:
        event = json.loads(await ws.recv())
        kind = event["type"]
        if kind == "response.output_text.delta":
            arrivals.append(time.perf_counter())
        elif kind in ("response.completed", "response.incomplete"):
            usage = event["response"]["usage"]
            return t0, arrivals, usage["input_tokens"], usage["output_tokens"]
        elif kind in ("response.failed", "error"):
            raise RuntimeError(f"response failed: {event}")


CLIENTS = {"ws": ("/ws", _yap), "responses": ("/v1/responses", _responses)}


async def run(kind: str, base: str, api_key: str, prompts: list[str], concurrency: int,
              output_len: int) -> dict[str, Any]:
    """``prompts`` over ``concurrency`` connections, each taking the next prompt when its
    last one is done (as the benchmark's ``--max-concurrency``)."""
    path, turn = CLIENTS[kind]
    url = base.replace("http://", "ws://") + path
    headers = {"Authorization": f"Bearer {api_key}"}
    queue = list(enumerate(prompts))
    ttfts: list[float] = []
    itls: list[float] = []
    inputs = outputs = failed = 0

    async def client() -> None:
        nonlocal inputs, outputs, failed
        async with connect(url, additional_headers=headers, max_size=None,
                           compression=None) as ws:
            while queue:
                index, prompt = queue.pop(0)
                try:
                    t0, arrivals, n_in, n_out = await turn(ws, prompt, output_len, index)
                except RuntimeError:
                    failed += 1
                    continue
                if arrivals:
                    ttfts.append((arrivals[0] - t0) * 1000)
                    itls.extend((b - a) * 1000 for a, b in zip(arrivals, arrivals[1:]))
                inputs += n_in
                outputs += n_out

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    duration = time.perf_counter() - started
    ttfts.sort()
    return {
        "completed": len(ttfts), "failed": failed, "num_prompts": len(prompts),
        "total_input_tokens": inputs, "total_output_tokens": outputs,
        "median_ttft_ms": statistics.median(ttfts) if ttfts else 0.0,
        "p99_ttft_ms": ttfts[min(len(ttfts) - 1, round(0.99 * (len(ttfts) - 1)))] if ttfts else 0.0,
        "mean_itl_ms": statistics.fmean(itls) if itls else 0.0,
        "median_itl_ms": statistics.median(itls) if itls else 0.0,
        "output_throughput": outputs / duration,
    }
