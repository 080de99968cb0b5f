"""``conversation``: a fixed multi-turn script on one session, sending the growing transcript
as ``history_text`` each turn; prints every reply with its timings and prompt size, so that
history trimming and prefix-cache reuse show up across turns."""

from __future__ import annotations

import argparse
import uuid

from .connection import ClientFailure, ClientSettings, Link
from .turn import fmt_ms, percentile, printable, run_turn, start_frame, with_exchange

NAME = "conversation"
HELP = "a fixed multi-turn script with growing history_text"
SCRIPT = (
    "Hi! My name is Sam and I just got back from a week in Lisbon.",
    "The food was amazing, especially the custard tarts.",
    "What should I cook tonight to remind me of the trip?",
    "I only have tomatoes, garlic, rice and some fish.",
    "Sounds good. Do you remember which city I visited?",
    "And what is my name?",
    "I had a long day at work too, my boss kept changing plans.",
    "Tell me something kind before I go to sleep.",
    "Actually, one more thing: what was the dessert I liked?",
    "Thanks, good night!",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--turns", type=int, default=len(SCRIPT),
                        help=f"play only the first N turns of the script (default {len(SCRIPT)})")
    parser.add_argument("--session-id", help="default: conversation-<random>")


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    script = SCRIPT[:args.turns]
    if not script:
        raise ClientFailure("--turns must be at least 1")
    session_id = args.session_id or f"conversation-{uuid.uuid4().hex[:8]}"
    history = ""
    ttfts: list[float] = []
    print(f"conversation: {len(script)} turns on session {session_id}, {settings.shown_url}")
    async with await Link.open(settings) as link:
        for number, utterance in enumerate(script, 1):
            result = await run_turn(link, start_frame(settings, session_id, utterance, history))
            print(f"--- turn {number}/{len(script)} history={len(history)} chars "
                  f"prompt_tokens={result.usage.get('prompt_tokens', '-')}")
            print(f"user: {utterance}")
            if result.toolcall is not None:
                print(f"toolcall: {result.tool_status}")
            print(f"assistant: {printable(result.text)}")
            print(f"ttft_ms={fmt_ms(result.first_token_ms)} total_ms={fmt_ms(result.total_ms)} "
                  f"tokens={len(result.tokens)}")
            if result.first_token_ms is not None:
                ttfts.append(result.first_token_ms)
            history = with_exchange(history, utterance, result.text)
    print(f"conversation done: {len(script)} turns, history {len(history)} chars, "
          f"ttft p50 {fmt_ms(percentile(ttfts, 50))} ms p95 {fmt_ms(percentile(ttfts, 95))} ms")
    return 0
