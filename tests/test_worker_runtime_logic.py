"""The worker runtime (the shell around ``WorkerCore``) in-process, around a scripted engine:
the core's actions carried out on a real socket and event loop: output coalescing per engine
step and per front, exactly one final frame per request whatever the engine does, aborts and
log lines reaching the engine and the log. The rules themselves: tests/test_worker_core.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import zmq
import zmq.asyncio

from broker import frames
from broker.frames import ChatJob, Deltas, Finished, Ready, Sampling, Submit
from tests.char_tokenizer import CharTokenizer
from workers.config import WorkerConfig
from workers.engines import ChatStep, EngineDead
from workers.runtime import WorkerRuntime


class ScriptedEngine:
    """Every running request emits one word per ``step()``, all woken together as a real
    engine step wakes them; the utterance picks a failure."""

    name = "scripted"

    def __init__(self) -> None:
        self.tokenizer = CharTokenizer()
        self._step = asyncio.Event()
        self._alive = True
        self.aborted: list[str] = []
        self.running: set[str] = set()

    async def start(self) -> None: ...

    async def close(self) -> None:
        self._alive = False

    def alive(self) -> bool:
        return self._alive

    def step(self) -> None:
        self._step.set()
        self._step = asyncio.Event()

    async def generate(self, request_id: str, prompt: str, max_tokens: int,
                       sampling: Sampling) -> AsyncIterator[ChatStep]:
        if "boom" in prompt:
            raise ZeroDivisionError("scripted bug")
        if "dead" in prompt:
            raise EngineDead("scripted crash")
        self.running.add(request_id)
        try:
            for i in range(max_tokens):
                await self._step.wait()
                if request_id in self.aborted:  # as a real engine: ends within one step
                    yield ChatStep("", 0, "cancelled", len(prompt), i)
                    return
                yield ChatStep(f"w{i} ", 1)
            yield ChatStep("", 0, "length", len(prompt), max_tokens)
        finally:
            self.running.discard(request_id)

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def warm(self, prefix: str) -> int:
        return len(prefix)


async def start_worker(ctx: zmq.asyncio.Context, endpoint: str, engine: ScriptedEngine):
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    cfg = WorkerConfig(name="chat-x", kind="chat", connect=endpoint, heartbeat_interval_s=0.05)
    runtime = WorkerRuntime(cfg, engine, model_label="scripted", context=ctx)
    task = asyncio.create_task(runtime.run())
    parts = await asyncio.wait_for(router.recv_multipart(), 5)
    assert isinstance(frames.control_decoder.decode(parts[-1]), Ready)
    return router, runtime, task


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


async def next_output(router: zmq.asyncio.Socket, timeout: float = 5.0):
    """The next non-heartbeat frame: (front or None, decoded)."""
    async with asyncio.timeout(timeout):
        while True:
            parts = await router.recv_multipart()
            if len(parts) == 3:
                return parts[1], frames.to_front_decoder.decode(parts[2])
            msg = frames.control_decoder.decode(parts[1])
            if not isinstance(msg, (frames.Heartbeat, Ready)):
                return None, msg


def submit(router, front: bytes, rid: str, utterance: str, max_tokens: int = 3, session="s"):
    job = ChatJob(persona="", history="", utterance=utterance, max_tokens=max_tokens)
    payload = frames.encode(Submit(rid, session, job))
    return router.send_multipart([b"chat-x", front, payload])


def run(scenario) -> None:
    async def main():
        ctx = zmq.asyncio.Context()
        try:
            await scenario(ctx)
        finally:
            ctx.destroy(0)

    asyncio.run(main())


def test_one_engine_step_makes_one_deltas_frame_per_front():
    async def scenario(ctx):
        engine = ScriptedEngine()
        router, runtime, task = await start_worker(ctx, "inproc://coalesce", engine)
        for rid, front in (("a", b"f1"), ("b", b"f1"), ("c", b"f2")):
            await submit(router, front, rid, "hi", max_tokens=2)
        await until(lambda: engine.running == {"a", "b", "c"})
        got = []
        for _ in range(2):
            engine.step()
            got += [await next_output(router), await next_output(router)]
        by_front = {}
        for front, msg in got:
            assert isinstance(msg, Deltas)
            by_front.setdefault(front, []).append(sorted(i.request_id for i in msg.items))
        assert by_front == {b"f1": [["a", "b"], ["a", "b"]], b"f2": [["c"], ["c"]]}
        finals = [await next_output(router) for _ in range(3)]
        assert sorted((m.request_id, m.reason) for _, m in finals) == [
            ("a", "length"), ("b", "length"), ("c", "length")]
        runtime.stop(0, "test over")
        assert await task == 0

    run(scenario)


def test_a_request_that_breaks_the_engine_gets_an_error_and_the_worker_goes_on():
    async def scenario(ctx):
        engine = ScriptedEngine()
        router, runtime, task = await start_worker(ctx, "inproc://bug", engine)
        await submit(router, b"f1", "bad", "boom")
        _, msg = await next_output(router)
        assert (msg.request_id, msg.reason, msg.code) == ("bad", "error", "internal_error")
        assert "scripted bug" in msg.message
        await submit(router, b"f1", "good", "hello", max_tokens=1)
        await until(lambda: "good" in engine.running)
        engine.step()
        _, deltas = await next_output(router)
        _, finished = await next_output(router)
        assert isinstance(deltas, Deltas) and (finished.request_id, finished.reason) == (
            "good", "length")
        runtime.stop(0, "test over")
        assert await task == 0

    run(scenario)


def test_a_dead_engine_fails_its_request_and_the_worker_exits_non_zero():
    async def scenario(ctx):
        engine = ScriptedEngine()
        router, runtime, task = await start_worker(ctx, "inproc://dead", engine)
        await submit(router, b"f1", "slow", "hello", max_tokens=5)
        await submit(router, b"f1", "fatal", "dead")
        finals = {}
        while len(finals) < 2:
            _, msg = await next_output(router)
            if isinstance(msg, Finished):
                finals[msg.request_id] = msg
        assert (finals["fatal"].reason, finals["fatal"].code) == ("error", "worker_lost")
        assert finals["slow"].reason == "cancelled"  # every other request still gets its end
        assert await asyncio.wait_for(task, 5) == 1

    run(scenario)


def test_engine_that_stops_running_ends_the_worker_with_failure():
    async def scenario(ctx):
        engine = ScriptedEngine()
        _, _, task = await start_worker(ctx, "inproc://gone", engine)
        engine._alive = False  # as when the generation thread dies between requests
        assert await asyncio.wait_for(task, 5) == 1

    run(scenario)


def test_zero_max_tokens_warms_persona_and_history_instead_of_generating():
    async def scenario(ctx):
        engine = ScriptedEngine()
        router, runtime, task = await start_worker(ctx, "inproc://warm", engine)
        job = ChatJob(persona="be kind", history="", utterance="", max_tokens=0)
        payload = frames.encode(Submit("w", "s", job))
        await router.send_multipart([b"chat-x", b"f1", payload])
        _, msg = await next_output(router)
        assert (msg.request_id, msg.reason, msg.completion_tokens) == ("w", "stop", 0)
        assert msg.prompt_tokens == len("<system>be kind")
        runtime.stop(0, "test over")
        assert await task == 0

    run(scenario)


def test_cancel_reaches_the_engine_and_the_cancel_line_reaches_the_workers_log(caplog):
    async def scenario(ctx):
        engine = ScriptedEngine()
        router, runtime, task = await start_worker(ctx, "inproc://cancel", engine)
        await submit(router, b"f1", "long", "hello", max_tokens=50, session="sess-9")
        await until(lambda: "long" in engine.running)
        engine.step()
        _, deltas = await next_output(router)
        assert isinstance(deltas, Deltas)
        await router.send_multipart([b"chat-x", frames.encode(frames.Cancel(["long"]))])
        await until(lambda: engine.aborted == ["long"])
        engine.step()
        _, finished = await next_output(router)
        assert (finished.request_id, finished.reason, finished.completion_tokens) == (
            "long", "cancelled", 1)
        runtime.stop(0, "test over")
        assert await task == 0

    with caplog.at_level(logging.INFO, logger="workers"):
        run(scenario)
    lines = [r.getMessage() for r in caplog.records if r.name == "workers"]
    assert any(line.startswith("request long of session sess-9 cancelled: 1 tokens generated, "
                               "1 streamed before the abort; stopped ") for line in lines), lines
    assert "stopping: test over" in lines
