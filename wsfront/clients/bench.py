"""``bench``: ``-n`` turns over ``-c`` concurrent sessions (one connection each), then
p50/p95 of toolcall latency, chat time to first token and first-sentence time, and the
error count. Exits 1 when any turn failed."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from .connection import ClientFailure, ClientSettings, Link
from .turn import TurnResult, fmt_ms, percentile, run_turn, start_frame

NAME = "bench"
HELP = "concurrent sessions; p50/p95 of toolcall, TTFT and first-sentence latency"
DEFAULT_UTTERANCE = "who was Columbus?"
METRICS = (("toolcall_ms", "toolcall_ms"), ("chat_ttft_ms", "first_token_ms"),
           ("first_sentence_ms", "first_sentence_ms"), ("total_ms", "total_ms"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("utterance", nargs="*", help=f"what every user says (default {DEFAULT_UTTERANCE!r})")
    parser.add_argument("-n", "--turns", type=int, default=32, help="total sessions (default 32)")
    parser.add_argument("-c", "--concurrency", type=int, default=8,
                        help="sessions at once (default 8)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds a session may take, connection included (default 180)")
    parser.add_argument("--double-ttfb", action="store_true",
                        help="two turns per connection, reported as [first] and [second]")


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    if args.turns < 1 or args.concurrency < 1:
        raise ClientFailure("-n and -c must be at least 1")
    utterance = " ".join(args.utterance) or DEFAULT_UTTERANCE
    phases = ("first", "second") if args.double_ttfb else ("all",)
    results: dict[str, list[TurnResult]] = {p: [] for p in phases}
    errors: list[str] = []
    pending = iter(range(args.turns))

    async def session(index: int) -> None:
        session_id = f"bench-{uuid.uuid4().hex[:6]}-{index}"
        async with await Link.open(settings) as link:
            for phase in phases:
                start = start_frame(settings, session_id, utterance)
                results[phase].append(await run_turn(link, start))

    async def worker() -> None:
        for index in pending:
            try:
                await asyncio.wait_for(session(index), args.timeout)
            except TimeoutError:
                errors.append(f"session {index}: timed out after {args.timeout:g}s")
            except ClientFailure as exc:
                errors.append(f"session {index}: {exc}")

    print(f"bench: {args.turns} sessions, concurrency {args.concurrency}, {settings.shown_url}")
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(args.concurrency, args.turns))))
    wall = time.perf_counter() - began
    turns = sum(len(r) for r in results.values())
    print(f"{turns} turns ok, errors={len(errors)}, wall {wall:.2f}s, "
          f"{turns / wall:.1f} turns/s")
    for phase, phase_results in results.items():
        if len(phases) > 1:
            print(f"[{phase}]")
        print(f"{'metric':<20}{'n':>5}{'p50':>10}{'p95':>10}")
        for label, attr in METRICS:
            values = [v for r in phase_results if (v := getattr(r, attr)) is not None]
            print(f"{label:<20}{len(values):>5}{fmt_ms(percentile(values, 50)):>10}"
                  f"{fmt_ms(percentile(values, 95)):>10}")
    for line in errors[:5]:
        print(f"error: {line}")
    if errors:
        raise ClientFailure(f"{len(errors)} of {args.turns} sessions failed; first: {errors[0]}")
    return 0
