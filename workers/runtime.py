"""The worker process's loop: one DEALER socket to the broker, one engine, one asyncio loop.

It registers (``Ready``), heartbeats, turns each ``Submit`` into an engine request, and sends
back the output: chat deltas coalesced into one ``Deltas`` frame per front per loop tick (all
requests of one engine step wake in the same tick), then exactly one ``Finished`` or
``ToolResult`` per accepted request, whatever happens to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field

import msgspec
import zmq
import zmq.asyncio

from broker import frames
from broker.curve import load_client, secure_client
from broker.handshake_monitor import log_refusals, monitor_refusals
from broker.frames import ChatJob, Delta, Finished, Submit, ToolJob, ToolResult
from pipeline import PipelineError, PromptLimits, render_prefix, render_prompt

from .config import WorkerConfig
from .engines import (
    ChatEngine, EngineDead, EngineUnavailable, RequestCancelled, RequestFailed, ToolEngine,
)

log = logging.getLogger("workers")

SHUTDOWN_GRACE_S = 2.0  # aborted requests get this long to end on their own
CLOSE_LINGER_MS = 1000  # last frames (Finished cancelled) get this long to leave at exit

ReplyFrame = Finished | ToolResult


@dataclass(slots=True)
class _Request:
    request_id: str
    session_id: str
    kind: str
    front: bytes  # the front's identity: the envelope of this request's output frames
    cancelled: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    tokens: int = 0  # streamed so far
    aborted_at: float | None = None  # perf_counter of the first abort (uvloop's clock is in ms)
    tokens_at_abort: int = 0


class WorkerRuntime:
    def __init__(self, cfg: WorkerConfig, engine: ChatEngine | ToolEngine, *, model_label: str,
                 context: zmq.asyncio.Context | None = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.model_label = model_label  # what Ready reports: the spec, not a cache path
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sock: zmq.asyncio.Socket | None = None
        self._requests: dict[str, _Request] = {}
        self._pending: dict[bytes, list[Delta]] = {}  # deltas of this tick, per front
        self._finals: list[ReplyFrame] = []  # sent after the deltas of the same tick
        self._flush_scheduled = False
        self._draining = False
        self._last_heard = 0.0
        self._broker_silent = False  # warned once about this silence; the next frame ends it
        self._refusal_watch: asyncio.Task[None] | None = None  # CurveZMQ refusals, logged
        self._exit_code = 0
        self._stop: asyncio.Event | None = None
        self._limits = PromptLimits(history_max_tokens=cfg.history_max_tokens,
                                    user_utt_max_tokens=cfg.user_utt_max_tokens)

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Serve until Shutdown, SIGTERM/SIGINT or a dead engine; the process exit code."""
        loop = asyncio.get_running_loop()
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
        loop = asyncio.get_running_loop()
        if not await self._start_engine():
            return self._exit_code
        self._sock = self._connect()
        self._last_heard = loop.time()
        self._send_ready()
        log.info("ready: %s engine %s, model %s, capacity %d, broker %s", self.cfg.kind,
                 self.cfg.resolved_engine(), self.model_label, self.cfg.capacity, self.cfg.connect)
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
        log.info("exit %d", self._exit_code)
        return self._exit_code

    def stop(self, code: int, reason: str) -> None:
        assert self._stop is not None
        if not self._stop.is_set():  # the first reason decides the exit code
            self._exit_code = code
            log.log(logging.ERROR if code else logging.INFO, "stopping: %s", reason)
            self._stop.set()

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
        except EngineUnavailable as exc:
            log.error("engine unavailable: %s", exc)
            self._exit_code = 1
            return False
        except Exception:
            log.exception("engine failed to start")
            self._exit_code = 1
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
        self._draining = True
        for request in list(self._requests.values()):
            self._abort(request)
        tasks = [r.task for r in self._requests.values() if r.task is not None]
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
        loop = asyncio.get_running_loop()
        while True:
            parts = await self._sock.recv_multipart()
            self._last_heard = loop.time()
            if self._broker_silent:
                self._broker_silent = False
                log.info("broker is back")
            try:
                msg = frames.worker_decoder.decode(parts[-1])
            except msgspec.DecodeError as exc:
                log.warning("undecodable frame from broker: %s", exc)
                continue
            if isinstance(msg, Submit):
                self._on_submit(parts[0] if len(parts) > 1 else b"", msg)
            elif isinstance(msg, frames.Cancel):
                self._on_cancel(msg)
            elif isinstance(msg, frames.Drain):
                if not self._draining:
                    log.info("draining: %d in flight, accepting nothing new", len(self._requests))
                self._draining = True
            elif isinstance(msg, frames.Shutdown):
                self.stop(0, "shutdown frame from broker")
            elif isinstance(msg, frames.Reregister):
                # The broker does not know us (it restarted, or expired us): it has failed our
                # turns already or never heard of them, so finishing them only wastes the engine.
                log.info("broker asked to register again; aborting %d request(s) it no longer "
                         "knows", len(self._requests))
                for request in list(self._requests.values()):
                    self._abort(request)
                self._send_ready()
            # frames.Heartbeat: hearing from the broker is all it says

    def _on_submit(self, front: bytes, submit: Submit) -> None:
        rid = submit.request_id
        if rid in self._requests:  # a second Finished would free the first one's slot
            log.warning("request %s submitted twice; ignoring the second", rid)
            return
        if self._draining:
            self._queue_final(_error(submit.request_id, submit.kind, "draining",
                                     f"worker {self.cfg.name} is draining"))
            return
        if len(self._requests) >= self.cfg.capacity:
            log.warning("over capacity (%d): request %s queues in the engine",
                        self.cfg.capacity, rid)
        request = _Request(rid, submit.session_id, submit.kind, front)
        self._requests[rid] = request
        request.task = asyncio.create_task(self._serve(request, submit.job), name=rid)

    def _on_cancel(self, cancel: frames.Cancel) -> None:
        for rid in cancel.request_ids:
            request = self._requests.get(rid)
            if request is not None:
                self._abort(request)

    def _abort(self, request: _Request) -> None:
        request.cancelled = True  # covers a request the engine has not seen yet
        if request.aborted_at is None:
            request.aborted_at = time.perf_counter()
            request.tokens_at_abort = request.tokens
        self.engine.abort(request.request_id)

    # ------------------------------------------------------------------ requests

    async def _serve(self, request: _Request, job: ChatJob | ToolJob) -> None:
        rid, kind = request.request_id, request.kind
        try:
            if kind != self.cfg.kind:
                reply = _error(rid, kind, "bad_request",
                               f"a {self.cfg.kind} worker got a {kind} job")
            elif isinstance(job, ChatJob) and kind == "chat":
                reply = await self._chat(request, job)
            elif isinstance(job, ToolJob) and kind == "tool":
                reply = await self._tool(request, job)
            else:
                reply = _error(rid, kind, "bad_request",
                               f"job {type(job).__name__} for kind {kind}")
        except PipelineError as exc:
            reply = _error(rid, kind, exc.code, exc.message)
        except (RequestCancelled, asyncio.CancelledError):
            reply = _cancelled(rid, kind)
        except RequestFailed as exc:  # the engine failed this request alone
            log.warning("request %s failed in the engine: %s", rid, exc)
            reply = _error(rid, kind, "internal_error", str(exc))
        except EngineDead as exc:
            reply = _error(rid, kind, "worker_lost", f"engine failed: {exc}")
            self.stop(1, f"engine failed: {exc}")
        except Exception as exc:  # one bad request must not take the worker down
            log.exception("request %s failed", rid)
            reply = _error(rid, kind, "internal_error", f"{type(exc).__name__}: {exc}")
        self._requests.pop(rid, None)
        self._queue_final(reply)
        log.debug("request %s ended: %s", rid, reply.reason)

    async def _chat(self, request: _Request, job: ChatJob) -> Finished:
        engine: ChatEngine = self.engine  # type: ignore[assignment]
        rid = request.request_id
        if request.cancelled:
            return Finished(rid, "cancelled")
        if job.max_tokens <= 0:
            # Nothing to generate: prime the prefix cache with persona + history instead
            # (warm_persona / warm_history); prompt_tokens says how much was cached.
            prefix = render_prefix(engine.tokenizer, job.persona, job.history, self._limits)
            return Finished(rid, "stop", prompt_tokens=await engine.warm(prefix) if prefix else 0)
        prompt = render_prompt(engine.tokenizer, job.persona, job.history, job.utterance,
                               self._limits)
        final = None
        async for step in engine.generate(rid, prompt, job.max_tokens, job.sampling):
            if step.text:
                request.tokens += step.tokens
                self._queue_delta(request.front, Delta(rid, step.text, step.tokens))
            if step.finish_reason is not None:
                final = step
        if final is None:
            raise RuntimeError("engine stream ended without a finish reason")
        if final.finish_reason == "cancelled" and request.aborted_at is not None:
            # How promptly cancellation stops the engine (benchmarks/cancel_latency.py reads it).
            log.info("request %s of session %s cancelled: %d tokens generated, %d streamed "
                     "before the abort; stopped %.1f ms after the abort", rid,
                     request.session_id, final.completion_tokens, request.tokens_at_abort,
                     (time.perf_counter() - request.aborted_at) * 1000)
        return Finished(rid, final.finish_reason, final.prompt_tokens, final.completion_tokens,
                        cached_tokens=final.cached_tokens)

    async def _tool(self, request: _Request, job: ToolJob) -> ToolResult:
        engine: ToolEngine = self.engine  # type: ignore[assignment]
        if request.cancelled:
            raise RequestCancelled(request.request_id)
        decision = await engine.classify(request.request_id, job.utterance, job.history)
        return ToolResult(request.request_id, decision.label, decision.score, decision.yes)

    # ------------------------------------------------------------------ outbound

    def _queue_delta(self, front: bytes, delta: Delta) -> None:
        items = self._pending.get(front)
        if items is None:
            self._pending[front] = [delta]
        else:
            items.append(delta)
        self._schedule_flush()

    def _queue_final(self, reply: ReplyFrame) -> None:
        # Through the same flush as the deltas, so a request's last deltas always go first
        # and the other requests' deltas of this step stay in one frame.
        self._finals.append(reply)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        finals, self._finals = self._finals, []
        for front, items in pending.items():
            self._send((front, frames.encode(frames.Deltas(items))))
        for reply in finals:
            self._send((frames.encode(reply),))

    def _send_ready(self) -> None:
        self._send((frames.encode(frames.Ready(
            self.cfg.name, self.cfg.kind, self.cfg.resolved_engine(), self.model_label,
            self.cfg.capacity, os.getpid(), self.cfg.device, frames.PROTOCOL_VERSION)),))

    def _send(self, parts: tuple[bytes, ...]) -> None:
        if self._sock is None:
            return
        # Not awaited: pyzmq sends at once unless the pipe is full, then queues in order.
        self._sock.send_multipart(parts, copy=False)

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.cfg.heartbeat_interval_s
        while True:
            await asyncio.sleep(interval)
            if not self.engine.alive():
                self.stop(1, "engine is no longer running")
                return
            self._send((frames.encode(frames.Heartbeat(load=len(self._requests))),))
            if loop.time() - self._last_heard > self.cfg.heartbeat_liveness * interval:
                # Ready again every liveness intervals until the broker answers; say so once.
                if not self._broker_silent:
                    self._broker_silent = True
                    log.warning("no word from the broker for %.1fs: registering again until "
                                "it answers", loop.time() - self._last_heard)
                self._last_heard = loop.time()
                self._send_ready()


def _error(request_id: str, kind: str, code: str, message: str) -> ReplyFrame:
    if kind == "tool":
        return ToolResult(request_id, "", 0.0, reason="error", code=code, message=message)
    return Finished(request_id, "error", code=code, message=message)


def _cancelled(request_id: str, kind: str) -> ReplyFrame:
    if kind == "tool":
        return ToolResult(request_id, "", 0.0, reason="cancelled")
    return Finished(request_id, "cancelled")
