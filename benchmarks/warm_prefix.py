"""Does ``warm_persona`` pay off? Time to first token of a turn whose (long, never seen)
persona was warmed first, against one whose persona is cold, through the whole stack.

    python benchmarks/warm_prefix.py [--trials 12] [--persona-sentences 16]

Each trial uses a persona no earlier request used (a unique first line), so a cold turn
must prefill all of it, and a warmed turn finds it in the engine's prefix cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from supervisor.sandbox import Stack, default_config, open_client  # noqa: E402

SENTENCE = ("You are a patient ship's captain who speaks in short, warm sentences and "
            "remembers every port you ever sailed to. ")


async def ttft(ws, session: str, persona: str) -> float:
    t0 = time.perf_counter()
    await ws.send(json.dumps({"type": "start", "session_id": session, "chat_prompt": persona,
                              "user_utterance": "where should we sail next?",
                              "sampling": {"sanitize_output": False}}))
    first = None
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "token" and first is None:
            first = time.perf_counter() - t0
        elif frame["type"] in ("done", "error"):
            if frame["type"] == "error":
                raise RuntimeError(frame)
            return first or 0.0


async def measure(url: str, trials: int, sentences: int) -> tuple[list[float], list[float], int]:
    cold, warm, tokens = [], [], 0
    async with await open_client(url) as ws:
        for i in range(trials):
            persona = f"Voyage {i}-cold. " + SENTENCE * sentences
            cold.append(await ttft(ws, f"cold-{i}", persona))
            persona = f"Voyage {i}-warm. " + SENTENCE * sentences
            await ws.send(json.dumps({"type": "warm_persona", "session_id": f"warm-{i}",
                                      "chat_prompt": persona}))
            warmed = json.loads(await ws.recv())
            if warmed["type"] != "warmed":
                raise RuntimeError(warmed)
            tokens = warmed["prompt_tokens"]
            warm.append(await ttft(ws, f"warm-{i}", persona))
    return cold, warm, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--persona-sentences", type=int, default=16)
    args = parser.parse_args()
    stack = Stack(config_text=default_config(1, 0),
                  env={"DEPLOY_MODE": "chat", "CHAT_MAX_OUT": "8",
                       "CHAT_PROMPT_UPDATE_MAX_PER_WINDOW": "0"})
    stack.start()
    try:
        asyncio.run(measure(stack.url, 1, 1))  # first-connection costs out of the numbers
        cold, warm, tokens = asyncio.run(measure(stack.url, args.trials, args.persona_sentences))
    finally:
        stack.stop()
    print(f"\nbuiltin:tiny-chat (hf engine), persona of {tokens} tokens, {args.trials} trials")
    print(f"{'turn':<14} {'TTFT p50 ms':>12} {'TTFT max ms':>12}")
    for name, xs in (("cold persona", cold), ("warmed persona", warm)):
        ms = [x * 1000 for x in xs]
        print(f"{name:<14} {statistics.median(ms):>12.1f} {max(ms):>12.1f}")


if __name__ == "__main__":
    main()
