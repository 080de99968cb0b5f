"""The front's connections: one asyncio protocol per TCP connection, moving bytes only.

A connection starts as HTTP/1.1 (``HttpConnection``: requests parsed by ``wsfront.http``,
each routed by the ``Front`` to a handler). A WebSocket upgrade hands the socket to
``WsConnection``, which drives websockets' sans-I/O ``ServerProtocol``: websockets frames
and parses, this module only feeds it bytes and writes what it returns. Everything a protocol
says lives in its adapter (``wsfront.yap``, ``wsfront.openai_chat``); the shell carries out
the actions the adapter returns.

Both write through an ``Outbox``: bytes go to the transport at once while it takes them, and
queue (bounded) while asyncio holds more than its high-water mark, that is once the client
stopped reading.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Protocol

from websockets.frames import Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import OPEN
from websockets.server import ServerProtocol


from . import http
from .guards import ConnectionGuards

if TYPE_CHECKING:
    from .server import Front

log = logging.getLogger("wsfront")
# websockets logs every connection opened and closed at INFO; the front's log keeps problems.
_ws_log = logging.getLogger("wsfront.websocket")
_ws_log.setLevel(logging.WARNING)

# How long a client that overflowed its send queue gets to take its error frame and the
# close; after that its TCP connection is dropped.
CLOSE_GRACE_S = 2.0
# How long a closing WebSocket waits for the client's close frame.
CLOSE_TIMEOUT_S = 10.0
# Bytes the event loop holds for a client beyond the kernel's buffer before it tells us the
# client is behind (asyncio's default is 64 KiB).
TRANSPORT_HIGH_WATER = 4 * 1024

Observe = Callable[[Any, float], None]


class Outbox:
    """Bytes for one client, in order; ``event`` is what a piece says, for the metrics,
    observed when the piece goes to the transport. Past ``limit`` queued bytes,
    ``on_overflow(queued)`` is called once and the queue is dropped."""

    __slots__ = ("transport", "limit", "observe", "on_overflow", "on_writable", "loop", "paused",
                 "queue", "queued", "overflowed")

    def __init__(self, transport: asyncio.Transport, limit: int, observe: Observe | None,
                 on_overflow: Callable[[int], None]) -> None:
        self.transport = transport
        self.limit = limit
        self.observe = observe
        self.on_overflow = on_overflow
        # Told when the client takes bytes again (the shells then send the text they merged
        # while it was behind).
        self.on_writable: Callable[[], None] | None = None
        self.loop = asyncio.get_running_loop()
        self.paused = False
        self.queue: deque[tuple[bytes, Any]] = deque()
        self.queued = 0
        self.overflowed = False

    def write(self, data: bytes, event: Any = None) -> None:
        if self.overflowed:
            return
        if not self.paused:
            self.transport.write(data)
            if event is not None and self.observe is not None:
                self.observe(event, self.loop.time())
            return
        self.queue.append((data, event))
        self.queued += len(data)
        if self.queued > self.limit:
            self.overflow(self.queued)

    def write_now(self, data: bytes, event: Any = None) -> None:
        """Past the queue (the last words to a client being dropped)."""
        self.transport.write(data)
        if event is not None and self.observe is not None:
            self.observe(event, self.loop.time())

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        while self.queue and not self.paused:  # write() may pause us again
            data, event = self.queue.popleft()
            self.queued -= len(data)
            self.write(data, event)
        if not self.paused and self.on_writable is not None:
            self.on_writable()

    def overflow(self, queued: int) -> None:
        """The shell's own bound (queued plus what it merged) is passed."""
        if not self.overflowed:
            self.overflowed = True
            self.queue.clear()
            self.queued = 0
            self.on_overflow(queued)


