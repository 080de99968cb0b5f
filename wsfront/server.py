"""The front's server: moves bytes between clients, their protocol sessions and the broker.

Everything about the protocol lives in ``wsfront.yap`` (over ``wsfront.turns``); this module
only feeds a session and carries out the actions it returns.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import secrets
import signal
import socket
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from broker import frames
from broker.curve import load_client
from pipeline import TurnPlan

from . import yap_frames as wire
from .backend import BrokerLink, ToSession
from .config import FrontConfig
from .guards import api_key_ok
from .limits import KeyedWindows
from .metrics import FrontMetrics, Registry
from .turn_metrics import TurnObserver
from .turns import ToBroker
from .yap import Action, CloseClient, SendClient, YapSession

log = logging.getLogger("wsfront")

AUTH_MESSAGE = ("Authentication required. Provide valid API key via 'api_key' query parameter "
                "or 'X-API-Key' header.")


# How long a client that overflowed its send queue gets to take its error frame and the
# close; after that its TCP connection is dropped.
CLOSE_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    data: bytes  # the frame's JSON, sent as a text frame
    event: Any  # what it says, for the metrics (SendClient.event)


def encode(action: SendClient) -> Outgoing:
    return Outgoing(wire.encode_server(action.frame), action.event)


class Connection:
    """One client: a session plus an ordered outbox drained by a writer task, so a slow
    client never blocks the broker reader or other connections.

    The outbox is bounded in bytes (``max_send_queue_bytes``). It only fills once the
    kernel's and websockets' own buffers are full, that is when the client stopped reading;
    past the bound the session's work is cancelled everywhere, the queued frames are
    dropped and the client gets one error frame and a close (``on_send_overflow``).
    """

    def __init__(self, ws: ServerConnection, session: YapSession, link: BrokerLink,
                 observer: TurnObserver, max_queued_bytes: int) -> None:
        self.ws = ws
        self.session = session
        self.link = link
        self.observer = observer
        self.max_queued_bytes = max_queued_bytes
        self.outbox: asyncio.Queue[Outgoing | CloseClient | None] = asyncio.Queue()
        self.queued_bytes = 0
        self.overflowed = False
        self.loop = asyncio.get_running_loop()
        self.writer = self.loop.create_task(self._write())

    def deliver(self, frame: ToSession) -> None:
        self.apply(self.session.on_broker(frame))

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            kind = type(action)
            if kind is SendClient:
                if self.overflowed:
                    continue  # the client is being dropped: its error frame and close only
                out = encode(action)
                self.outbox.put_nowait(out)
                self.queued_bytes += len(out.data)
                if self.queued_bytes > self.max_queued_bytes:
                    self._overflow()
            elif kind is ToBroker:
                self.link.send(action.frame, self)
                if type(action.frame) is frames.Cancel and self.session.closed:
                    # Nobody waits for these any more: their last frames may never come.
                    self.link.forget(action.frame.request_ids)
            elif not self.overflowed:
                self.outbox.put_nowait(action)  # CloseClient

    async def finish(self, timeout: float) -> None:
        """The connection is over: let the writer send what is queued, up to ``timeout``."""
        self.outbox.put_nowait(None)
        if not self.writer.done():
            await asyncio.wait([self.writer], timeout=timeout)
            self.writer.cancel()

    async def _write(self) -> None:
        while True:
            action = await self.outbox.get()
            if action is None:  # the connection is over; everything before it was sent
                return
            if isinstance(action, CloseClient):
                await self.ws.close(action.code, action.reason)
                return
            self.queued_bytes -= len(action.data)  # websockets and the kernel bound it from here
            if action.event is not None:
                self.observer.on_event(action.event, self.loop.time())
            await self.ws.send(action.data, text=True)

    def _overflow(self) -> None:
        unsent = self.queued_bytes
        log.warning("connection %s: the client stopped reading (%d bytes queued); cancelling "
                    "its work and closing it", self.session.connection_id, unsent)
        self.overflowed = True
        self.writer.cancel()
        self.outbox = asyncio.Queue()
        self.queued_bytes = 0
        last: list[Outgoing] = []
        close = CloseClient(1008, "client too slow")
        for action in self.session.on_send_overflow(unsent):
            if type(action) is ToBroker:
                self.link.send(action.frame, self)
                if type(action.frame) is frames.Cancel:
                    self.link.forget(action.frame.request_ids)
            elif type(action) is CloseClient:
                close = action
            else:
                last.append(encode(action))
        self.writer = self.loop.create_task(self._write_last(last, close))

    async def _write_last(self, last: list[Outgoing], close: CloseClient) -> None:
        """Send the overflow's error frame and close; drop the TCP connection if the client
        cannot take them within ``CLOSE_GRACE_S``."""
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                for out in last:
                    if out.event is not None:
                        self.observer.on_event(out.event, self.loop.time())
                    await self.ws.send(out.data, text=True)
                await self.ws.close(close.code, close.reason)
        except TimeoutError:
            self.ws.transport.abort()
        except ConnectionClosed:
            pass


def api_key_of(request: Request) -> str:
    query = parse_qs(urlsplit(request.path).query)
    return (query.get("api_key") or [""])[0] or request.headers.get("X-API-Key", "")


class Front:
    def __init__(self, config: FrontConfig) -> None:
        if not config.api_key:
            raise ValueError("TEXT_API_KEY is required: the front refuses to serve without an API key")
        self.config = config
        self.link = BrokerLink(config.broker, config.heartbeat_interval_s,
                               config.heartbeat_liveness,
                               curve=load_client(config.curve_dir) if config.curve_dir else None)
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)  # request ids stay unique across fronts
        self.slots = asyncio.Semaphore(config.max_connections)
        self.active = 0
        self.persona_updates = KeyedWindows(config.persona_updates_per_window,
                                            config.persona_update_window_s)
        self.metrics = FrontMetrics()

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

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            status, body = self.health()
            response = connection.respond(HTTPStatus(status), json.dumps(body) + "\n")
            del response.headers["Content-Type"]  # websockets' Headers append on assignment
            response.headers["Content-Type"] = "application/json"
            return response
        if path == "/metrics":
            status = self.link.status
            if status is not None:
                self.metrics.set_workers(status.workers, status.queued)
            self.metrics.connections_active.set(self.active)
            response = connection.respond(HTTPStatus.OK, self.metrics.render())
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = Registry.CONTENT_TYPE
            return response
        if path != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        if self.config.socket_send_buffer_bytes:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                self.config.socket_send_buffer_bytes)
        if not api_key_ok(api_key_of(ws.request), self.config.api_key):
            self.metrics.connections_rejected_total.inc(reason="authentication_failed")
            await ws.send(wire.encode_server(wire.Error(error_code="authentication_failed",
                                                        message=AUTH_MESSAGE)), text=True)
            await ws.close(1008, "authentication failed")
            return
        try:
            await asyncio.wait_for(self.slots.acquire(), self.config.handshake_acquire_timeout_s)
        except asyncio.TimeoutError:
            self.metrics.connections_rejected_total.inc(reason="server_at_capacity")
            await ws.send(wire.encode_server(wire.Error(
                error_code="server_at_capacity", message="Server is at capacity.",
                capacity=self.capacity())), text=True)
            await ws.close(1013, "server at capacity")
            return
        self.active += 1
        self.metrics.connections_total.inc()
        try:
            await self._serve_connection(ws)
        finally:
            self.active -= 1
            self.slots.release()

    async def _serve_connection(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        session = YapSession(self.config, f"{self._prefix}{next(self._ids)}",
                             self.persona_updates, now=loop.time())
        conn = Connection(ws, session, self.link,
                          TurnObserver(self.metrics, self.config.deploy_mode),
                          self.config.max_send_queue_bytes)
        idle = asyncio.create_task(self._watch_idle(conn))
        try:
            async for message in ws:
                conn.apply(session.on_client(message, loop.time()))
                if conn.writer.done():
                    break
        except ConnectionClosed:
            pass
        finally:
            idle.cancel()
            conn.apply(session.on_disconnect())
            await conn.finish(max(self.config.heartbeat_interval_s * 4, CLOSE_GRACE_S))

    @staticmethod
    async def _watch_idle(conn: Connection) -> None:
        """Sleep until the session's idle deadline; activity (a frame, a running turn) moves
        the deadline on, and the watch goes on until the session closes."""
        loop = asyncio.get_running_loop()
        while (deadline := conn.session.idle_deadline()) is not None:
            if loop.time() >= deadline:
                conn.apply(conn.session.on_idle(loop.time()))
                continue  # idle_deadline() is None once closed, later when a turn ran
            await asyncio.sleep(deadline - loop.time() + 0.001)

    async def serve(self) -> None:
        self.link.start()
        stop = asyncio.get_running_loop().create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
        async with serve(self.handle, self.config.host, self.config.port,
                         process_request=self.process_request,
                         # Frames up to 4x the limit reach the session, which answers with an
                         # error frame before closing; bigger ones websockets closes itself.
                         max_size=self.config.max_message_bytes * 4,
                         compression=None) as server:
            log.info("wsfront listening on ws://%s:%d/ws (pid %d), broker %s", self.config.host,
                     self.config.port, os.getpid(), self.config.broker)
            await stop
            server.close()
            await server.wait_closed()
        await self.link.close()
