"""Cancellation on a real stack: how fast a ``cancel``, a barge-in ``start`` and a client
disconnect end the turn for the client and stop the engine, and how many tokens the engine
generated beyond what the client had been streamed.

    python benchmarks/cancel_latency.py [--trials 30] [--after 8] [--busy 0]
    python benchmarks/cancel_latency.py --engine vllm --vllm-python .venv-vllm/bin/python

Each trial is one session: it starts a turn (a long reply, sanitizer off, so every ``token``
frame is the text of one worker ``Delta``), waits for its ``--after``-th token frame, then
cancels the turn one of three ways: ``{"type": "cancel"}``, a new ``start`` on the same
connection (barge-in), or closing the connection; and the OpenAI way (``http-close``): a
streamed ``POST /v1/chat/completions`` whose client closes its connection after as many
chunks, which is how Pipecat and LiveKit interrupt; and the Responses way (``responses``): a
``response.cancel`` on an OpenAI Responses socket (``/v1/responses``), timed to the
response's terminal event (``response.incomplete``, status cancelled).

Measured:
- cancel -> done: from sending the cancel (or the barge-in start) to the cancelled turn's
  ``done`` frame, on the client's clock (a disconnect has no done frame).
- cancel -> engine stop: from the cancel to the moment the chat worker's engine stream ended,
  read from the line the worker logs for every cancelled chat request (timestamps in ms).
- tokens: the reply tokens streamed to the client before the cancel took effect (the
  cancelled ``done`` frame's ``cancelled_after_tokens``) against the tokens the engine
  generated for the request in total, as the worker's log line reports them (the tokens the
  engine had handed to the worker when its stream ended; a step already running inside the
  engine when the abort lands may still compute a token that is dropped uncounted), and how
  many of those the worker had not yet streamed when the abort reached it. Target: at most
  two engine steps (one token each) more than the client was streamed.

Trials run one at a time on an otherwise idle stack unless ``--busy N`` keeps N other
sessions streaming meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from supervisor.sandbox import API_KEY, MODEL_CACHE, Stack, open_client  # noqa: E402

MODES = ("cancel", "barge-in", "disconnect", "http-close", "responses")
# The worker's line for a cancelled chat request (workers/runtime.py, _chat).
CANCEL_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ INFO workers: request (?P<rid>\S+) of "
    r"session (?P<session>\S+) cancelled: (?P<total>\d+) tokens generated, (?P<before>\d+) "
    r"streamed before the abort; stopped (?P<stop_ms>[\d.]+) ms")
FRAME_TIMEOUT_S = 60.0


@dataclass
class Trial:
    mode: str
    session: str
    frames_before: int  # token frames the client had received when it cancelled
    frames_late: int = 0  # token frames of the turn that reached it after its cancel
    streamed: int | None = None  # the done frame's cancelled_after_tokens (no done: None)
    frame_gap_ms: float = 0.0  # median time between token frames before the cancel
    done_ms: float | None = None  # cancel -> the turn's done frame (client clock)
    sent_at: float = 0.0  # wall clock of the cancel
    # From the worker's log line:
    engine_total: int = 0
    worker_before_abort: int = 0  # tokens the worker had streamed when the abort reached it
    engine_stop_ms: float = 0.0  # cancel -> the engine stream ended
    worker_stop_ms: float = 0.0  # abort at the worker -> the engine stream ended


def config(engine: str, python: str | None, tool: bool, threads: int) -> str:
    lines = ["[supervisor]", f'model_cache = "{MODEL_CACHE}"', "start_timeout_s = 300", "",
             "[[workers]]", 'name = "chat-0"', 'kind = "chat"', f'engine = "{engine}"',
             'model = "builtin:tiny-chat"', f"torch_threads = {threads}"]
    if python:
        lines.append(f'python = "{Path(python).absolute()}"')  # not resolve(): a venv's python is a symlink
    if engine == "vllm":
        lines += ["max_model_len = 4096", "", "[workers.vllm]", "cache_reset_interval_s = 0"]
    if tool:
        lines += ["", "[[workers]]", 'name = "tool-0"', 'kind = "tool"', 'engine = "classifier"',
                  'model = "builtin:tiny-tool"', f"torch_threads = {threads}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ one trial


def start_frame(session: str, request_id: str) -> str:
    return json.dumps({"type": "start", "session_id": session, "request_id": request_id,
                       "user_utterance": "tell me a very long story about the sea",
                       "sampling": {"sanitize_output": False}})


async def recv(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT_S))


class TurnFailed(Exception):
    """The turn ended with an error frame (its code is the message)."""


async def until_done(ws, request_id: str) -> tuple[int, dict]:
    """Read up to the turn's done frame: the token frames seen on the way, and the done."""
    tokens = 0
    while True:
        frame = await recv(ws)
        if frame.get("request_id") != request_id:
            continue
        if frame["type"] == "token":
            tokens += 1
        elif frame["type"] == "done":
            return tokens, frame
        elif frame["type"] == "error":
            raise TurnFailed(frame.get("error_code", "?"))


