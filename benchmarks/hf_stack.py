"""The same prompts through the ``hf`` engine called in-process and through the whole stack
over WebSocket (supervisor, front, broker, worker), side by side.

    python benchmarks/hf_stack.py [--turns 6] [--max-tokens 64] [--concurrency 1 8]

Prints time to first token (p50/p95, ms) and tokens/s (all streams together) per
concurrency. The stack runs twice: chat-only (the same work as the in-process engine, so
the difference is the cost of the architecture; sanitizer off, since it holds back half
words) and with the tool model first and the sanitizer on (the product's default turn). Phases run one after another so they never share the CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import Sampling  # noqa: E402
from pipeline import PromptLimits, render_prompt  # noqa: E402
from prompts import PERSONA, UTTERANCES  # noqa: E402
from supervisor.sandbox import (  # noqa: E402
    MODEL_CACHE, Stack, build_models, default_config, open_client,
)
from workers.builtin_models import resolve_model  # noqa: E402
from workers.config import WorkerConfig  # noqa: E402


@dataclass
class Sample:
    ttft_s: float
    tokens: int


@dataclass
class Result:
    samples: list[Sample]
    wall_s: float

    def row(self) -> tuple[float, float, float]:
        ttfts = sorted(s.ttft_s * 1000 for s in self.samples)
        p95 = ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]
        return statistics.median(ttfts), p95, sum(s.tokens for s in self.samples) / self.wall_s


def prompts(n: int) -> list[str]:
    return [UTTERANCES[i % len(UTTERANCES)] for i in range(n)]


# ------------------------------------------------------------------ in-process engine


async def run_engine(model: str, concurrency: int, turns: int, max_tokens: int,
                     threads: int) -> Result:
    from workers.engines.hf import HFChatEngine

    engine = HFChatEngine(WorkerConfig(name="bench", kind="chat", model=model,
                                       torch_threads=threads))
    await engine.start()
    limits = PromptLimits()

    async def session(index: int) -> list[Sample]:
        out = []
        for turn, utterance in enumerate(prompts(turns)):
            t0 = time.perf_counter()  # rendering the prompt is part of the turn, as in a worker
            prompt = render_prompt(engine.tokenizer, PERSONA, "", utterance, limits)
            first, tokens = None, 0
            async for step in engine.generate(f"{index}-{turn}", prompt, max_tokens, Sampling()):
                if first is None and step.text:
                    first = time.perf_counter() - t0
                tokens = step.completion_tokens or tokens
            out.append(Sample(first or 0.0, tokens))
        return out

    try:
        t0 = time.perf_counter()
        per_session = await asyncio.gather(*(session(i) for i in range(concurrency)))
        return Result([s for ss in per_session for s in ss], time.perf_counter() - t0)
    finally:
        await engine.close()


# ------------------------------------------------------------------ whole stack


async def run_stack(url: str, concurrency: int, turns: int, raw: bool) -> Result:
    async def session(index: int) -> list[Sample]:
        out = []
        async with await open_client(url) as ws:
            for utterance in prompts(turns):
                t0 = time.perf_counter()
                await ws.send(json.dumps({"type": "start", "session_id": f"bench-{index}",
                                          "user_utterance": utterance,
                                          "sampling": {"sanitize_output": not raw}}))
                first, tokens = None, 0
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "token" and first is None:
                        first = time.perf_counter() - t0
                    elif frame["type"] == "done":
                        tokens = frame["usage"]["completion_tokens"]
                        break
                    elif frame["type"] == "error":
                        raise RuntimeError(f"turn failed: {frame}")
                out.append(Sample(first or 0.0, tokens))
        return out

    t0 = time.perf_counter()
    per_session = await asyncio.gather(*(session(i) for i in range(concurrency)))
    return Result([s for ss in per_session for s in ss], time.perf_counter() - t0)


def stack_results(deploy_mode: str, levels: list[int], turns: int, max_tokens: int,
                  threads: int, model: str) -> dict[int, Result]:
    config = default_config(1, 1 if deploy_mode == "both" else 0).replace(
        'engine = "hf"', f'engine = "hf"\ntorch_threads = {threads}\ncpus = "none"'  # as in-process
    ).replace('model = "builtin:tiny-chat"', f'model = "{model}"')
    stack = Stack(config_text=config,
                  env={"CHAT_MAX_OUT": str(max_tokens), "DEPLOY_MODE": deploy_mode})
    stack.start()
    try:
        # Chat-only turns go raw: the sanitizer holds back half words, which would count
        # engine steps as transport time; the tool+chat rows are the product's default turn.
        raw = deploy_mode == "chat"
        asyncio.run(run_stack(stack.url, 1, 1, raw))  # first-connection costs out of the numbers
        return {c: asyncio.run(run_stack(stack.url, c, turns, raw)) for c in levels}
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=6, help="turns per session")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--chat-threads", type=int, default=0,
                        help="torch threads of the chat engine, both paths (0: one per CPU)")
    parser.add_argument("--model", default="builtin:tiny-chat",
                        help="the chat model of both paths: builtin:smollm2 (the default "
                             "stack's), any HF id or local directory")
    args = parser.parse_args()
    build_models()
    model = resolve_model(args.model, MODEL_CACHE)

    results: dict[str, dict[int, Result]] = {}
    results["hf in-process"] = {
        c: asyncio.run(run_engine(model, c, args.turns, args.max_tokens, args.chat_threads)) for c in args.concurrency}
    results["stack, chat raw"] = stack_results("chat", args.concurrency, args.turns,
                                                args.max_tokens, args.chat_threads, args.model)
    results["stack, tool+chat"] = stack_results("both", args.concurrency, args.turns,
                                                args.max_tokens, args.chat_threads, args.model)

    print(f"\n{args.model}, {args.max_tokens} tokens per reply, {args.turns} turns per "
          f"session, chat torch threads {args.chat_threads or 'one per CPU'}")
    print(f"{'path':<18} {'sessions':>8} {'TTFT p50 ms':>12} {'TTFT p95 ms':>12} {'tokens/s':>10}")
    for name, by_level in results.items():
        for level, result in by_level.items():
            p50, p95, tps = result.row()
            print(f"{name:<18} {level:>8} {p50:>12.1f} {p95:>12.1f} {tps:>10.0f}")


if __name__ == "__main__":
    main()
