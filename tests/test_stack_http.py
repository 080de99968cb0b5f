"""The front's HTTP side on a live stack, byte by byte: the shell's own rules (framing,
keep-alive, pipelining, 100-continue, HTTP/1.0, size limits, one capacity budget with /ws,
a client that hangs up), over raw sockets so that nothing a client library does hides them."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time

import pytest

from tests.stack import API_KEY, Stack, open_client, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack():
    s = Stack(env={"CHAT_MAX_OUT": "1500", "MAX_CONCURRENT_CONNECTIONS": "3",
                   "DEPLOY_MODE": "chat"})
    s.start()
    yield s
    s.stop()


def port_of(stack: Stack) -> int:
    return int(stack.url.split(":")[2].split("/")[0])


def exchange(stack: Stack, raw: bytes, timeout: float = 20.0, until: bytes | None = None) -> bytes:
    """Send ``raw`` on a new connection; read until the server closes or ``until`` is seen."""
    with socket.create_connection(("127.0.0.1", port_of(stack)), timeout=timeout) as sock:
        sock.sendall(raw)
        got = b""
        while until is None or until not in got:
            data = sock.recv(65536)
            if not data:
                break
            got += data
        return got


def post(body: dict | bytes, *, path: str = "/v1/chat/completions", headers: str = "",
         version: str = "1.1", auth: bool = True) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    key = f"authorization: Bearer {API_KEY}\r\n" if auth else ""
    return (f"POST {path} HTTP/{version}\r\nhost: x\r\n{key}content-type: application/json\r\n"
            f"content-length: {len(data)}\r\n{headers}\r\n").encode() + data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def json_body(response: bytes) -> dict:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


def metric(stack: Stack, name: str) -> float:
    text = exchange(stack, f"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
                    .encode()).decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_keep_alive_serves_requests_one_after_another_and_pipelined(stack):
    one = post(CHAT)
    got = exchange(stack, one + one + post(CHAT, headers="connection: close\r\n"))
    responses = got.count(b"HTTP/1.1 200 OK")
    assert responses == 3, got[:2000]
    assert got.count(b'"object":"chat.completion"') == 3


def test_expect_100_continue_is_answered_before_the_body(stack):
    data = json.dumps(CHAT).encode()
    with socket.create_connection(("127.0.0.1", port_of(stack)), timeout=20) as sock:
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
                      f"{API_KEY}\r\ncontent-length: {len(data)}\r\nexpect: 100-continue\r\n"
                      f"connection: close\r\n\r\n").encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(data)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    assert status_of(got) == 200 and json_body(got)["object"] == "chat.completion"


def test_an_http_10_client_gets_the_stream_unframed_and_the_connection_closed(stack):
    got = exchange(stack, post({**CHAT, "stream": True}, version="1.0"))
    head, body = got.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head and b"connection: close" in head
    assert body.startswith(b"data: {") and body.endswith(b"data: [DONE]\n\n")


def test_the_stream_is_chunked_sse_ending_with_done(stack):
    got = exchange(stack, post({**CHAT, "stream": True}, headers="connection: close\r\n"))
    head, body = got.split(b"\r\n\r\n", 1)
    assert b"content-type: text/event-stream" in head and b"transfer-encoding: chunked" in head
    assert body.endswith(b"0\r\n\r\n")
    events = [line for line in re.split(rb"\r\n[0-9a-f]+\r\n|\n\n", body) if b"data:" in line]
    assert events[-1].strip().endswith(b"data: [DONE]")


@pytest.mark.parametrize("raw,status", [
    (post(b"x" * 70_000), 413),  # over max_message_bytes (64 KiB)
    (b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n", 401),
    (b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-api-key: wrong\r\n\r\n", 401),
    (post(CHAT, path="/v1/embeddings"), 404),
    (b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-api-key: " + API_KEY.encode() +
     b"\r\n\r\n", 400),
    (b"GET /ws HTTP/1.1\r\nhost: x\r\n\r\n", 426),
    (b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n", 404),
    (b"BREW /coffee HTCPCP/1.0\r\n\r\n", 400),
])
def test_requests_that_cannot_be_served_get_a_status_and_an_error(stack, raw, status):
    got = exchange(stack, raw, until=b"\r\n\r\n")
    assert status_of(got) == status, got[:300]


def test_the_x_api_key_header_is_a_key_too(stack):
    got = exchange(stack, b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                   b"x-api-key: " + API_KEY.encode() + b"\r\n\r\n")
    assert status_of(got) == 200 and json_body(got)["data"][0]["object"] == "model"


def test_websockets_and_http_requests_share_one_capacity_budget(stack):
    async def body() -> bytes:
        sockets = [await open_client(stack.url) for _ in range(3)]  # every slot taken
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                None, exchange, stack, post(CHAT, headers="connection: close\r\n"))
        finally:
            for ws in sockets:
                await ws.close()

    got = asyncio.run(body())
    assert status_of(got) == 429, got[:300]
    assert b"retry-after: 1" in got.lower()
    assert json_body(got)["error"]["code"] == "server_at_capacity"


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_hangs_up_ends_its_turn_as_cancelled(stack, stream):
    cancelled = 'textserve_turns_ended_total{outcome="cancelled",protocol="openai_chat"}'
    before = metric(stack, cancelled)
    with socket.create_connection(("127.0.0.1", port_of(stack)), timeout=20) as sock:
        sock.sendall(post({"messages": [{"role": "user", "content": "a long story"}],
                           "stream": stream}))
        if stream:
            got = b""
            while got.count(b'"content"') < 3:
                got += sock.recv(65536)
        else:
            time.sleep(0.3)  # the reply (1500 tokens) is being generated
    wait_for(lambda: metric(stack, cancelled) == before + 1, 10, what="the turn cancelled")
    wait_for(lambda: all(w["load"] == 0 for w in stack.health()[1]["workers"]), 10,
             what="the chat worker idle again")


def test_a_malformed_request_mid_connection_is_answered_and_the_connection_closed(stack):
    got = exchange(stack, post(CHAT) + b"NOT HTTP AT ALL\r\n\r\n")
    assert got.count(b"HTTP/1.1 200 OK") == 1 and b"HTTP/1.1 400" in got
