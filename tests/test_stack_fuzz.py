"""Hundreds of random and malformed frames against a live stack (hypothesis): no process
dies, every frame is answered (or the connection closes with a defined code), and a
well-behaved session streaming beside them never notices. The session's rules are fuzzed with
tens of thousands of messages in-process (test_wsfront_fuzz.py); this keeps the real sockets,
processes and neighbour in the loop, small enough to run in well under a minute."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from tests.stack import Stack, open_client, recv_json, run_turn

pytestmark = pytest.mark.integration

DEFINED_CLOSES = {1000, 1008, 1009, 1013, 4000}
EXAMPLES = 80  # connections, each sending 1 to 12 frames
TYPES = ["start", "cancel", "end", "ping", "pong", "warm_persona", "warm_history", "bogus", ""]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                      st.text(max_size=40))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)

start_like = st.fixed_dictionaries(
    {"type": st.just("start")},
    optional={
        "session_id": st.one_of(st.text(max_size=300), json_value),
        "user_utterance": st.one_of(st.text(max_size=200), json_value),
        "request_id": json_value,
        "persona_style": st.one_of(st.sampled_from(["nerdy", "savage", "evil", ""]), json_value),
        "gender": st.one_of(st.sampled_from(["woman", "male", "robot"]), json_value),
        "chat_prompt": st.one_of(st.text(max_size=100), json_value),
        "history_text": st.one_of(st.text(max_size=200), json_value),
        "sampling": st.one_of(json_value, st.dictionaries(
            st.sampled_from(["temperature", "top_p", "top_k", "min_p", "sanitize_output", "x"]),
            json_leaf, max_size=3)),
    })
typed = st.builds(lambda t, rest: json.dumps({"type": t, **rest}), st.sampled_from(TYPES),
                  st.dictionaries(st.text(max_size=10), json_value, max_size=3))
frame = st.one_of(
    st.text(max_size=200),  # not JSON at all (or by chance)
    json_value.map(json.dumps),  # JSON, mostly not an object
    typed,
    start_like.map(json.dumps),
    st.sampled_from(["__CANCEL__", '{"cancel": true}', "{}", "[]", "null", '"start"']),
)


@pytest.fixture(scope="module")
def stack():
    s = Stack(env={"CHAT_MAX_OUT": "24", "CHAT_PROMPT_UPDATE_MAX_PER_WINDOW": "0"})
    s.start()
    yield s
    s.stop()


async def answered(ws, raw: str) -> None:
    """Send one frame, then a ping; every frame but a client `pong` must draw at least one
    reply before our pong comes back (turn frames may follow later)."""
    await ws.send(raw)
    await ws.send('{"type": "ping"}')
    replies, ponged = [], False
    while not (ponged and (replies or _is_pong(raw))):
        got = await recv_json(ws, timeout=10)
        if got == {"type": "pong"} and not ponged:
            ponged = True
        else:
            replies.append(got)


def _is_pong(raw: str) -> bool:
    try:
        msg = json.loads(raw)
    except ValueError:
        return False
    return isinstance(msg, dict) and msg.get("type") in ("pong", "ping")


def test_random_frames_never_break_the_server_or_a_neighbour(stack):
    neighbour_turns: list[list[dict]] = []
    stop = threading.Event()

    def neighbour():
        async def talk():
            async with await open_client(stack.url) as ws:
                while not stop.is_set():
                    neighbour_turns.append(await run_turn(ws, "hello, how are you?",
                                                          session_id="neighbour"))
        asyncio.run(talk())

    thread = threading.Thread(target=neighbour, daemon=True)
    thread.start()
    counts = {"frames": 0, "closed": 0}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(frame, min_size=1, max_size=12))
    def fuzz(raws):
        async def one():
            async with await open_client(stack.url) as ws:
                for raw in raws:
                    counts["frames"] += 1
                    try:
                        await answered(ws, raw)
                    except ConnectionClosed:
                        counts["closed"] += 1
                        assert ws.close_code in DEFINED_CLOSES, ws.close_code
                        return
        asyncio.run(one())

    try:
        fuzz()
    finally:
        stop.set()
        thread.join(30)
    print(f"fuzz: {counts['frames']} frames, {counts['closed']} defined closes, "
          f"{len(neighbour_turns)} neighbour turns")
    assert counts["frames"] > 2 * EXAMPLES
    assert neighbour_turns and all(t[-1]["type"] == "done" and t[-2]["type"] == "final"
                                   for t in neighbour_turns)
    assert all(p["state"] == "RUNNING" and p["restarts"] == 0 for p in stack.status())