async def http_trial(url: str, index: int, after: int) -> Trial | None:
    """A streamed chat completion whose client hangs up after ``after`` text chunks."""
    session = f"http-close-{index}"
    host, port = url.split("//")[1].split("/")[0].split(":")
    body = json.dumps({"messages": [{"role": "user", "content": "tell me a very long story "
                                     "about the sea"}], "stream": True, "user": session})
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write((f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
                  f"authorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\n"
                  f"content-length: {len(body)}\r\n\r\n{body}").encode())
    arrivals: list[float] = []
    try:
        while len(arrivals) < after:
            line = await asyncio.wait_for(reader.readline(), FRAME_TIMEOUT_S)
            if not line or b"[DONE]" in line:
                return None
            if b'"error"' in line:
                raise TurnFailed(line.decode(errors="replace").strip())
            if line.startswith(b"data: ") and b'"content"' in line:
                arrivals.append(time.perf_counter())
        result = Trial("http-close", session, len(arrivals), frame_gap_ms=statistics.median(
            (b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])) if after > 1 else 0.0)
        result.sent_at = time.time()
        return result
    finally:
        writer.transport.abort()  # the client goes, as an interrupted HTTP client does


async def responses_trial(url: str, index: int, after: int) -> Trial | None:
    """A response on a Responses socket, cancelled with ``response.cancel`` after ``after``
    text deltas; timed to its terminal event."""
    from websockets.asyncio.client import connect
    session = f"responses-{index}"
    ws_url = url.rsplit("/", 1)[0] + "/v1/responses"
    async with connect(ws_url, additional_headers={"Authorization": f"Bearer {API_KEY}"},
                       max_size=None) as ws:
        await ws.send(json.dumps({"type": "response.create", "user": session,
                                  "input": "tell me a very long story about the sea"}))
        arrivals: list[float] = []
        while len(arrivals) < after:
            event = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT_S))
            kind = event["type"]
            if kind == "response.output_text.delta":
                arrivals.append(time.perf_counter())
            elif kind in ("response.completed", "response.incomplete"):
                return None
            elif kind in ("response.failed", "error"):
                raise TurnFailed(json.dumps(event)[:200])
        result = Trial("responses", session, len(arrivals), frame_gap_ms=statistics.median(
            (b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])) if after > 1 else 0.0)
        t0, result.sent_at = time.perf_counter(), time.time()
        await ws.send(json.dumps({"type": "response.cancel"}))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT_S))
            if event["type"] == "response.output_text.delta":
                result.frames_late += 1
            elif event["type"] in ("response.completed", "response.incomplete",
                                   "response.failed"):
                break
        result.done_ms = (time.perf_counter() - t0) * 1000
        if event["response"]["status"] != "cancelled":
            return None  # it ended on its own first
        result.streamed = event["response"]["usage"]["output_tokens"]
        return result