class HeldText:
    """Streamed text that waits, merged, while its client is behind (``Outbox.paused``):
    one frame of it goes when the client takes bytes again. What waits so counts with the
    queued bytes against the outbox's bound."""

    __slots__ = ("outbox", "first", "event", "texts", "size")

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.first: Any = None  # the first held frame (its fields make the merged one)
        self.event: Any = None
        self.texts: list[str] = []
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self.texts)

    def hold(self, first: Any, text: str, event: Any) -> None:
        if not self.texts:
            self.first, self.event = first, event
        self.texts.append(text)
        self.size += len(text)
        outbox = self.outbox
        if self.size + outbox.queued > outbox.limit:
            size = self.size + outbox.queued
            self.take()
            outbox.overflow(size)

    def take(self) -> tuple[Any, str, Any] | None:
        """(the first frame, all the text, its event), and nothing held any more."""
        if not self.texts:
            return None
        got = (self.first, "".join(self.texts), self.event)
        self.first = self.event = None
        self.texts, self.size = [], 0
        return got


def _set_sndbuf(transport: asyncio.BaseTransport, size: int) -> None:
    if size:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


# ---------------------------------------------------------------- HTTP


class Exchange(Protocol):
    """One HTTP request being answered (a chat completion, say): it writes through
    ``conn`` and calls ``conn.exchange_done()`` after its last byte."""

    def on_disconnect(self) -> None: ...


class HttpConnection(asyncio.Protocol):
    def __init__(self, front: Front) -> None:
        self.front = front
        self.config = front.config
        self.loop = asyncio.get_running_loop()
        self.reader = http.RequestReader(front.config.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.outbox: Outbox | None = None
        self.pending: deque[http.Request] = deque()
        self.exchange: Exchange | None = None
        self.keep_alive = True
        self.closed = False
        self.handed_over = False  # to a WsConnection
        self.broken: http.BadRequest | None = None  # answered once the requests before it are
        self.peer = ""
        self._idle: asyncio.TimerHandle | None = None
        self.last_activity = self.loop.time()
        # The limits every protocol shares, per connection: a request counts as a message.
        self.guards = ConnectionGuards(front.config, self.last_activity)

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _set_sndbuf(transport, self.config.socket_send_buffer_bytes)
        # Past this much unsent the client is behind: frames queue (bounded) or merge.
        transport.set_write_buffer_limits(high=TRANSPORT_HIGH_WATER)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        self.outbox = Outbox(transport, self.config.max_send_queue_bytes, None, self._overflow)
        self.front.http_connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self.broken is not None:
            return  # nothing after an unreadable request is read
        try:
            requests = self.reader.feed(data)
        except http.Upgrade as upgrade:
            if self.exchange is not None or self.pending:
                self._refuse(400, "a WebSocket upgrade must not follow a request in flight")
                return
            self._upgrade(upgrade.request, upgrade.rest)
            return
        except http.BadRequest as bad:
            self.pending.extend(bad.before)  # answered first, then the bad one
            self.broken = bad
            self.reader = http.RequestReader(0)  # read nothing more
            self._next()
            return
        if self.reader.continue_wanted:
            self.reader.continue_wanted = False
            self.transport.write(http.CONTINUE)  # type: ignore[union-attr]
        if requests:
            self.pending.extend(requests)
            self._next()

    def eof_received(self) -> bool:
        return False  # a half-closed client is gone: close our side too (connection_lost)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handed_over:
            return
        self.closed = True
        self.front.http_connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        exchange, self.exchange = self.exchange, None
        self.pending.clear()
        if exchange is not None:
            exchange.on_disconnect()

    def pause_writing(self) -> None:
        self.outbox.pause()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.outbox.resume()  # type: ignore[union-attr]

    # ------------------------------------------------------------ for exchanges

    def write(self, data: bytes, event: Any = None) -> None:
        if not self.closed:
            self.outbox.write(data, event)  # type: ignore[union-attr]

    def respond(self, status: int, body: bytes, content_type: str = "application/json",
                headers: tuple[tuple[str, str], ...] = ()) -> None:
        """A whole response; the exchange is over."""
        if self.closed:
            return
        self.write(http.response(status, body, content_type, headers, self.keep_alive))
        self.exchange_done()

    def exchange_done(self) -> None:
        self.exchange = None
        self.last_activity = self.loop.time()
        if self.closed:
            return
        if not self.keep_alive:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]  (after the buffer is flushed)
            return
        self._next()

    # ------------------------------------------------------------ inside

    def _next(self) -> None:
        while self.exchange is None and self.pending and not self.closed:
            request = self.pending.popleft()
            self.keep_alive = request.keep_alive and not request.http_10
            self.exchange = _Placeholder()
            self.front.route(self, request)  # answers at once, or sets its own exchange
        if self.broken is not None and self.exchange is None and not self.pending:
            bad, self.broken = self.broken, None  # what could not be read: answer, close
            if not self.closed:
                self.keep_alive = False
                self.front.refuse_http(self, bad.status, bad.message)

    def _refuse(self, status: int, message: str) -> None:
        """A request that cannot be served on this connection: answered after the ones
        before it, then the connection is closed."""
        self.broken = http.BadRequest(status, message)
        self.reader = http.RequestReader(0)  # read nothing more
        self._next()

    def _overflow(self, queued: int) -> None:
        log.warning("http connection %s: the client stopped reading (%d bytes queued); "
                    "cancelling its work and closing it", self.peer, queued)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.on_disconnect()
        self.closed = True
        self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)  # type: ignore[union-attr]
        self.transport.close()  # type: ignore[union-attr]

    def _arm_idle(self) -> None:
        timeout = self.config.idle_timeout_s
        if timeout > 0 and not self.closed:
            self._idle = self.loop.call_at(self.last_activity + timeout, self._on_idle)

    def _on_idle(self) -> None:
        if self.closed or self.handed_over:
            return
        if self.exchange is not None:  # a response in progress is activity
            self.last_activity = self.loop.time()
        if self.loop.time() >= self.last_activity + self.config.idle_timeout_s:
            self.closed = True
            self.front.http_connections.discard(self)
            self.transport.close()  # type: ignore[union-attr]
            return
        self._arm_idle()

    def _upgrade(self, request: http.Request, rest: bytes) -> None:
        self.handed_over = True
        self.front.http_connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        transport = self.transport
        assert transport is not None
        ws = WsConnection(self.front, transport, request, rest)
        transport.set_protocol(ws)
        ws.start()


