"""``tool``: replays labelled utterances (built-in screenshot-intent cases, or ``--file``
JSONL lines ``{"text": ..., "label": "yes"|"no"}``) and reports the tool model's accuracy
and toolcall latency p50/p95. Each turn is cancelled once its toolcall arrives."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .connection import ClientFailure, ClientSettings, Link
from .turn import TurnRecorder, fmt_ms, percentile, printable, start_frame

NAME = "tool"
HELP = "labelled screenshot-intent cases -> tool accuracy and latency"
_LABELS = {"yes": "yes", "no": "no", "true": "yes", "false": "no", "1": "yes", "0": "no"}

BUILTIN_CASES = (
    ("take a screenshot", "yes"),
    ("can you look at my screen for a second", "yes"),
    ("what do you see on my screen right now", "yes"),
    ("read what this page says", "yes"),
    ("check out this picture i'm looking at", "yes"),
    ("what do you think of this outfit on my screen", "yes"),
    ("look at this and tell me what you think", "yes"),
    ("describe what's on my display", "yes"),
    ("hello there", "no"),
    ("who was columbus", "no"),
    ("tell me a joke", "no"),
    ("how was your day", "no"),
    ("what is the capital of france", "no"),
    ("i had a long day at work", "no"),
    ("what should i cook tonight", "no"),
    ("do you like music", "no"),
)


@dataclass(frozen=True)
class Case:
    text: str
    label: str  # "yes" | "no"


@dataclass(frozen=True)
class Outcome:
    case: Case
    status: str
    latency_ms: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", type=Path, help='JSONL cases {"text": ..., "label": "yes"|"no"}')
    parser.add_argument("--limit", type=int, help="replay only the first N cases")
    parser.add_argument("--concurrency", "-c", type=int, default=4,
                        help="connections replaying cases at once (default 4)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for each tool decision (default 5)")
    parser.add_argument("--min-accuracy", type=float, default=0.0,
                        help="exit 1 when accuracy (0..1) is below this (default 0)")


def load_cases(path: Path | None) -> list[Case]:
    if path is None:
        return [Case(text, label) for text, label in BUILTIN_CASES]
    cases = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ClientFailure(f"cannot read {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text, label = item["text"], _LABELS[str(item["label"]).strip().lower()]
            if not isinstance(text, str) or not text.strip():
                raise ValueError("empty text")
        except (ValueError, KeyError, TypeError) as exc:
            raise ClientFailure(f"{path}:{number}: expected {{\"text\": ..., \"label\": "
                                f"\"yes\"|\"no\"}} ({type(exc).__name__}: {exc})") from None
        cases.append(Case(text, label))
    if not cases:
        raise ClientFailure(f"{path}: no cases")
    return cases


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    cases = load_cases(args.file)[:args.limit]
    if not cases or args.concurrency < 1:
        raise ClientFailure("need at least one case and --concurrency of at least 1")
    pending = iter(cases)
    outcomes: list[Outcome] = []

    async def worker(index: int) -> None:
        session_id = f"tool-{uuid.uuid4().hex[:6]}-{index}"
        async with await Link.open(settings) as link:
            for case in pending:
                outcome = await _decide(link, session_id, case, args.timeout)
                outcomes.append(outcome)
                mark = "ok  " if outcome.status == case.label else "MISS"
                print(f"{mark} want={case.label:<3} got={outcome.status:<3} "
                      f"{outcome.latency_ms:7.1f} ms  {printable(case.text)}")

    print(f"tool: {len(cases)} cases, concurrency {args.concurrency}, {settings.shown_url}")
    tasks = [asyncio.create_task(worker(i)) for i in range(min(args.concurrency, len(cases)))]
    try:
        await asyncio.gather(*tasks)
    finally:  # the first failure ends the run: stop the others and collect their errors
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    correct = sum(o.status == o.case.label for o in outcomes)
    accuracy = correct / len(outcomes)
    latencies = [o.latency_ms for o in outcomes]
    per_label = "  ".join(
        f"{label}: {sum(o.status == label for o in group)}/{len(group)}"
        for label in ("yes", "no") if (group := [o for o in outcomes if o.case.label == label]))
    print(f"accuracy {accuracy:.1%} ({correct}/{len(outcomes)})  {per_label}")
    print(f"toolcall latency p50 {fmt_ms(percentile(latencies, 50))} ms "
          f"p95 {fmt_ms(percentile(latencies, 95))} ms")
    if accuracy < args.min_accuracy:
        raise ClientFailure(f"accuracy {accuracy:.1%} is below --min-accuracy {args.min_accuracy:.1%}")
    return 0


async def _decide(link: Link, session_id: str, case: Case, timeout_s: float) -> Outcome:
    """One turn up to its toolcall; the chat reply that would follow is cancelled."""
    start = start_frame(link.settings, session_id, case.text)
    rid = start["request_id"]
    recorder = TurnRecorder(rid, case.text)
    sent_at = time.perf_counter()
    await link.send(start)
    deadline = sent_at + timeout_s
    while recorder.result.toolcall is None:
        if recorder.done:
            raise ClientFailure(f"turn {rid} ended without a toolcall: is a tool model deployed?")
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise ClientFailure(f"timed out: no toolcall within {timeout_s:g}s for {case.text!r}")
        frame = await link.recv(min(remaining, link.settings.recv_timeout_s))
        if frame.get("request_id", rid) == rid:
            recorder.feed(frame, time.perf_counter() - sent_at)
    result = recorder.result
    if not recorder.done:
        # A chat reply may follow: stop it and read up to this turn's done. Should the turn
        # end before the cancel lands, the server's extra done carries our request id and
        # the next case skips it.
        await link.send({"type": "cancel", "request_id": rid})
        while not recorder.done:
            frame = await link.recv()
            if frame.get("request_id", rid) == rid:
                recorder.feed(frame, time.perf_counter() - sent_at)
    return Outcome(case, str(result.tool_status), result.toolcall_ms or 0.0)
