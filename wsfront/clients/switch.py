"""The persona switch run shared by ``personality`` and ``gender``: one session, one turn per
persona of a cycle, the whole transcript sent back as ``history_text`` each turn, and every
``ack`` checked to echo the persona just asked for. A persona change the server refuses for
its rate limit is waited out (retry_after_s) and tried again, once."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Sequence

from .connection import ClientFailure, ClientSettings, Link, ServerError
from .personas import PersonaPreset
from .turn import TurnResult, fmt_ms, percentile, printable, run_turn, start_frame, with_exchange

# What the user says, in turn; written to be answerable by any persona.
USER_LINES = (
    "Hey, it's me again. How are you doing today?",
    "I'm thinking about learning to cook. Any advice?",
    "What did I just say I wanted to learn?",
    "Tell me one thing you like about our chats.",
    "I had a rough morning, cheer me up a little.",
    "What's a good way to spend a rainy evening?",
)
RATE_LIMITS = ("chat_prompt_update_rate_limited", "rate_limited", "message_rate_limited")
MAX_RATE_WAIT_S = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--switches", type=int, default=5,
                        help="persona switches after the first turn (default 5)")
    parser.add_argument("--delay", type=float, default=2.0,
                        help="seconds between switches (default 2)")
    parser.add_argument("--session-id", help="default: <client>-<random>")


def ack_mismatch(asked: PersonaPreset, ack: dict | None) -> str | None:
    """What the ack says differently from the persona asked for (None when it agrees or does
    not say); the server's spellings: persona_style/personality, gender/assistant_gender."""
    if ack is None:
        return None
    echoed = {"personality": ack.get("persona_style", ack.get("personality")),
              "gender": ack.get("gender", ack.get("assistant_gender"))}
    wrong = [f"{key}={echoed[key]} (asked {want})"
             for key, want in (("personality", asked.personality), ("gender", asked.gender))
             if want and echoed[key] is not None and str(echoed[key]).lower() != want.lower()]
    return ", ".join(wrong) or None


async def run_switches(name: str, args: argparse.Namespace, settings: ClientSettings,
                       cycle: Sequence[PersonaPreset]) -> int:
    if args.switches < 0 or args.delay < 0:
        raise ClientFailure("--switches and --delay must not be negative")
    if not settings.chat_prompt:
        raise ClientFailure("switching personas needs a chat model: drop --no-chat-prompt")
    session_id = args.session_id or f"{name}-{uuid.uuid4().hex[:8]}"
    history = ""
    ttfts: list[float] = []
    print(f"{name}: {len(cycle) - 1} switches on session {session_id}, {settings.shown_url}")
    async with await Link.open(settings) as link:
        for number, persona in enumerate(cycle):
            if number:
                await asyncio.sleep(args.delay)
            label = "start" if number == 0 else f"switch {number}/{len(cycle) - 1}"
            print(f"--- {label}: {persona.describe()} history={len(history)} chars")
            utterance = USER_LINES[number % len(USER_LINES)]
            result = await _turn(link, settings, session_id, utterance, history, persona)
            if (wrong := ack_mismatch(persona, result.ack)) is not None:
                raise ClientFailure(f"{label}: the server acked {wrong}")
            print(f"user: {utterance}")
            print(f"assistant: {printable(result.text)}")
            print(f"ttft_ms={fmt_ms(result.first_token_ms)} total_ms={fmt_ms(result.total_ms)} "
                  f"prompt_tokens={result.usage.get('prompt_tokens', '-')}")
            if result.first_token_ms is not None:
                ttfts.append(result.first_token_ms)
            history = with_exchange(history, utterance, result.text)
    print(f"{name} done: {len(cycle)} turns, {len(cycle) - 1} switches, every ack matched, "
          f"history {len(history)} chars, ttft p50 {fmt_ms(percentile(ttfts, 50))} ms")
    return 0


async def _turn(link: Link, settings: ClientSettings, session_id: str, utterance: str,
                history: str, persona: PersonaPreset) -> TurnResult:
    def start() -> dict:
        return start_frame(settings, session_id, utterance, history, persona=persona.fields())
    try:
        return await run_turn(link, start())
    except ServerError as exc:
        wait = exc.retry_after_s
        if exc.code not in RATE_LIMITS or wait is None or wait > MAX_RATE_WAIT_S:
            raise
        print(f"(rate limited: {exc.code}, waiting {wait:g}s)")
        await asyncio.sleep(wait)
    return await run_turn(link, start())
