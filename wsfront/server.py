"""The front's server: one port for every client protocol, HTTP and WebSocket alike.

``Front`` routes each request (``wsfront.connection`` parses it): ``/ws`` is the Yap
WebSocket protocol (``wsfront.yap``), ``/v1/...`` the OpenAI API, ``/healthz`` and ``/metrics``
the operators'. Everything a protocol says lives in its adapter (over ``wsfront.turns``);
the shells here only feed an adapter and carry out the actions it returns.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable
from collections import deque
from urllib.parse import parse_qs

import msgspec

from broker import frames
from broker.curve import load_client
from broker.heap import freeze_startup_heap
from pipeline import TurnPlan

from . import http
from . import openai_chat as oac
from . import responses_frames as rwire
from . import yap_frames as wire
from .backend import BrokerLink, ToSession
from .config import FrontConfig
from .connection import HeldText, HttpConnection, WsConnection
from .http import Request
from .guards import api_key_ok
from .limits import KeyedWindows
from .metrics import FrontMetrics, Registry
from .turn_metrics import TurnObserver
from .turns import ToBroker
from .openai_responses import ResponsesSession
from .yap import Action, CloseClient, SendClient, YapSession

log = logging.getLogger("wsfront")

AUTH_MESSAGE = ("Authentication required. Provide valid API key via 'api_key' query parameter "
                "or 'X-API-Key' header.")


PING_INTERVAL_S = 20.0  # a WebSocket client that does not answer a ping within this is gone


@dataclass(frozen=True)
class WsProtocol:
    """What the WebSocket shell needs to know of one client protocol."""

    name: str  # the metrics' protocol label
    encode: Callable[[Any], bytes]  # a server frame -> the bytes of its text message
    # (front, session, message, now): the session's actions for one client message
    on_client: Callable[[Any, Any, str | bytes, float], list[Action]]
    delta: type  # the frame of streamed text, merged while the client is behind ...
    text_of: Callable[[Any], str]  # ... its text ...
    merged: Callable[[Any, str], Any]  # ... and the first such frame with all their text


YAP = WsProtocol(
    "yap", wire.encode_server, lambda front, session, data, now: session.on_client(data, now),
    wire.Token, lambda frame: frame.text,
    lambda first, text: wire.Token(text=text, request_id=first.request_id))


def _responses_on_client(front: Front, session: ResponsesSession, data: str | bytes,
                         now: float) -> list[Action]:
    session.served = front.served_models()  # what the broker serves now, for its model check
    return session.on_client(data, now, int(time.time()))


RESPONSES = WsProtocol(
    "openai_responses", rwire.encode_server, _responses_on_client,
    rwire.OutputTextDelta, lambda frame: frame.delta,
    lambda first, text: msgspec.structs.replace(first, delta=text))


class SessionShell:
    """One client over an open WebSocket (a Yap session on ``/ws``, an OpenAI Responses one
    on ``/v1/responses``): feeds its session what the client and the broker send, and
    carries out the actions the session returns."""

    def __init__(self, front: Front, ws: WsConnection, session: YapSession | ResponsesSession,
                 protocol: WsProtocol = YAP) -> None:
        self.front = front
        self.ws = ws
        self.session = session
        self.protocol = protocol
        self.link = front.link
        self.loop = asyncio.get_running_loop()
        ws.outbox.observe = TurnObserver(front.metrics, front.config.deploy_mode,
                                         protocol.name).on_event
        ws.outbox.on_writable = self._release
        self._idle: asyncio.TimerHandle | None = None
        self._arm_idle()
        self._held = HeldText(ws.outbox)  # streamed text merged while the client is behind

    def on_text(self, data: str | bytes) -> None:
        self.apply(self.protocol.on_client(self.front, self.session, data, self.loop.time()))
        self._arm_idle()

    def deliver(self, frame: ToSession) -> None:
        self.apply(self.session.on_broker(frame))

    def on_disconnect(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.apply(self.session.on_disconnect())
        self.front.release()

    def on_send_overflow(self, queued: int) -> None:
        log.warning("connection %s: the client stopped reading (%d bytes queued); cancelling "
                    "its work and closing it", self.session.connection_id, queued)
        last: list[tuple[bytes, object]] = []
        close = CloseClient(1008, "client too slow")
        for action in self.session.on_send_overflow(queued):
            if type(action) is ToBroker:
                self._to_broker(action)
            elif type(action) is CloseClient:
                close = action
            else:
                last.append((self.protocol.encode(action.frame), action.event))
        self.ws.last_words(last, close.code, close.reason)

    def apply(self, actions: list[Action]) -> None:
        ws = self.ws
        delta = self.protocol.delta
        for action in actions:
            kind = type(action)
            if kind is SendClient:
                frame = action.frame
                if type(frame) is delta and (ws.outbox.paused or self._held):
                    self._held.hold(frame, self.protocol.text_of(frame), action.event)
                    continue
                if self._held:
                    self._release()
                ws.send_text(self.protocol.encode(frame), action.event)
            elif kind is ToBroker:
                self._to_broker(action)
            else:  # CloseClient
                if self._held:
                    self._release()
                ws.close(action.code, action.reason)

    def _release(self) -> None:
        if (held := self._held.take()) is not None:
            first, text, event = held
            self.ws.send_text(self.protocol.encode(self.protocol.merged(first, text)), event)

    def _to_broker(self, action: ToBroker) -> None:
        self.link.send(action.frame, self)
        if type(action.frame) is frames.Cancel and self.session.closed:
            # Nobody waits for these any more: their last frames may never come.
            self.link.forget(action.frame.request_ids)

    def _arm_idle(self) -> None:
        """A timer at the session's idle deadline; activity (a frame, a running turn) moves
        the deadline on, and the watch goes on until the session closes."""
        deadline = self.session.idle_deadline()
        if deadline is None:
            return
        if self._idle is not None:
            if self._idle.when() <= deadline:
                return  # it fires first and re-arms
            self._idle.cancel()
        self._idle = self.loop.call_at(deadline + 0.001, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        self.apply(self.session.on_idle(self.loop.time()))
        self._arm_idle()


class OpenAIExchange:
    """One OpenAI request with a turn (a chat completion) on an HTTP connection: feeds its
    adapter what the broker sends, and carries out the actions it returns."""

    def __init__(self, front: Front, conn: HttpConnection, adapter: oac.ChatCompletion,
                 chunked: bool) -> None:
        self.front = front
        self.conn = conn
        self.adapter = adapter
        self.chunked = chunked
        self.link = front.link
        self.loop = asyncio.get_running_loop()
        self.observe = TurnObserver(front.metrics, front.config.deploy_mode, "openai_chat").on_event
        self.finished = False
        self.outbox = conn.outbox
        assert self.outbox is not None
        self.outbox.on_writable = self._release
        self._held = HeldText(self.outbox)  # text chunks merged while the client is behind

    def deliver(self, frame: ToSession) -> None:
        if not self.finished:
            self.apply(self.adapter.on_broker(frame))

    def on_disconnect(self) -> None:
        if not self.finished:
            self.apply(self.adapter.on_disconnect())
            self._finish()

    def apply(self, actions: list[oac.Action]) -> None:
        conn = self.conn
        for action in actions:
            kind = type(action)
            if kind is oac.StreamData:
                if action.text is not None and (self.outbox.paused or self._held):
                    self._held.hold(None, action.text, action.event)
                    continue
                if self._held:
                    self._release()
                if action.data:
                    conn.write(http.chunk(action.data) if self.chunked else action.data)
                if action.event is not None:
                    self.observe(action.event, self.loop.time())
            elif kind is ToBroker:
                self.link.send(action.frame, self)
                if type(action.frame) is frames.Cancel and self.adapter.done:
                    self.link.forget(action.frame.request_ids)  # nobody waits for them
            elif kind is oac.Note:
                self.observe(action.event, self.loop.time())
            elif kind is oac.StreamStart:
                conn.write(http.stream_head(200, "text/event-stream", chunked=self.chunked))
            elif kind is oac.StreamEnd:
                if self.chunked:
                    conn.write(http.LAST_CHUNK)
                self._finish()
                conn.exchange_done()
            elif kind is oac.Respond:
                if action.event is not None:
                    self.observe(action.event, self.loop.time())
                self._finish()
                conn.respond(action.status, action.body, "application/json", action.headers)

    def _release(self) -> None:
        held = self._held.take()
        if held is not None and not self.finished:
            _, text, event = held
            data = self.adapter.text_chunk(text)
            self.conn.write(http.chunk(data) if self.chunked else data)
            self.observe(event, self.loop.time())

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.outbox.on_writable = None
            self.front.release()


def api_key_of(request: Request) -> str:
    query = parse_qs(request.query)
    bearer = request.header("authorization")
    if bearer[:7].lower() == "bearer ":
        return bearer[7:].strip()
    return (query.get("api_key") or [""])[0] or request.header("x-api-key")


class Capacity:
    """One budget of client slots for the whole front: an open WebSocket holds one for its
    life, an HTTP request while it runs. ``take`` waits up to ``timeout`` for a slot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.used < self.limit and not self.waiters:
            self.used += 1
            return True
        return False

    async def take(self, timeout: float) -> bool:
        if self.try_take():
            return True
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return True
        except TimeoutError:
            if waiter.done():  # handed a slot just as the wait ran out: keep it
                return True
            waiter.cancel()
            return False

    def give(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: ``used`` stays
                return
        self.used -= 1


class Front:
    websocket_paths = frozenset({"/ws", "/v1/responses"})

    def __init__(self, config: FrontConfig) -> None:
        if not config.api_key:
            raise ValueError("TEXT_API_KEY is required: the front refuses to serve without an API key")
        self.config = config
        self.link = BrokerLink(config.broker, config.heartbeat_interval_s,
                               config.heartbeat_liveness,
                               curve=load_client(config.curve_dir) if config.curve_dir else None)
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)  # request ids stay unique across fronts
        self.slots = Capacity(config.max_connections)
        self.persona_updates = KeyedWindows(config.persona_updates_per_window,
                                            config.persona_update_window_s)
        self.metrics = FrontMetrics()
        self.http_connections: set[HttpConnection] = set()
        self.websockets: set[WsConnection] = set()

    @property
    def active(self) -> int:
        return self.slots.used

    def next_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def release(self) -> None:
        self.slots.give()

    def capacity(self) -> wire.Capacity:
        cap = self.config.max_connections
        return wire.Capacity(self.active, cap, max(0, cap - self.active), self.active >= cap)

    def needed_kinds(self) -> list[str]:
        plan = TurnPlan(self.config.deploy_mode, self.config.concurrent_model_call)
        return [kind for kind, needed in (("tool", plan.needs_tool), ("chat", plan.needs_chat))
                if needed]

    def health(self) -> tuple[int, dict[str, object]]:
        ready = self.link.ready_kinds()
        if ready is None:
            return 503, {"status": "unavailable", "reason": "broker is not answering"}
        body: dict[str, object] = {"status": "ok", "deploy_mode": self.config.deploy_mode,
                                   "ready": ready, "workers": self.link.worker_loads()}
        missing = [kind for kind in self.needed_kinds() if ready[kind] == 0]
        if missing:
            body.update(status="unavailable", reason="no ready " + " or ".join(missing) + " worker")
            return 503, body
        return 200, body

    # ------------------------------------------------------------ HTTP

    def route(self, conn: HttpConnection, request: Request) -> None:
        path = request.path
        if path == "/healthz":
            status, body = self.health()
            conn.respond(status, json.dumps(body).encode() + b"\n")
        elif path == "/metrics":
            status = self.link.status
            if status is not None:
                self.metrics.set_workers(status.workers, status.queued)
            self.metrics.connections_active.set(self.active)
            conn.respond(200, self.metrics.render().encode(), Registry.CONTENT_TYPE)
        elif path.startswith("/v1/"):
            self._openai(conn, request)
        elif path in self.websocket_paths:
            conn.respond(426, b"this path speaks WebSocket: send an Upgrade request\n",
                         "text/plain; charset=utf-8", (("upgrade", "websocket"),))
        else:
            conn.respond(404, b"not found\n", "text/plain; charset=utf-8")

    def served_models(self) -> list[str] | None:
        """The chat models the workers serve, as the broker last reported them; None while
        the broker has not answered (a front just started, a broker restarting)."""
        status = self.link.status
        if status is None or self.link.ready_kinds() is None:
            return None
        return list(dict.fromkeys(w.model for w in status.workers if w.kind == "chat"))

    def _openai(self, conn: HttpConnection, request: Request) -> None:
        def refuse(code: str, message: str, param: str | None = None,
                   retry_after_s: float | None = None) -> None:
            response = oac.error_response(code, message, param, retry_after_s)
            self.metrics.errors_total.inc(code=code, protocol="openai_chat")
            conn.respond(response.status, response.body, "application/json", response.headers)

        if not api_key_ok(api_key_of(request), self.config.api_key):
            refuse("authentication_failed", "Incorrect API key provided: send it as "
                   "'Authorization: Bearer KEY' (or the X-API-Key header).")
            return
        path, method = request.path.rstrip("/"), request.method
        if path == "/v1/models" and method == "GET":
            conn.respond(200, oac.model_list(self.served_models() or [], int(time.time())))
            return
        if path != "/v1/chat/completions":
            refuse("not_found", f"no such endpoint: {method} {request.path}")
            return
        if method != "POST":
            refuse("invalid_request", f"{request.path} takes POST, not {method}")
            return
        refusal = conn.guards.on_message(request.body, self.loop_time())
        if refusal is not None:
            refuse(refusal.code, refusal.message, None, refusal.retry_after_s)
            return
        if self.slots.try_take():
            self._chat_completion(conn, request)
            return
        conn.transport.pause_reading()  # type: ignore[union-attr]
        asyncio.get_running_loop().create_task(self._chat_completion_later(conn, request, refuse))

    async def _chat_completion_later(self, conn: HttpConnection, request: Request,
                                     refuse: object) -> None:
        got = await self.slots.take(self.config.handshake_acquire_timeout_s)
        if conn.closed:
            if got:
                self.release()
            return
        conn.transport.resume_reading()  # type: ignore[union-attr]
        if got:
            self._chat_completion(conn, request)
            return
        self.metrics.connections_rejected_total.inc(reason="server_at_capacity")
        refuse("server_at_capacity", "Server is at capacity; retry shortly.",  # type: ignore[operator]
               None, 1.0)

    def _chat_completion(self, conn: HttpConnection, request: Request) -> None:
        adapter = oac.ChatCompletion(self.config, self.next_id(), self.served_models(),
                                     int(time.time()))
        exchange = OpenAIExchange(self, conn, adapter, chunked=not request.http_10)
        conn.exchange = exchange
        exchange.apply(adapter.start(request.body))

    @staticmethod
    def loop_time() -> float:
        return asyncio.get_running_loop().time()

    def refuse_http(self, conn: HttpConnection, status: int, message: str) -> None:
        """A request that could not be read (malformed, too big)."""
        conn.respond(status, json.dumps({"error": {"message": message, "type":
                     "invalid_request_error", "param": None, "code": None}}).encode())

    # ------------------------------------------------------------ WebSocket

    def admit_websocket(self, ws: WsConnection) -> tuple[int, str, str] | None:
        """Before the handshake completes: the OpenAI Responses socket refuses a bad key
        (401) and a full front (429) with an HTTP answer, as OpenAI's clients expect; the Yap
        socket keeps its in-band error frames (``open_websocket``)."""
        if ws.request.path != "/v1/responses":
            return None
        if not api_key_ok(api_key_of(ws.request), self.config.api_key):
            self.metrics.connections_rejected_total.inc(reason="authentication_failed")
            return 401, oac.error_body("authentication_failed", "Incorrect API key provided: "
                                       "send it as 'Authorization: Bearer KEY'.").decode(), \
                "application/json"
        if not self.slots.try_take():
            self.metrics.connections_rejected_total.inc(reason="server_at_capacity")
            return 429, oac.error_body("server_at_capacity", "Server is at capacity; retry "
                                       "shortly.").decode(), "application/json"
        ws.admitted = True
        return None

    def websocket_failed(self, ws: WsConnection) -> None:
        if ws.admitted:
            ws.admitted = False
            self.release()

    def open_websocket(self, ws: WsConnection) -> None:
        if ws.request.path == "/v1/responses":
            self.metrics.connections_total.inc()
            session = ResponsesSession(self.config, self.next_id(), self.served_models(),
                                       now=asyncio.get_running_loop().time())
            ws.attach(SessionShell(self, ws, session, RESPONSES))
            return
        if not api_key_ok(api_key_of(ws.request), self.config.api_key):
            self.metrics.connections_rejected_total.inc(reason="authentication_failed")
            ws.send_text(wire.encode_server(wire.Error(error_code="authentication_failed",
                                                       message=AUTH_MESSAGE)))
            ws.close(1008, "authentication failed")
            return
        if self.slots.try_take():
            self._attach_yap(ws)
            return
        ws.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._wait_for_slot(ws))

    async def _wait_for_slot(self, ws: WsConnection) -> None:
        got = await self.slots.take(self.config.handshake_acquire_timeout_s)
        if ws.gone:
            if got:
                self.release()
            return
        ws.transport.resume_reading()
        if got:
            self._attach_yap(ws)
            return
        self.metrics.connections_rejected_total.inc(reason="server_at_capacity")
        ws.send_text(wire.encode_server(wire.Error(
            error_code="server_at_capacity", message="Server is at capacity.",
            capacity=self.capacity())))
        ws.close(1013, "server at capacity")

    def _attach_yap(self, ws: WsConnection) -> None:
        self.metrics.connections_total.inc()
        session = YapSession(self.config, self.next_id(), self.persona_updates,
                             now=asyncio.get_running_loop().time())
        ws.attach(SessionShell(self, ws, session, YAP))

    def websocket_closed(self, ws: WsConnection) -> None:
        pass

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            for ws in list(self.websockets):
                ws.keepalive()

    # ------------------------------------------------------------ life

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.link.start()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set_result, None)
        # Several front processes share the port (SO_REUSEPORT) only when asked to: with one,
        # a port already taken (another stack) stays an error.
        server = await loop.create_server(lambda: HttpConnection(self), self.config.host,
                                          self.config.port, reuse_address=True,
                                          reuse_port=self.config.processes > 1)
        keepalive = loop.create_task(self._keepalive())
        freeze_startup_heap(log)
        log.info("wsfront listening on http://%s:%d (/ws, /v1; pid %d), broker %s",
                 self.config.host, self.config.port, os.getpid(), self.config.broker)
        try:
            await stop
        finally:
            keepalive.cancel()
            server.close()
            for ws in list(self.websockets):
                ws.close(1001, "server shutting down")
            for conn in list(self.http_connections):
                conn.transport.close()  # type: ignore[union-attr]
            await asyncio.sleep(0.05)  # let the close frames go
            await self.link.close()