async def trial(url: str, mode: str, index: int, after: int) -> Trial | None:
    """One cancelled turn; None if the reply ended on its own before ``after`` tokens;
    ``TurnFailed`` if it ended with an error frame."""
    if mode == "http-close":
        return await http_trial(url, index, after)
    if mode == "responses":
        return await responses_trial(url, index, after)
    session = f"{mode}-{index}"
    rid = f"{session}-r"
    ws = await open_client(url)
    try:
        await ws.send(start_frame(session, rid))
        arrivals: list[float] = []
        while len(arrivals) < after:
            frame = await recv(ws)
            if frame["type"] == "token":
                arrivals.append(time.perf_counter())
            elif frame["type"] == "error":
                raise TurnFailed(frame.get("error_code", "?"))
            elif frame["type"] == "done":
                return None
        result = Trial(mode, session, len(arrivals), frame_gap_ms=statistics.median(
            (b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])) if after > 1 else 0.0)
        t0, result.sent_at = time.perf_counter(), time.time()
        if mode == "cancel":
            await ws.send(json.dumps({"type": "cancel"}))
        elif mode == "barge-in":
            await ws.send(start_frame(f"{session}-next", f"{rid}-next"))
        else:
            await ws.close()
            return result
        result.frames_late, done = await until_done(ws, rid)
        result.done_ms = (time.perf_counter() - t0) * 1000
        if not done.get("cancelled"):
            return None  # the reply ended on its own before the cancel took effect
        result.streamed = done["cancelled_after_tokens"]
        if mode == "barge-in":  # end the new turn too, and wait for it, before the next trial
            await ws.send(json.dumps({"type": "cancel"}))
            await until_done(ws, f"{rid}-next")
        return result
    finally:
        await ws.close()


def read_cancel_lines(log: Path) -> dict[str, re.Match[str]]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return {m["session"]: m for m in map(CANCEL_LINE.match, text.splitlines()) if m}


