"""``live``: an interactive session. Each stdin line is a turn whose reply streams as it
comes; the transcript goes back as ``history_text`` on every turn. ``/cancel`` stops the
running reply, ``/reset`` forgets the history, ``/quit`` (or end of input) leaves after the
running reply. Lines typed during a reply wait their turn.
Personas: ``--persona NAME`` (or ``/persona NAME`` at any time) picks a preset, built in or
from ``--persona-file`` (TOML or JSON; re-read on ``/reload`` and whenever it changes), and the
history carries on across the switch; ``/personas`` lists them, ``/history`` shows the
transcript, ``/help`` the commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import uuid
from pathlib import Path

from .connection import ClientFailure, ClientSettings, Link
from .live_state import LiveState
from .turn import TurnResult, fmt_ms, printable, run_turn, start_frame

NAME = "live"
HELP = "interactive REPL: stdin lines -> turns, /persona, /reload, /cancel, /reset, /quit"
QUIT = None  # what the line queue yields at end of input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("opener", nargs="*", help="an optional first message")
    parser.add_argument("--session-id", help="default: live-<random>")
    parser.add_argument("--persona", "-p", help="the preset to start with (/personas lists them)")
    parser.add_argument("--persona-file", type=Path,
                        help="TOML or JSON presets over the built-in ones, e.g. [nova] "
                             'personality = "nerdy", gender = "woman" (or text = "...")')


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    lines = _stdin_lines()
    interactive = sys.stdin.isatty()
    session_id = args.session_id or f"live-{uuid.uuid4().hex[:8]}"
    state = LiveState(args.persona, args.persona_file, switching=settings.chat_prompt)
    waiting: str | None = " ".join(args.opener) or None  # a line read during the last reply
    async with await Link.open(settings) as link:
        await link.check()
        print(f"connected to {settings.shown_url} as session {session_id}, {state.describe()}; "
              "type a message, /persona NAME, /help or /quit")
        while True:
            if waiting is None:
                if interactive:
                    sys.stdout.write("you> ")
                    sys.stdout.flush()
                line = await lines.get()
            else:
                line, waiting = waiting, None
            if line is QUIT or line.strip() == "/quit":
                break
            text = line.strip()
            if not interactive:
                print(f"you> {text}")
            if not text:
                continue
            if text == "/cancel":
                print("(nothing to cancel)")
                continue
            if (said := state.command(text)) is not None:
                print(said)
                continue
            if (said := state.reload()) is not None:  # the persona file changed on disk
                print(said)
            start = start_frame(settings, session_id, text, state.history,
                                persona=state.persona_fields())
            result, waiting = await _turn(link, start, lines)
            state.record(text, result.text)
            if waiting is QUIT:
                break
    return 0


async def _turn(link: Link, start: dict, lines: asyncio.Queue) -> tuple[TurnResult, str | None]:
    """Run one turn while watching stdin: ``/cancel`` acts at once, any other line waits."""
    turn = asyncio.create_task(run_turn(link, start, on_frame=_show))
    waiting: str | None = None
    while not turn.done():
        watch = asyncio.create_task(lines.get())
        await asyncio.wait({turn, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not watch.done():
            watch.cancel()
            break
        line = watch.result()
        if line is not QUIT and line.strip() == "/cancel":
            await link.send({"type": "cancel", "request_id": start["request_id"]})
            print("(cancelling)")
            continue
        waiting = line
        break
    try:
        result = await turn
    except ClientFailure:
        sys.stdout.write("\n")
        raise
    return result, waiting


def _show(frame: dict, result: TurnResult) -> None:
    kind = frame["type"]
    if kind == "toolcall":
        print(f"[toolcall {frame.get('status')}]")
    elif kind == "token":
        if len(result.tokens) == 1:
            sys.stdout.write("assistant> ")
        sys.stdout.write(printable(frame.get("text", "")))
        sys.stdout.flush()
    elif kind == "done":
        if result.tokens:
            sys.stdout.write("\n")
        state = "cancelled, " if result.cancelled else ""
        prompt = result.usage.get("prompt_tokens")
        print(f"({state}{len(result.tokens)} tokens"
              + (f", prompt {prompt} tokens" if prompt is not None else "")
              + f", ttft {fmt_ms(result.first_token_ms)} ms, total {fmt_ms(result.total_ms)} ms)")


def _stdin_lines() -> asyncio.Queue:
    """Lines of stdin, read by a daemon thread so that a blocked read never holds up exit."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def read() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
            loop.call_soon_threadsafe(queue.put_nowait, QUIT)
        except RuntimeError:  # the loop closed: the client has already left
            pass

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue
