"""``warmup``: one turn, printed as it streams, then its timings and, as the single-process
Yap server's warmup client did, two JSON lines:
``{"type": "metrics", "ttfb_ms", "total_ms", "stream_ms", "chunks", "chars"}`` (TTFB from the
first streamed token) and ``{"type": "final_text", "text"}``.
``--double-ttfb`` runs the same turn twice on one connection (phase=first|second, on every line)
to show what the engine's prefix cache saves."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

from .connection import ClientSettings, Link
from .turn import (TurnResult, describe_toolcall, fmt_ms, printable, round_ms, run_turn,
                   start_frame)

NAME = "warmup"
HELP = "one turn: ack, toolcall, the streamed reply and its timings"
DEFAULT_UTTERANCE = "hello there, how are you today?"
# the effective persona an ack may echo, in both spellings servers use
_ACK_PERSONA_KEYS = ("persona_style", "personality", "gender", "assistant_gender", "user_identity",
                     "persona")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("utterance", nargs="*", help=f"what the user says (default {DEFAULT_UTTERANCE!r})")
    parser.add_argument("--double-ttfb", action="store_true",
                        help="send the same start twice, one after the other, on one connection")
    parser.add_argument("--session-id", help="default: warmup-<random>")


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    utterance = " ".join(args.utterance) or DEFAULT_UTTERANCE
    session_id = args.session_id or f"warmup-{uuid.uuid4().hex[:8]}"
    phases = ["first", "second"] if args.double_ttfb else [""]
    print(f"connecting to {settings.shown_url}")
    async with await Link.open(settings) as link:
        for phase in phases:
            tag = f"phase={phase} " if phase else ""
            printer = _Printer(tag)
            result = await run_turn(link, start_frame(settings, session_id, utterance),
                                    on_frame=printer)
            printer.end()
            print(f"{tag}timings " + " ".join(_metric_words(result)))
            for line in result_lines(result, phase):
                print(json.dumps(line, ensure_ascii=False))
    return 0


def result_lines(result: TurnResult, phase: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """The metrics and final-text lines, keys in the order scripts of the single-process
    server read them; ``stream_ms`` runs from the first token to the turn's end."""
    tag = {"phase": phase} if phase else {}
    stream_ms = None
    if result.first_token_ms is not None and result.total_ms is not None:
        stream_ms = result.total_ms - result.first_token_ms
    metrics = {"type": "metrics", **tag, "ttfb_ms": round_ms(result.first_token_ms),
               "total_ms": round_ms(result.total_ms), "stream_ms": round_ms(stream_ms),
               "chunks": len(result.tokens), "chars": len(result.text)}
    return metrics, {"type": "final_text", **tag, "text": result.text}


class _Printer:
    """Prints the frames of one turn as they arrive."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.streaming = False

    def __call__(self, frame: dict[str, Any], result: TurnResult) -> None:
        kind = frame["type"]
        if kind == "ack":
            persona = " ".join(f"{k}={frame[k]}" for k in _ACK_PERSONA_KEYS if k in frame)
            print(f"{self.tag}ack +{fmt_ms(result.ack_ms)} ms session={frame.get('session_id')} "
                  f"request={frame.get('request_id')} {persona}".rstrip())
        elif kind == "toolcall":
            print(f"{self.tag}toolcall {describe_toolcall(frame)} +{fmt_ms(result.toolcall_ms)} ms")
        elif kind == "token":
            if not self.streaming:
                sys.stdout.write(f"{self.tag}reply: ")
                self.streaming = True
            sys.stdout.write(printable(frame.get("text", "")))
            sys.stdout.flush()
        elif kind == "done" and result.cancelled:
            self.end()
            print(f"{self.tag}cancelled")

    def end(self) -> None:
        if self.streaming:
            sys.stdout.write("\n")
            self.streaming = False


def _metric_words(result: TurnResult) -> list[str]:
    return [f"ack_ms={fmt_ms(result.ack_ms)}", f"toolcall_ms={fmt_ms(result.toolcall_ms)}",
            f"ttft_ms={fmt_ms(result.first_token_ms)}",
            f"first_sentence_ms={fmt_ms(result.first_sentence_ms)}",
            f"total_ms={fmt_ms(result.total_ms)}", f"tokens={len(result.tokens)}",
            f"chars={len(result.text)}"]