async def engine_view(log: Path, result: Trial, timeout: float = 10.0) -> bool:
    """Fill in the worker's side of the trial from its log line (polled: the engine may still
    be stopping when the client's done frame arrives). False if there is none: the request
    was not cancelled in the engine (it ended on its own first)."""
    deadline = time.monotonic() + timeout
    while (m := read_cancel_lines(log).get(result.session)) is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    logged_at = datetime.strptime(m["ts"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    result.engine_total = int(m["total"])
    result.worker_before_abort = int(m["before"])
    result.worker_stop_ms = float(m["stop_ms"])
    result.engine_stop_ms = max((logged_at - result.sent_at) * 1000, 0.0)
    return True


async def busy_session(url: str, index: int, stop: asyncio.Event) -> int:
    """Background load: turns back to back until told to stop; the turns completed."""
    done = 0
    async with await open_client(url) as ws:
        while not stop.is_set():
            rid = f"busy-{index}-{done}"
            await ws.send(start_frame(f"busy-{index}", rid))
            await until_done(ws, rid)
            done += 1
    return done


async def measure(stack: Stack, modes: list[str], trials: int, after: int, busy: int
                  ) -> dict[str, list[Trial]]:
    log = Path(stack.run_dir, "logs", "chat-0.log")
    stop = asyncio.Event()
    load = [asyncio.create_task(busy_session(stack.url, i, stop)) for i in range(busy)]
    out: dict[str, list[Trial]] = {mode: [] for mode in modes}
    try:
        for mode in modes:  # one warm-up trial per mode, not counted
            if (r := await trial(stack.url, mode, -1, after)) is not None:
                await engine_view(log, r)
        skipped, failed = 0, Counter[str]()
        for i in range(trials):
            for mode in modes:  # interleaved, so that a slow spell hits every mode alike
                try:
                    r = await trial(stack.url, mode, i, after)
                except TurnFailed as exc:  # counted and shown, never silently dropped
                    failed[f"{mode}: {exc}"] += 1
                    continue
                if r is None or not await engine_view(log, r):
                    skipped += 1
                    continue
                out[mode].append(r)
        if skipped:
            print(f"({skipped} trial(s) skipped: the reply ended on its own before the cancel)")
        for what, n in sorted(failed.items()):
            print(f"({n} trial(s) failed, {what})")
    finally:
        stop.set()
        await asyncio.gather(*load, return_exceptions=True)
    return out


# ------------------------------------------------------------------ report


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def three(values: list[float], fmt: str = "{:.1f}") -> str:
    if not values:
        return f"{'-':>6} {'-':>6} {'-':>6}"
    return " ".join(f"{fmt.format(v):>6}" for v in (statistics.median(values),
                                                     pct(values, 0.95), max(values)))


def report(results: dict[str, list[Trial]], title: str, after: int) -> str:
    lines = [title, "",
             f"{'':<11} {'':>3}   {'cancel -> done frame ms':^20}   {'cancel -> engine stop ms':^20}   "
             f"{'abort at worker -> stop ms':^20}",
             f"{'mode':<11} {'n':>3}   {'p50':>6} {'p95':>6} {'max':>6}   {'p50':>6} {'p95':>6} "
             f"{'max':>6}   {'p50':>6} {'p95':>6} {'max':>6}"]
    for mode, rs in results.items():
        lines.append(f"{mode:<11} {len(rs):>3}   "
                     f"{three([r.done_ms for r in rs if r.done_ms is not None])}   "
                     f"{three([r.engine_stop_ms for r in rs])}   {three([r.worker_stop_ms for r in rs])}")
    gaps = [r.frame_gap_ms for rs in results.values() for r in rs if r.frame_gap_ms]
    lines += ["",
              f"tokens per cancelled turn (mean; the client cancels at its {after}th token frame;"
              f" token frames came every {statistics.median(gaps):.1f} ms, p50)" if gaps else "",
              f"{'mode':<11} {'frames':>6} {'late':>5} {'streamed':>9} {'engine':>7}   "
              f"{'engine - streamed':^20}   {'unstreamed':>11}   {'<= 2':>9}",
              f"{'':<11} {'seen':>6} {'frms':>5} {'to client':>9} {'total':>7}   {'p50':>6} {'p95':>6} "
              f"{'max':>6}   {'at worker':>11}   {'steps':>9}"]
    for mode, rs in results.items():
        if not rs:
            continue
        exact = all(r.streamed is not None for r in rs)
        streamed = [r.streamed if r.streamed is not None else r.worker_before_abort for r in rs]
        over = [r.engine_total - s for r, s in zip(rs, streamed)]
        lines.append(
            f"{mode:<11} {statistics.mean(r.frames_before for r in rs):>6.1f} "
            f"{max(r.frames_late for r in rs):>5} "
            f"{statistics.mean(streamed):>8.1f}{' ' if exact else '*'} "
            f"{statistics.mean(r.engine_total for r in rs):>7.1f}   {three(over, '{:.0f}')}   "
            f"{max(r.engine_total - r.worker_before_abort for r in rs):>11}   "
            f"{sum(o <= 2 for o in over):>4}/{len(over):<4}")
    lines += ["",
              "frames seen: token frames the client had when it cancelled (a frame is one worker",
              "delta, one or more tokens); late frms: most token frames of the turn that reached it",
              "after its cancel; streamed to client: the cancelled done frame's cancelled_after_tokens",
              "(* disconnect has no done frame: the worker's count of tokens streamed when the abort",
              "reached it); engine total: the worker's count for the request when its engine stream",
              "ended; unstreamed at worker (max): of those, tokens the worker had not streamed when",
              "the abort reached it (made after it, or held back as half a character);",
              "<= 2 steps: trials where engine - streamed was at most 2 tokens (one per step)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30, help="trials per mode")
    parser.add_argument("--after", type=int, default=8, help="cancel after this many token frames")
    parser.add_argument("--busy", type=int, default=0, help="other sessions streaming meanwhile")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--vllm-python", help="the chat worker's interpreter (made by "
                        "scripts/vllm-venv.sh), e.g. .venv-vllm/bin/python")
    parser.add_argument("--no-tool", action="store_true", help="chat-only deployment")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker (0: one per CPU)")
    parser.add_argument("--max-tokens", type=int, default=400, help="CHAT_MAX_OUT of the stack")
    args = parser.parse_args()
    if args.engine == "vllm" and not args.vllm_python:
        parser.error("--engine vllm needs --vllm-python (see README, Engines)")

    stack = Stack(config_text=config(args.engine, args.vllm_python, not args.no_tool, args.threads),
                  env={"CHAT_MAX_OUT": str(args.max_tokens),
                       "DEPLOY_MODE": "chat" if args.no_tool else "both"})
    stack.start()
    try:
        results = asyncio.run(measure(stack, args.modes, args.trials, args.after, args.busy))
    finally:
        stack.stop()
    title = (f"cancellation, builtin:tiny-chat on the {args.engine} engine"
             f"{'' if args.no_tool else ' (+ tool worker)'}: {args.trials} trials per mode, "
             f"{args.busy} other sessions streaming, torch threads {args.threads or 'one per CPU'}")
    print()
    print(report(results, title, args.after))


if __name__ == "__main__":
    main()
