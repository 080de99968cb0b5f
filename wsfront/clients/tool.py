"""``tool``: replays labelled cases (built-in screenshot-intent ones, or ``--file`` JSONL; see
``tool_cases``) and reports the tool model's accuracy per step and toolcall latency p50/p95.
Each turn is dropped once its toolcall arrives (the next start barges in); a case's later steps carry its earlier
utterances as ``history_text``. ``--max-steps`` skips cases longer than that."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .connection import ClientFailure, ClientSettings, Link, ServerError
from .tool_cases import Case, Step, load_cases, select_cases
from .turn import TurnRecorder, fmt_ms, percentile, printable, start_frame, with_exchange

NAME = "tool"
HELP = "labelled screenshot-intent cases -> tool accuracy and latency"


@dataclass(frozen=True)
class Outcome:
    step: Step
    status: str
    latency_ms: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", type=Path,
                        help='JSONL cases {"text": ..., "label": "yes"|"no"} or {"steps": [...]}')
    parser.add_argument("--limit", type=int, help="replay only the first N cases")
    parser.add_argument("--max-steps", type=int,
                        help="skip cases with more steps than this (default: no cap)")
    parser.add_argument("--concurrency", "-c", type=int, default=4,
                        help="connections replaying cases at once (default 4)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for each tool decision (default 5)")
    parser.add_argument("--min-accuracy", type=float, default=0.0,
                        help="exit 1 when accuracy (0..1) is below this (default 0)")


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    cases, skipped = select_cases(load_cases(args.file), args.limit, args.max_steps)
    if skipped:
        print(f"skipping {skipped} cases with more than {args.max_steps} steps")
    if not cases or args.concurrency < 1:
        raise ClientFailure("need at least one case and --concurrency of at least 1")
    pending = iter(enumerate(cases))
    outcomes: list[Outcome] = []

    async def worker(index: int) -> None:
        async with await Link.open(settings) as link:
            for number, case in pending:
                # a session per case: no case sees another's history
                session_id = f"tool-{uuid.uuid4().hex[:6]}-{index}-{number}"
                outcomes.extend(await _play(link, session_id, case, args.timeout))

    steps = sum(len(c.steps) for c in cases)
    print(f"tool: {len(cases)} cases ({steps} steps), concurrency {args.concurrency}, "
          f"{settings.shown_url}")
    tasks = [asyncio.create_task(worker(i)) for i in range(min(args.concurrency, len(cases)))]
    try:
        await asyncio.gather(*tasks)
    finally:  # the first failure ends the run: stop the others and collect their errors
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    correct = sum(o.status == o.step.label for o in outcomes)
    accuracy = correct / len(outcomes)
    latencies = [o.latency_ms for o in outcomes]
    per_label = "  ".join(
        f"{label}: {sum(o.status == label for o in group)}/{len(group)}"
        for label in ("yes", "no") if (group := [o for o in outcomes if o.step.label == label]))
    print(f"accuracy {accuracy:.1%} ({correct}/{len(outcomes)})  {per_label}")
    print(f"toolcall latency p50 {fmt_ms(percentile(latencies, 50))} ms "
          f"p95 {fmt_ms(percentile(latencies, 95))} ms")
    if accuracy < args.min_accuracy:
        raise ClientFailure(f"accuracy {accuracy:.1%} is below --min-accuracy {args.min_accuracy:.1%}")
    return 0


async def _play(link: Link, session_id: str, case: Case, timeout_s: float) -> list[Outcome]:
    """The case's steps in order, each judged with the earlier ones as history."""
    history, outcomes = case.history, []
    for number, step in enumerate(case.steps, 1):
        while True:
            try:
                outcome = await _decide(link, session_id, step, history, timeout_s)
                break
            except ServerError as exc:  # over the message rate limit: wait as told, again
                if exc.code != "rate_limited" or exc.retry_after_s is None:
                    raise
                await asyncio.sleep(exc.retry_after_s)
        outcomes.append(outcome)
        where = f"[{number}/{len(case.steps)}] " if len(case.steps) > 1 else ""
        mark = "ok  " if outcome.status == step.label else "MISS"
        print(f"{mark} want={step.label:<3} got={outcome.status:<3} "
              f"{outcome.latency_ms:7.1f} ms  {where}{printable(step.text)}")
        history = with_exchange(history, step.text)
    return outcomes


async def _decide(link: Link, session_id: str, step: Step, history: str,
                  timeout_s: float) -> Outcome:
    """One turn up to its toolcall. The chat reply that follows is ended by the next case's
    start (a barge-in) or the disconnect: a cancel per turn would run into the server's
    cancel rate limit long before a test split is through."""
    start = start_frame(link.settings, session_id, step.text, history)
    rid = start["request_id"]
    recorder = TurnRecorder(rid, step.text)
    sent_at = time.perf_counter()
    await link.send(start)
    deadline = sent_at + timeout_s
    while recorder.result.toolcall is None:
        if recorder.done:
            raise ClientFailure(f"turn {rid} ended without a toolcall: is a tool model deployed?")
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise ClientFailure(f"timed out: no toolcall within {timeout_s:g}s for {step.text!r}")
        frame = await link.recv(min(remaining, link.settings.recv_timeout_s))
        if frame.get("request_id", rid) == rid:
            recorder.feed(frame, time.perf_counter() - sent_at)
    result = recorder.result
    return Outcome(step, str(result.tool_status), result.toolcall_ms or 0.0)
