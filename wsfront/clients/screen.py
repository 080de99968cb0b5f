"""``screen_analysis`` (also ``vision``): turns that ask about the user's screen, each shown as
the tool decision and then the chat reply that follows it. Checks what a screenshot flow
relies on: every turn gets a ``toolcall``, and it comes before any chat token. Exits 1 when
one does not (or, with ``--require-yes``, when a decision is no)."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

from .connection import ClientFailure, ClientSettings, Link
from .turn import TurnResult, describe_toolcall, fmt_ms, printable, run_turn, start_frame

NAME = "screen_analysis"
ALIASES = ("vision",)
HELP = "screen questions: the toolcall decision first, then the follow-up chat stream"
SCREEN_UTTERANCES = (
    "take a look at my screen and tell me what you see",
    "what do you think of this outfit on my screen",
    "can you read what this page on my screen says",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("utterance", nargs="*",
                        help="one turn to send instead of the built-in screen questions")
    parser.add_argument("--require-yes", action="store_true",
                        help="exit 1 unless every decision is yes (take the screenshot)")
    parser.add_argument("--session-id", help="default: screen-<random>")


def order_problem(result: TurnResult) -> str | None:
    """Why a turn breaks the tool-first order, or None when it keeps it."""
    if result.toolcall is None:
        return "no toolcall (is a tool model deployed?)"
    if result.tokens_at_toolcall:
        return f"{result.tokens_at_toolcall} chat tokens came before the toolcall"
    return None


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    utterances = [" ".join(args.utterance)] if args.utterance else list(SCREEN_UTTERANCES)
    session_id = args.session_id or f"screen-{uuid.uuid4().hex[:8]}"
    problems: list[str] = []
    yes = in_order = 0
    print(f"screen_analysis: {len(utterances)} turns on session {session_id}, {settings.shown_url}")
    async with await Link.open(settings) as link:
        for number, utterance in enumerate(utterances, 1):
            print(f"--- turn {number}/{len(utterances)} user: {utterance}")
            result = await run_turn(link, start_frame(settings, session_id, utterance),
                                    on_frame=_Printer())
            yes += result.tool_status == "yes"
            problem = order_problem(result)
            in_order += problem is None
            if problem is None and args.require_yes and result.tool_status != "yes":
                problem = "the tool said no"
            print(f"{'ok  ' if problem is None else 'FAIL'} toolcall_ms={fmt_ms(result.toolcall_ms)} "
                  f"ttft_ms={fmt_ms(result.first_token_ms)} tokens={len(result.tokens)}"
                  + (f" ({problem})" if problem else ""))
            if problem:
                problems.append(f"turn {number}: {problem}")
    print(f"screen_analysis done: toolcall first in {in_order}/{len(utterances)}, "
          f"yes {yes}/{len(utterances)}")
    if problems:
        raise ClientFailure(f"{len(problems)} of {len(utterances)} turns failed; first: {problems[0]}")
    return 0


class _Printer:
    """The decision as it lands, then the reply as it streams."""

    def __init__(self) -> None:
        self.streaming = False

    def __call__(self, frame: dict[str, Any], result: TurnResult) -> None:
        kind = frame["type"]
        if kind == "toolcall":
            print(f"toolcall {describe_toolcall(frame)} +{fmt_ms(result.toolcall_ms)} ms")
        elif kind == "token":
            if not self.streaming:
                sys.stdout.write("reply: ")
                self.streaming = True
            sys.stdout.write(printable(frame.get("text", "")))
            sys.stdout.flush()
        elif kind == "done" and self.streaming:
            sys.stdout.write("\n")
