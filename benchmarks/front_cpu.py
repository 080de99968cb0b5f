"""CPU the front and the broker spend per streamed token, read from /proc over a run of
concurrent turns through a whole stack (tiny model, ``hf`` engine, chat only).

    python benchmarks/front_cpu.py [--sessions 32] [--turns 4] [--max-tokens 200] [--raw]
                                   [--protocol yap openai]

Every session streams its turns back to back; the front's and the broker's user + system
CPU time (``/proc/PID/stat``) over the run is divided by the reply tokens the engine made
(the usage's ``completion_tokens``) and by the frames the clients received: Yap ``token``
frames on ``/ws``, ``chat.completion.chunk`` text events on ``/v1/chat/completions`` (SSE).
Each protocol runs on its own, one after the other, on the same stack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from supervisor.sandbox import Stack, default_config, open_client  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def stream(url: str, sessions: int, turns: int, raw: bool) -> tuple[int, int]:
    """Every session streams ``turns`` turns back to back; (engine tokens, token frames)."""

    async def session(index: int) -> tuple[int, int]:
        tokens = frames = 0
        async with await open_client(url) as ws:
            for turn in range(turns):
                await ws.send(json.dumps({
                    "type": "start", "session_id": f"cpu-{index}", "request_id": f"{index}-{turn}",
                    "user_utterance": f"tell me a long story, number {turn}",
                    "sampling": {"sanitize_output": not raw, "temperature": 1.0}}))
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "token":
                        frames += 1
                    elif frame["type"] == "done":
                        tokens += frame["usage"]["completion_tokens"]
                        break
                    elif frame["type"] == "error":
                        raise RuntimeError(f"turn failed: {frame}")
        return tokens, frames

    counts = await asyncio.gather(*(session(i) for i in range(sessions)))
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


async def stream_openai(url: str, sessions: int, turns: int, raw: bool) -> tuple[int, int]:
    """The same turns as streamed chat completions (one keep-alive connection per session)."""
    import httpx

    from supervisor.sandbox import API_KEY
    base = url.replace("ws://", "http://").rsplit("/", 1)[0]

    async def session(index: int) -> tuple[int, int]:
        tokens = frames = 0
        async with httpx.AsyncClient(base_url=base, timeout=120,
                                     headers={"authorization": f"Bearer {API_KEY}"}) as client:
            for turn in range(turns):
                body = {"messages": [{"role": "user",
                                      "content": f"tell me a long story, number {turn}"}],
                        "stream": True, "stream_options": {"include_usage": True},
                        "temperature": 1.0, "sanitize_output": not raw, "user": f"cpu-{index}"}
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    async for line in r.aiter_lines():
                        if not line.startswith("data: {"):
                            continue
                        event = json.loads(line[6:])
                        if "error" in event:
                            raise RuntimeError(f"turn failed: {event}")
                        if event["choices"] and event["choices"][0]["delta"].get("content"):
                            frames += 1
                        if event.get("usage"):
                            tokens += event["usage"]["completion_tokens"]
        return tokens, frames

    counts = await asyncio.gather(*(session(i) for i in range(sessions)))
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


CLIENTS = {"yap": stream, "openai": stream_openai}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--turns", type=int, default=4, help="turns per session")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--raw", action="store_true", help="sanitizer off (sanitize_output false)")
    parser.add_argument("--protocol", nargs="+", choices=list(CLIENTS), default=["yap"])
    parser.add_argument("--flush-ms", type=float, default=0.0,
                        help="STREAM_FLUSH_MS: the chat worker's stream flush window")
    args = parser.parse_args()

    stack = Stack(config_text=default_config(chat_workers=1, tool_workers=0),
                       env={"CHAT_MAX_OUT": str(args.max_tokens), "DEPLOY_MODE": "chat",
                            "STREAM_FLUSH_MS": str(args.flush_ms)})
    stack.start()
    results = []
    try:
        pids = {p["name"]: p["pid"] for p in stack.status()}
        for protocol in args.protocol:
            client = CLIENTS[protocol]
            asyncio.run(client(stack.url, 1, 1, args.raw))  # first-connection costs out
            before = {name: cpu_seconds(pids[name]) for name in ("wsfront", "broker")}
            t0 = time.perf_counter()
            tokens, frames = asyncio.run(client(stack.url, args.sessions, args.turns, args.raw))
            wall = time.perf_counter() - t0
            used = {name: cpu_seconds(pids[name]) - before[name] for name in before}
            results.append((protocol, tokens, frames, wall, used))
    finally:
        stack.stop()

    print(f"\n{args.sessions} sessions x {args.turns} turns, sanitizer "
          f"{'off' if args.raw else 'on'}, STREAM_FLUSH_MS={args.flush_ms:g}")
    print(f"{'protocol':<8} {'tokens':>7} {'frames':>7} {'wall s':>7}  {'process':<10} "
          f"{'CPU s':>7} {'us/token':>9} {'us/frame':>9}")
    for protocol, tokens, frames, wall, used in results:
        for name, seconds in used.items():
            print(f"{protocol:<8} {tokens:>7} {frames:>7} {wall:>7.1f}  {name:<10} {seconds:>7.2f} "
                  f"{seconds / max(tokens, 1) * 1e6:>9.1f} {seconds / max(frames, 1) * 1e6:>9.1f}")


if __name__ == "__main__":
    main()
