"""The whole stack, started by ``python -m supervisor start`` in a temporary run directory:
real processes, real ZeroMQ sockets, a real WebSocket client, real (tiny) models."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

import psutil
import pytest

from tests.stack import (
    Stack, open_client, recv_json, replacement_registered, run_turn, start_streaming, wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack():
    # Long replies, so that cancel and kill land mid-stream.
    s = Stack(env={"CHAT_MAX_OUT": "1500"})
    s.start()
    yield s
    s.stop()


def run(coro):
    return asyncio.run(coro)


def test_healthz_reports_ready_workers_of_every_kind(stack):
    status, body = stack.health()
    assert status == 200, body
    assert body["ready"] == {"chat": 1, "tool": 1}


def test_full_turn_streams_toolcall_then_tokens_then_final_and_done(stack):
    async def turn():
        async with await open_client(stack.url) as ws:
            return await run_turn(ws, "take a screenshot of this page", request_id="turn-1",
                                  sampling={"temperature": 0.0, "sanitize_output": False})
    got = run(turn())
    kinds = [f["type"] for f in got]
    assert kinds[0] == "ack" and kinds[1] == "toolcall", kinds
    # The tiny tool model was trained on "take a screenshot": a clear yes (p > 0.99).
    assert (got[1]["status"], got[1]["raw"]) == ("yes", [{"name": "take_screenshot"}]), got[1]
    assert kinds[-2:] == ["final", "done"], kinds
    tokens = [f["text"] for f in got if f["type"] == "token"]
    assert tokens, "no token streamed"
    assert got[-2]["text"] == "".join(tokens)
    assert got[-1]["usage"]["completion_tokens"] > 0
    assert all(f["request_id"] == "turn-1" for f in got)


def test_bad_api_key_is_refused_with_1008(stack):
    async def bad():
        async with await open_client(stack.url.replace("test-key", "wrong")) as ws:
            frame = await recv_json(ws)
            await ws.wait_closed()
            return frame, ws.close_code
    frame, code = run(bad())
    assert frame["error_code"] == "authentication_failed" and code == 1008


def metrics(stack: Stack) -> dict[str, float]:
    """/metrics as {series: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/metrics", timeout=2) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def chat_load(stack: Stack) -> int:
    _, body = stack.health()
    return sum(w["load"] for w in body.get("workers", []) if w["kind"] == "chat")


def test_cancel_mid_stream_ends_with_done_cancelled_and_the_engine_stops(stack):
    async def cancel_mid_stream():
        async with await open_client(stack.url) as ws:
            await start_streaming(ws, "c1", "c-1")
            sent = time.monotonic()
            await ws.send(json.dumps({"type": "cancel"}))
            while (frame := await recv_json(ws))["type"] == "token":
                pass
            return frame, time.monotonic() - sent
    frame, elapsed = run(cancel_mid_stream())
    assert frame.pop("cancelled_after_tokens") >= 1  # at least the token we waited for
    assert frame == {"type": "done", "cancelled": True, "request_id": "c-1"}
    assert elapsed < 0.5
    # The worker really aborted: its slot is free long before 1500 tokens could be made.
    wait_for(lambda: chat_load(stack) == 0, timeout=1.0, what="chat worker idle after cancel")


def test_kill_9_of_the_chat_worker_mid_stream_errors_the_turn_and_the_worker_comes_back(stack):
    old_pid = stack.pid_of("chat-0")
    lost = 'textserve_errors_total{code="worker_lost",protocol="yap"}'
    before = metrics(stack)

    async def kill_mid_stream():
        async with await open_client(stack.url) as ws:
            await start_streaming(ws, "k1", "k-1")
            os.kill(old_pid, signal.SIGKILL)
            killed = time.monotonic()
            while (frame := await recv_json(ws, timeout=5))["type"] == "token":
                pass
            error_after = time.monotonic() - killed
            # The supervisor restarts the worker; the same connection serves the next turn.
            await asyncio.to_thread(wait_for, lambda: replacement_registered(stack, old_pid), 60,
                                    0.1, "a new chat-0 registered")
            again = await run_turn(ws, "hello again", request_id="k-2")
            return frame, error_after, again
    frame, error_after, again = run(kill_mid_stream())
    assert frame["type"] == "error" and frame["error_code"] == "worker_lost", frame
    assert frame["request_id"] == "k-1"
    assert error_after < 2.0
    assert stack.pid_of("chat-0") != old_pid
    assert [f["type"] for f in again][-2:] == ["final", "done"], again
    assert metrics(stack)[lost] - before.get(lost, 0) == 1


def test_metrics_expose_turns_latencies_and_worker_load_in_prometheus_format(stack):
    # Counted from what this test does, whatever ran on the stack before it.
    turns, ttft, invalid = ('textserve_turns_total{deploy_mode="both",protocol="yap"}',
                            'textserve_ttft_seconds_count{protocol="yap"}',
                            'textserve_errors_total{code="invalid_message",protocol="yap"}')
    before = metrics(stack)

    async def turn_and_a_bad_frame():
        async with await open_client(stack.url) as ws:
            await start_streaming(ws, "m", "m-1")  # a turn to its first token, then cancelled
            await ws.send(json.dumps({"type": "cancel"}))
            while (frame := await recv_json(ws))["type"] == "token":
                pass
            await ws.send("{not json")
            return frame, await recv_json(ws)
    done, refused = run(turn_and_a_bad_frame())
    assert done["type"] == "done" and refused["error_code"] == "invalid_message"
    after = metrics(stack)
    assert after[turns] - before.get(turns, 0) == 1
    assert after[ttft] - before.get(ttft, 0) == 1
    assert after[invalid] - before.get(invalid, 0) == 1
    assert after['textserve_worker_ready{name="chat-0",kind="chat"}'] == 1
    assert 'textserve_worker_load{name="tool-0",kind="tool"}' in after


def test_stop_leaves_no_process_behind():
    # A stack of its own: stopping the module's would end it for whichever test comes next.
    stack = Stack(env={"CHAT_MAX_OUT": "16"})
    stack.start()
    try:
        pids = [p["pid"] for p in stack.status() if p.get("pid")]
        supervisor_pid = int(open(os.path.join(stack.run_dir, "supervisor.pid")).read())
        family = {supervisor_pid, *pids}
        family |= {c.pid for pid in pids if psutil.pid_exists(pid)
                   for c in psutil.Process(pid).children(recursive=True)}
    finally:
        result = stack.stop()
    assert result.returncode == 0, result.stderr
    alive = [pid for pid in family if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
