"""A client that stops reading, over a real stack: the front's send queue is bounded, the
stalled client's turn is cancelled on the worker and ends with one error frame, the
connection closes with 1008, and other sessions stream on untouched (issue #4, backpressure).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.stack import Stack, open_client, run_turn

pytestmark = pytest.mark.integration

# What the front may hold for a client that is behind: queued frames plus the token text it
# merged meanwhile (a behind client gets merged frames, never one frame per token).
QUEUE_LIMIT = 4096
MAX_OUT = 3500  # several seconds of tokens beyond what fills the buffers


@pytest.fixture(scope="module")
def stack():
    # Small kernel buffers, so the front's own queue is what fills; long replies, so a turn
    # outlasts what the buffers hold by seconds.
    s = Stack(env={"WS_MAX_SEND_QUEUE_BYTES": str(QUEUE_LIMIT),
                   "WS_SOCKET_SEND_BUFFER_BYTES": "4096", "CHAT_MAX_OUT": str(MAX_OUT)})
    s.start()
    yield s
    s.stop()


def metric(stack: Stack, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def chat_load(stack: Stack) -> int:
    return sum(w["load"] for w in stack.health()[1]["workers"] if w["kind"] == "chat")


async def stalled_client(stack: Stack) -> ClientConnection:
    """A client whose socket takes little and which never calls recv: websockets stops
    reading the socket once a few frames wait (max_queue), so the front's sends block."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", stack.port))
    return await connect(stack.url, sock=sock, max_size=None, compression=None, max_queue=4)


async def drain(ws: ClientConnection, timeout: float = 15.0) -> list[dict]:
    got = []
    try:
        async with asyncio.timeout(timeout):
            async for message in ws:
                got.append(json.loads(message))
    except ConnectionClosed:
        pass
    return got


async def streamed_then_cancelled(ws: ClientConnection, session_id: str, tokens: int) -> list[dict]:
    """One turn read as it streams, cancelled after ``tokens`` token frames: the frames to its
    end (a frame may carry more than one token)."""
    await ws.send(json.dumps({"type": "start", "session_id": session_id,
                              "user_utterance": "hello there"}))
    got: list[dict] = []
    seen = 0
    while True:
        got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        if got[-1]["type"] == "token":
            seen += 1
            if seen == tokens:
                await ws.send('{"type": "cancel"}')
        if got[-1]["type"] in ("done", "error"):
            return got


def test_client_that_stops_reading_is_cancelled_and_closed_while_others_stream(stack):
    overflow = 'textserve_errors_total{code="client_too_slow",protocol="yap"}'
    before = metric(stack, overflow)  # whatever ran on this stack before

    async def scenario():
        slow = await stalled_client(stack)
        await slow.send(json.dumps({"type": "start", "session_id": "stalled", "request_id": "slow",
                                    "user_utterance": "tell me a very long story"}))
        async with await open_client(stack.url) as other:
            # Another session streams turns while the stalled one fills its queue.
            stop = asyncio.Event()

            async def read_turns() -> list[list[dict]]:
                replies = []
                while not stop.is_set():
                    replies.append(await streamed_then_cancelled(other, "reader", 50))
                return replies

            reading = asyncio.create_task(read_turns())
            deadline = time.monotonic() + 120
            while await asyncio.to_thread(metric, stack, overflow) == before:
                assert time.monotonic() < deadline, "the front never gave up on the stalled client"
                await asyncio.sleep(0.05)
            # Read what the front still sends the stalled client: its end and the close.
            stalled = asyncio.create_task(drain(slow))
            stop.set()
            replies = await reading
            noticed = time.monotonic()
            # The chat worker stopped the turn: its load drops long before MAX_OUT tokens are made.
            while await asyncio.to_thread(chat_load, stack) > 0:
                assert time.monotonic() - noticed < 3, "the stalled client's turn was not cancelled"
                await asyncio.sleep(0.05)
            after = await streamed_then_cancelled(other, "reader", 20)
        return replies, await stalled, slow.close_code, after

    replies, stalled, code, after = asyncio.run(scenario())
    assert replies, "the stalled client overflowed before another session streamed at all"
    for reply in [*replies, after]:
        assert reply[0]["type"] == "ack" and reply[-1]["type"] == "done", reply[-3:]
        assert reply[-1]["cancelled"] and reply[-1]["request_id"] == reply[0]["request_id"]
    assert stalled[0]["type"] == "ack"
    ends = [f for f in stalled if f["type"] in ("done", "error")]
    assert len(ends) == 1, ends
    assert ends[0]["error_code"] == "client_too_slow" and ends[0]["request_id"] == "slow"
    assert code == 1008
    streamed = sum(1 for f in stalled if f["type"] == "token")
    assert 0 < streamed < MAX_OUT


def test_a_client_that_falls_behind_and_catches_up_gets_the_tokens_merged(stack):
    """It stops reading for a while, then reads on: the tokens made meanwhile come merged
    into few frames (within the bound), and the turn goes on."""
    async def scenario():
        ws = await stalled_client(stack)
        try:
            await ws.send(json.dumps({"type": "start", "session_id": "behind", "request_id": "b",
                                      "user_utterance": "tell me a story",
                                      "sampling": {"sanitize_output": False}}))
            await asyncio.sleep(3.0)  # tokens are made meanwhile, more than the buffers hold
            got = []
            while sum(f["type"] == "token" for f in got) < 20:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            await ws.send('{"type": "cancel"}')
            while got[-1]["type"] not in ("done", "error"):
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            return got
        finally:
            await ws.close()

    got = asyncio.run(scenario())
    done = got[-1]
    assert done["type"] == "done" and done["cancelled"], got[-2:]
    frames = sum(f["type"] == "token" for f in got)
    # Far fewer frames than the tokens streamed: what waited went merged.
    assert frames < done["cancelled_after_tokens"] / 2, (frames, done)
    assert max(len(f["text"]) for f in got if f["type"] == "token") > 200


def test_a_reader_that_keeps_up_is_never_cut_off(stack):
    """A long reply read as it comes stays well within the bound."""
    async def scenario():
        async with await open_client(stack.url) as ws:
            return await run_turn(ws, "tell me a very long story", session_id="steady", timeout=120)

    before = metric(stack, 'textserve_errors_total{code="client_too_slow",protocol="yap"}')
    frames = asyncio.run(scenario())
    assert [f["type"] for f in frames][-2:] == ["final", "done"]
    assert frames[-1]["usage"]["finish_reason"] == "length"
    assert frames[-1]["usage"]["completion_tokens"] > MAX_OUT // 2
    assert metric(stack, 'textserve_errors_total{code="client_too_slow",protocol="yap"}') == before
