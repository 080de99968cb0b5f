"""A real stack driven with frames exactly as clients written for the single-process Yap server
send them, checking every field those clients parse (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.stack import Stack, open_client, recv_json, run_turn

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack():
    s = Stack(env={"CHAT_MAX_OUT": "40", "CHAT_PROMPT_MAX_TOKENS": "300"})
    s.start()
    yield s
    s.stop()


def run(coro):
    return asyncio.run(coro)


def check_turn(frames: list[dict], request_id: str) -> None:
    """The frames such a client reads, in the order it reads them."""
    types = [f["type"] for f in frames]
    assert types[0] == "ack" and types[1] == "toolcall" and types[-2:] == ["final", "done"], types
    assert set(types[2:-2]) <= {"token"}, types
    assert all(f["request_id"] == request_id for f in frames)
    toolcall = frames[1]
    assert toolcall["status"] in ("yes", "no") and isinstance(toolcall["raw"], list)
    assert toolcall["raw"] == ([{"name": "take_screenshot"}] if toolcall["status"] == "yes" else [])
    final = frames[-2]
    streamed = "".join(f["text"] for f in frames if f["type"] == "token")
    assert final["normalized_text"] == final["text"] == streamed
    usage = frames[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert usage["completion_tokens"] <= 40 and usage["finish_reason"] in ("stop", "length")


def test_the_guide_s_start_frame_streams_a_whole_turn(stack):
    async def body():
        async with await open_client(stack.url) as ws:
            return await run_turn(
                ws, "hey, open spotify and queue my mix", session_id="user123", request_id="g-1",
                persona_style="savage", gender="woman", user_identity="non-binary",
                history_text="User: hi\nAssistant: hey you")

    frames = run(body())
    check_turn(frames, "g-1")
    ack = frames[0]
    assert (ack["session_id"], ack["persona_style"], ack["gender"], ack["user_identity"]) == (
        "user123", "savage", "woman", "non-binary")
    assert ack["sanitize_output"] is True


def test_a_full_persona_runtime_text_and_every_spelling_of_sampling_are_taken(stack):
    async def body():
        async with await open_client(stack.url) as ws:
            return await run_turn(
                ws, "take a screenshot", session_id="user124", request_id="g-2",
                chat_prompt="You are Captain Jo, a calm ship's captain.",
                runtime_text="It is 9 pm in Lisbon.", temperature=0.7,
                sampling_params={"top_p": 0.9, "top_k": 40},
                sampling={"repetition_penalty": 1.1, "sanitize_output": True})

    frames = run(body())
    check_turn(frames, "g-2")
    assert frames[0]["persona"] == "custom"
    assert frames[1]["status"] == "yes"  # the tiny tool model's clear yes


def test_out_of_range_sampling_and_a_missing_session_id_get_the_documented_codes(stack):
    async def body():
        async with await open_client(stack.url) as ws:
            await ws.send(json.dumps({"type": "start", "user_utterance": "hi"}))
            missing = await recv_json(ws)
            await ws.send(json.dumps({"type": "start", "session_id": "s", "user_utterance": "hi",
                                      "request_id": "g-3", "sampling": {"temperature": 1.5}}))
            hot = await recv_json(ws)
            await ws.send(json.dumps({"type": "start", "session_id": "s", "user_utterance": "hi",
                                      "request_id": "g-4", "persona_text": "word " * 400}))
            frames = [await recv_json(ws)]
            while frames[-1]["type"] not in ("done", "error"):
                frames.append(await recv_json(ws))
            return missing, hot, frames

    missing, hot, long_persona = run(body())
    assert missing["type"] == "error" and missing["error_code"] == "missing_session_id"
    assert (hot["error_code"], hot["field"], hot["request_id"]) == (
        "invalid_sampling", "temperature", "g-3")
    assert "[0, 1.2]" in hot["message"]
    # The persona budget (CHAT_PROMPT_MAX_TOKENS) is counted with the chat model's tokenizer.
    assert long_persona[0]["type"] == "ack"
    assert long_persona[-1]["error_code"] == "chat_prompt_too_long"
    assert long_persona[-1]["request_id"] == "g-4"


def test_cancel_sentinels_warm_frames_ping_and_end_answer_as_the_guide_says(stack):
    async def body():
        async with await open_client(stack.url) as ws:
            got = {}
            await ws.send(json.dumps({"type": "warm_persona", "chat_prompt": "You are brief."}))
            got["warm_persona"] = await recv_json(ws, 60)
            await ws.send(json.dumps({"type": "warm_history", "history_text": "User: hi"}))
            got["warm_history"] = await recv_json(ws, 60)
            await ws.send(json.dumps({"type": "start", "session_id": "c", "request_id": "g-5",
                                      "user_utterance": "tell me a long story"}))
            assert (await recv_json(ws))["type"] == "ack"
            await ws.send("__CANCEL__")
            frame = await recv_json(ws)
            while frame["type"] != "done":
                frame = await recv_json(ws)
            got["cancelled"] = frame
            await ws.send(json.dumps({"cancel": True, "request_id": "none-running"}))
            got["idle_cancel"] = await recv_json(ws)
            await ws.send(json.dumps({"type": "ping"}))
            got["pong"] = await recv_json(ws)
            await ws.send(json.dumps({"type": "end"}))
            got["closed"] = await recv_json(ws)
            await ws.wait_closed()
            got["code"] = ws.close_code
            return got

    got = run(body())
    assert got["warm_persona"]["type"] == "warmed" and got["warm_persona"]["target"] == "persona"
    assert got["warm_history"]["type"] == "warmed" and got["warm_history"]["target"] == "history"
    assert got["warm_history"]["prompt_tokens"] > got["warm_persona"]["prompt_tokens"] > 0
    assert got["cancelled"]["cancelled"] is True and got["cancelled"]["request_id"] == "g-5"
    assert got["idle_cancel"] == {"type": "done", "request_id": "none-running", "cancelled": True}
    assert got["pong"] == {"type": "pong"}
    assert got["closed"] == {"type": "connection_closed", "reason": "client_request"}
    assert got["code"] == 1000