class _Placeholder:
    """Stands for a request the router has not answered yet (it may wait for capacity)."""

    def on_disconnect(self) -> None:
        pass


# ---------------------------------------------------------------- WebSocket


class WsHandler(Protocol):
    """What runs over an open WebSocket (the Yap session shell, say)."""

    def on_text(self, data: str | bytes) -> None: ...

    def on_disconnect(self) -> None: ...


class WsConnection(asyncio.Protocol):
    """A WebSocket over websockets' sans-I/O protocol; ``handler`` gets the client's
    messages and writes with ``send_text`` / ``close``."""

    def __init__(self, front: Front, transport: asyncio.Transport, request: http.Request,
                 rest: bytes) -> None:
        self.front = front
        self.config = front.config
        self.loop = asyncio.get_running_loop()
        self.transport = transport
        self.request = request
        self.protocol = ServerProtocol(max_size=front.config.max_message_bytes * 4, logger=_ws_log)
        self._first = request.raw_head + rest
        self.handler: WsHandler | None = None
        self.early: list[bytes] = []  # bytes that came before the handler was attached
        self.outbox = Outbox(transport, self.config.max_send_queue_bytes, None, self._overflow)
        self.fragments: list[bytes] = []
        self.fragment_text = False
        self.closing = False
        self.gone = False
        self.pong_pending = False
        self.admitted = False  # a slot was taken for it at the handshake
        self._close_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ opening

    def start(self) -> None:
        """Complete the handshake, then let the Front attach a handler (or refuse)."""
        self.protocol.receive_data(self._first)
        events = self.protocol.events_received()
        if not events or not isinstance(events[0], WsRequest):
            self._flush()
            self.transport.close()
            return
        ws_request = events[0]
        if self.request.path not in self.front.websocket_paths:
            self.protocol.send_response(self.protocol.reject(404, "not found\n"))
            self._flush()
            return
        refusal = self.front.admit_websocket(self)  # a protocol that refuses at the handshake
        if refusal is not None:
            status, body, content_type = refusal
            response = self.protocol.reject(status, body)
            del response.headers["Content-Type"]  # websockets' Headers append on assignment
            response.headers["Content-Type"] = content_type
            self.protocol.send_response(response)
            self._flush()
            return
        response = self.protocol.accept(ws_request)
        self.protocol.send_response(response)
        self._flush()
        if self.protocol.state is not OPEN:
            self.front.websocket_failed(self)  # a bad handshake: what admitting took goes back
            return
        self.front.websockets.add(self)
        self._frames(events[1:])
        self.front.open_websocket(self)

    def attach(self, handler: WsHandler) -> None:
        self.handler = handler
        early, self.early = self.early, []
        for data in early:
            if self.gone or self.closing:
                break
            handler.on_text(data)

    # ------------------------------------------------------------ asyncio

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._frames(self.protocol.events_received())
        self._flush()
        if self.protocol.state is not OPEN and not self.closing:
            self._lost()  # the client closed, or broke the protocol (websockets answered)

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.front.websockets.discard(self)
        self._lost()

    def pause_writing(self) -> None:
        self.outbox.pause()

    def resume_writing(self) -> None:
        self.outbox.resume()

    # ------------------------------------------------------------ for handlers

    def send_text(self, data: bytes, event: Any = None) -> None:
        if self.gone or self.closing:
            return
        self.protocol.send_text(data)
        for piece in self.protocol.data_to_send():
            self.outbox.write(piece, event)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the TCP connection goes when the client answered,
        or after ``CLOSE_TIMEOUT_S``."""
        if self.closing or self.gone:
            return
        self.closing = True
        self.protocol.send_close(code, reason)
        self._flush()
        self._close_timer = self.loop.call_later(CLOSE_TIMEOUT_S, self.transport.abort)

    def last_words(self, pieces: list[tuple[bytes, Any]], code: int, reason: str) -> None:
        """Frames and a close past the dropped queue; the connection goes after
        ``CLOSE_GRACE_S`` whether the client took them or not."""
        for data, event in pieces:
            self.protocol.send_text(data)
            for piece in self.protocol.data_to_send():
                self.outbox.write_now(piece, event)
        self.closing = True
        self.protocol.send_close(code, reason)
        for piece in self.protocol.data_to_send():
            if piece:
                self.outbox.write_now(piece)
        self._close_timer = self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)

    def keepalive(self) -> None:
        """Called every ping interval: a client that did not answer the last ping is gone."""
        if self.gone or self.closing:
            return
        if self.pong_pending:
            log.info("websocket %s: no pong within the ping interval; dropping it",
                     self.transport.get_extra_info("peername"))
            self.transport.abort()
            return
        self.pong_pending = True
        self.protocol.send_ping(b"")
        self._flush()

    # ------------------------------------------------------------ inside

    def _frames(self, events: list[Any]) -> None:
        for frame in events:
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if not frame.fin:
                    self.fragments = [frame.data]
                    self.fragment_text = opcode is Opcode.TEXT
                    continue
                self._message(frame.data, opcode is Opcode.TEXT)
            elif opcode is Opcode.CONT:
                self.fragments.append(frame.data)
                if frame.fin:
                    data, self.fragments = b"".join(self.fragments), []
                    self._message(data, self.fragment_text)
            elif opcode is Opcode.PONG:
                self.pong_pending = False

    def _message(self, data: bytes, text: bool) -> None:
        message: str | bytes = data
        if text:
            try:
                message = data.decode("utf-8")
            except UnicodeDecodeError:
                pass  # the handler answers bytes it cannot read with an error
        if self.handler is None:
            self.early.append(message)  # type: ignore[arg-type]
        elif not self.closing:
            self.handler.on_text(message)

    def _flush(self) -> None:
        for piece in self.protocol.data_to_send():
            if piece:
                self.outbox.write(piece)
            else:  # websockets' end of stream: the closing handshake is done
                self.transport.close()

    def _lost(self) -> None:
        if self.gone:
            return
        self.gone = True
        self.front.websockets.discard(self)
        if self.protocol.close_expected() and self._close_timer is None:
            self._close_timer = self.loop.call_later(CLOSE_TIMEOUT_S, self.transport.abort)
        if self.handler is not None:
            self.handler.on_disconnect()
        self.front.websocket_closed(self)

    def _overflow(self, queued: int) -> None:
        handler = self.handler
        if handler is not None and hasattr(handler, "on_send_overflow"):
            handler.on_send_overflow(queued)
        else:
            self.transport.abort()

