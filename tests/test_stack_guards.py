"""Connection guards and turn rules over a real stack (docs/protocol.md): capacity, idle timeout,
rate limits, auth by header, sentinels, barge-in, request_id echo, warm_persona."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from tests.stack import API_KEY, Stack, open_client, recv_json, run_turn, start_streaming

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack():
    s = Stack(env={"MAX_CONCURRENT_CONNECTIONS": "1", "WS_HANDSHAKE_ACQUIRE_TIMEOUT_S": "0.2",
                   "WS_IDLE_TIMEOUT_S": "1.5", "WS_MAX_MESSAGES_PER_WINDOW": "20",
                   "WS_MESSAGE_WINDOW_SECONDS": "2", "CHAT_MAX_OUT": "400",
                   "WS_MAX_CANCELS_PER_WINDOW": "3", "WS_CANCEL_WINDOW_SECONDS": "60",
                   "CHAT_PROMPT_UPDATE_MAX_PER_WINDOW": "2",
                   "CHAT_PROMPT_UPDATE_WINDOW_SECONDS": "60"})
    s.start()
    yield s
    s.stop()


def run(coro):
    return asyncio.run(coro)


async def admitted(url: str, headers: dict[str, str] | None = None):
    """A connection that holds the one slot: the previous test's may take a moment to free."""
    for _ in range(40):
        ws = await (connect(url, additional_headers=headers) if headers else open_client(url))
        await ws.send('{"type": "ping"}')
        if (await recv_json(ws))["type"] == "pong":
            return ws
        await ws.wait_closed()
        await asyncio.sleep(0.05)
    raise TimeoutError("no connection slot freed up")


def test_second_connection_over_capacity_gets_server_at_capacity_and_1013(stack):
    async def over():
        async with await admitted(stack.url) as _holding_the_slot:
            async with await open_client(stack.url) as second:
                frame = await recv_json(second)
                await second.wait_closed()
                return frame, second.close_code
    frame, code = run(over())
    assert frame["error_code"] == "server_at_capacity" and code == 1013
    assert frame["capacity"] == {"active": 1, "max": 1, "available": 0, "at_capacity": True}


def test_idle_connection_is_closed_with_4000_and_pings_keep_it_open(stack):
    async def idle():
        async with await admitted(stack.url) as ws:
            for _ in range(3):  # 1.8 s of pings every 0.6 s: still open (timeout 1.5 s)
                await asyncio.sleep(0.6)
                await ws.send('{"type": "ping"}')
                assert (await recv_json(ws))["type"] == "pong"
            await asyncio.wait_for(ws.wait_closed(), 3)
            return ws.close_code
    assert run(idle()) == 4000


def test_message_rate_limit_answers_rate_limited_and_the_connection_stays_usable(stack):
    async def flood():
        async with await admitted(stack.url) as ws:
            for _ in range(25):
                await ws.send('{"type": "ping"}')
            got = [await recv_json(ws) for _ in range(25)]
            # Wait for the 2 s window to slide past, with one (refused) frame to stay under
            # the 1.5 s idle timeout.
            await asyncio.sleep(1.0)
            await ws.send('{"type": "ping"}')
            still = await recv_json(ws)
            await asyncio.sleep(1.2)
            await ws.send('{"type": "ping"}')
            return got + [still], await recv_json(ws)
    got, after = run(flood())
    limited = [f for f in got if f["type"] == "error"]
    # 20 per window: the admission ping and 19 more pass, the other 6 + 1 are refused.
    assert len(limited) == 7 and all(f["error_code"] == "rate_limited" for f in limited)
    assert all(f["retry_after_s"] > 0 for f in limited)
    assert after == {"type": "pong"}


def test_header_auth_sentinels_and_end_close_with_1000(stack):
    async def header():
        url = stack.url.split("?")[0]
        async with await admitted(url, {"X-API-Key": API_KEY}) as ws:
            await ws.send("__CANCEL__")
            done = await recv_json(ws)
            await ws.send("__END__")
            closed = await recv_json(ws)
            await ws.wait_closed()
            return done, closed, ws.close_code
    done, closed, code = run(header())
    assert done == {"type": "done", "cancelled": True}
    assert closed == {"type": "connection_closed", "reason": "client_request"} and code == 1000


def test_barge_in_ends_the_old_turn_with_done_cancelled_before_the_new_ack(stack):
    async def barge():
        async with await admitted(stack.url) as ws:
            await start_streaming(ws, "b", "old")
            await ws.send(json.dumps({"type": "start", "session_id": "b", "request_id": "new",
                                      "user_utterance": "stop, new question"}))
            got = []
            while not (got and got[-1]["type"] in ("done", "error")
                       and got[-1].get("request_id") == "new"):
                got.append(await recv_json(ws))
            return got
    frames = run(barge())
    # Tokens of the old turn may still be in flight before its done.
    old_end = next(i for i, f in enumerate(frames) if f["type"] == "done")
    assert frames[old_end].pop("cancelled_after_tokens") >= 1  # the old reply had streamed
    assert frames[old_end] == {"type": "done", "cancelled": True, "request_id": "old"}
    assert all(f.get("request_id") == "old" for f in frames[:old_end])
    rest = frames[old_end + 1:]
    assert rest[0]["type"] == "ack" and [f["type"] for f in rest][-2:] == ["final", "done"]
    assert all(f["request_id"] == "new" for f in rest)


def test_warm_persona_answers_warmed_with_the_cached_token_count(stack):
    async def warm():
        async with await admitted(stack.url) as ws:
            await ws.send(json.dumps({"type": "warm_persona", "session_id": "w",
                                      "chat_prompt": "You are a calm ship's captain."}))
            warmed = await recv_json(ws)
            turn = await run_turn(ws, "hello", session_id="w")
            return warmed, turn
    warmed, turn = run(warm())
    assert warmed["type"] == "warmed" and warmed["target"] == "persona"
    assert warmed["prompt_tokens"] > 0
    assert turn[0]["persona"] == "custom" and turn[-1]["type"] == "done"


def test_cancel_rate_limit_refuses_the_fourth_cancel(stack):
    async def cancels():
        async with await admitted(stack.url) as ws:
            got = []
            for _ in range(4):
                await ws.send('{"type": "cancel"}')
                got.append(await recv_json(ws))
            return got
    got = run(cancels())
    assert [f["type"] for f in got] == ["done", "done", "done", "error"]
    assert got[-1]["error_code"] == "rate_limited"


def test_persona_changes_are_limited_per_session_across_connections(stack):
    async def personas():
        results = []
        for i in range(3):  # a new connection each time: the limit follows the session id
            async with await admitted(stack.url) as ws:
                await ws.send(json.dumps({"type": "warm_persona", "session_id": "p-limit",
                                          "chat_prompt": f"You are persona number {i}."}))
                results.append(await recv_json(ws))
        return results
    got = run(personas())
    assert [f["type"] for f in got] == ["warmed", "warmed", "error"]
    assert got[-1]["error_code"] == "chat_prompt_update_rate_limited" and got[-1]["retry_after_s"] > 0


def test_oversized_frame_gets_message_too_large_then_close_1009(stack):
    async def big():
        async with await admitted(stack.url) as ws:
            await ws.send(json.dumps({"type": "start", "session_id": "big", "user_utterance": "x" * 70000}))
            frame = await recv_json(ws)
            await ws.wait_closed()
            return frame, ws.close_code
    frame, code = run(big())
    assert frame["error_code"] == "message_too_large" and code == 1009
