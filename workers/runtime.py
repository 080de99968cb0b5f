"""The worker process's loop: one DEALER socket to the broker, one engine, one asyncio loop.

A thin shell around ``WorkerCore`` (``workers.core``), which holds every rule: it decodes
the broker's frames and feeds them to the core with the time, runs the engine calls the
core asks for as tasks and feeds their steps and ends back, ticks the heartbeat, and carries
out the core's actions (send, flush at the end of the tick, abort, stop, log).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import msgspec
import zmq
import zmq.asyncio

from broker import frames
from broker.curve import load_client, secure_client
from broker.handshake_monitor import log_refusals, monitor_refusals
from broker.heap import freeze_startup_heap

from .config import WorkerConfig
from .core import (
    Abort, Action, Classify, EngineCall, FlushLater, FlushSoon, Generate, Log, Send, Stop, Warm,
    WorkerCore,
)
from .engines import ChatEngine, EngineUnavailable, RequestCancelled, ToolEngine

log = logging.getLogger("workers")

SHUTDOWN_GRACE_S = 2.0  # aborted requests get this long to end on their own
CLOSE_LINGER_MS = 1000  # last frames (Finished cancelled) get this long to leave at exit

# The core's clock: monotonic and fine-grained (uvloop's loop.time() counts whole ms, too
# coarse for the cancel latency the core logs).
clock = time.perf_counter


class WorkerRuntime:
    def __init__(self, cfg: WorkerConfig, engine: ChatEngine | ToolEngine, *, model_label: str,
                 context: zmq.asyncio.Context | None = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.core = WorkerCore(cfg, model_label=model_label, pid=os.getpid())
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sock: zmq.asyncio.Socket | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}  # engine calls, by request id
        self._refusal_watch: asyncio.Task[None] | None = None  # CurveZMQ refusals, logged
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Serve until Shutdown, SIGTERM/SIGINT or a dead engine; the process exit code."""
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, self.stop, 0, f"signal {sig.name}")
        try:
            return await self._serve_until_stopped()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def _serve_until_stopped(self) -> int:
        assert self._stop is not None
        if not await self._start_engine():
            return self.core.exit_code
        self._sock = self._connect()
        freeze_startup_heap(log)  # the engine's objects: never walked by a collection mid-stream
        self._carry(self.core.on_engine_started(getattr(self.engine, "tokenizer", None), clock()))
        tasks = [asyncio.create_task(self._receive(), name="receive"),
                 asyncio.create_task(self._heartbeat(), name="heartbeat")]
        await self._stop.wait()
        for task in tasks:  # nothing more to hear, and no liveness to judge while closing
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._shutdown()
        if self._refusal_watch is not None:
            self._refusal_watch.cancel()
            await asyncio.gather(self._refusal_watch, return_exceptions=True)
        self._sock.close(linger=CLOSE_LINGER_MS)
        log.info("exit %d", self.core.exit_code)
        return self.core.exit_code

    def stop(self, code: int, reason: str) -> None:
        self._carry(self.core.stop(code, reason))

    async def _start_engine(self) -> bool:
        assert self._stop is not None
        start = asyncio.create_task(self.engine.start())
        stopped = asyncio.create_task(self._stop.wait())
        await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not start.done():  # told to stop while loading: nothing to serve, nothing to send
            start.cancel()
            return False
        try:
            start.result()
        except Exception as exc:
            self._carry(self.core.on_engine_start_failed(
                exc, unavailable=isinstance(exc, EngineUnavailable)))
            return False
        return True

    def _connect(self) -> zmq.asyncio.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.cfg.name.encode())
        sock.setsockopt(zmq.LINGER, 0)  # a dead broker must never hold up our exit
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        if self.cfg.curve_dir:
            keys = load_client(self.cfg.curve_dir)
            secure_client(sock, keys)
            self._refusal_watch = asyncio.create_task(
                log_refusals(sock, monitor_refusals(sock), keys.public, log))
        sock.connect(self.cfg.connect)
        return sock

    async def _shutdown(self) -> None:
        self._carry(self.core.shutdown(clock()))
        tasks = list(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
            for task in late:  # their handler still answers "cancelled" on the way out
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._flush()
        try:
            await asyncio.wait_for(self.engine.close(), timeout=10)
        except Exception:
            log.exception("engine close failed")

    # ------------------------------------------------------------------ inbound

    async def _receive(self) -> None:
        assert self._sock is not None
        core = self.core
        while True:
            parts = await self._sock.recv_multipart()
            now = clock()
            try:
                msg = frames.worker_decoder.decode(parts[-1])
            except msgspec.DecodeError as exc:
                self._carry(core.on_undecodable(str(exc), now))
                continue
            self._carry(core.on_frame(parts[0] if len(parts) > 1 else b"", msg, now))

    async def _heartbeat(self) -> None:
        interval = self.cfg.heartbeat_interval_s
        while True:
            await asyncio.sleep(interval)
            self._carry(self.core.tick(clock(), self.engine.alive()))

    # ------------------------------------------------------------------ engine calls

    async def _call_engine(self, call: EngineCall) -> None:
        """Run one request's engine call and tell the core how it went."""
        core, request = self.core, call.request
        try:
            if request.cancelled:  # aborted before the engine saw it: abort() ignored it
                raise RequestCancelled(request.request_id)
            if isinstance(call, Generate):
                engine: ChatEngine = self.engine  # type: ignore[assignment]
                on_step, schedule = core.on_step, self._schedule_flush
                async for step in engine.generate(request.request_id, call.prompt,
                                                  call.max_tokens, call.sampling):
                    if (flush := on_step(request, step)) is not None:
                        schedule(flush)
                actions = core.on_stream_end(request, clock())
            elif isinstance(call, Warm):
                chat: ChatEngine = self.engine  # type: ignore[assignment]
                actions = core.on_warmed(request, await chat.warm(call.prefix))
            else:
                tool: ToolEngine = self.engine  # type: ignore[assignment]
                actions = core.on_decision(request, await tool.classify(
                    request.request_id, call.utterance, call.history))
        except (Exception, asyncio.CancelledError) as exc:
            actions = core.on_failure(request, exc)
        finally:
            self._tasks.pop(request.request_id, None)
        self._carry(actions)

    # ------------------------------------------------------------------ outbound

    def _carry(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(parts):
                    self._send(parts)
                case FlushSoon() | FlushLater():
                    self._schedule_flush(action)
                case Abort(request_id):
                    self.engine.abort(request_id)
                case Log(level, fmt, args, exc):
                    log.log(level, fmt, *args, exc_info=exc)
                case Stop():
                    assert self._stop is not None
                    self._stop.set()
                case Generate() | Warm() | Classify():  # an engine call: a task of its own
                    rid = action.request.request_id
                    self._tasks[rid] = asyncio.create_task(self._call_engine(action), name=rid)

    def _schedule_flush(self, flush: FlushSoon | FlushLater) -> None:
        assert self._loop is not None
        if type(flush) is FlushSoon:
            self._loop.call_soon(self._flush)
        else:
            self._loop.call_later(flush.delay_s, self._flush)

    def _flush(self) -> None:
        for parts in self.core.flush():
            self._send(parts)

    def _send(self, parts: tuple[bytes, ...]) -> None:
        if self._sock is None:
            return
        # Not awaited: pyzmq sends at once unless the pipe is full, then queues in order.
        self._sock.send_multipart(parts, copy=False)
