"""The ``hf`` chat engine on the tiny model: streaming, real continuous batching, abort that
stops the request inside the engine, and finish reasons."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter

import pytest

from broker.frames import Sampling
from pipeline import PromptError
from workers.config import WorkerConfig
from workers.engines import ChatStep, EngineDead, hf, load_chat_engine


def chat_config(model: str, **overrides) -> WorkerConfig:
    return WorkerConfig(name="chat-test", kind="chat", model=model, capacity=16,
                        max_model_len=1024, **overrides)


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def engine(loop, tiny_models):
    engine = load_chat_engine("hf", chat_config(tiny_models["chat"]))
    loop.run_until_complete(engine.start())
    yield engine
    loop.run_until_complete(engine.close())


@pytest.fixture
def delivered(engine):
    """Every output the manager's thread hands over, counted per request id."""
    router = engine._mgr.output_router
    counts: Counter[str] = Counter()
    original = router.deliver_batch
    batches: list[int] = []

    def counting(outputs):
        counts.update(o.request_id for o in outputs)
        batches.append(len(outputs))
        original(outputs)

    router.deliver_batch = counting
    yield counts, batches
    router.deliver_batch = original


def prompt_for(engine, text: str) -> str:
    return engine.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                add_generation_prompt=True, tokenize=False)


async def collect(engine, rid: str, prompt: str, max_tokens: int,
                  sampling: Sampling = Sampling()) -> list[ChatStep]:
    return [step async for step in engine.generate(rid, prompt, max_tokens, sampling)]


def test_reply_streams_in_steps_and_ends_with_length_and_usage(loop, engine):
    prompt = prompt_for(engine, "hello there")
    steps = loop.run_until_complete(collect(engine, "stream-1", prompt, 24))
    assert len(steps) > 3
    assert [s.finish_reason for s in steps[:-1]] == [None] * (len(steps) - 1)
    last = steps[-1]
    assert last.finish_reason == "length"
    assert last.completion_tokens == 24 == sum(s.tokens for s in steps)
    assert last.prompt_tokens == len(engine.tokenizer.encode(prompt, add_special_tokens=False))
    assert "".join(s.text for s in steps)  # random weights, but text all the same


def test_many_concurrent_requests_share_engine_steps(loop, engine, delivered):
    counts, batches = delivered
    prompt = prompt_for(engine, "tell me a joke")

    async def many():
        return await asyncio.gather(*(collect(engine, f"batch-{i}", prompt, 16,
                                              Sampling(temperature=0.7 + i / 100, top_k=40))
                                      for i in range(12)))

    results = loop.run_until_complete(many())
    assert [r[-1].finish_reason for r in results] == ["length"] * 12
    assert all(r[-1].completion_tokens == 16 for r in results)
    # Continuous batching: one step delivered the next token of (nearly) every request.
    assert max(batches) >= 10


def test_abort_stops_generation_in_the_engine_within_a_step(loop, engine, delivered,
                                                            monkeypatch):
    counts, _ = delivered
    monkeypatch.setattr(hf, "LATE_OUTPUT_GRACE_S", 0.05)
    router = engine._mgr.output_router
    prompt = prompt_for(engine, "who was columbus")

    async def scenario():
        long_steps: list[ChatStep] = []
        bystander = asyncio.create_task(collect(engine, "bystander", prompt, 40))
        stream = engine.generate("long", prompt, 900, Sampling())
        async for step in stream:
            long_steps.append(step)
            if len(long_steps) == 3:
                engine.abort("long")
                at_abort = counts["long"]
                break
        rest = [step async for step in stream]
        # Poll until the scheduler has dropped it (the cancel is applied between steps).
        scheduler = engine._mgr.batch_processor.scheduler
        deadline = time.monotonic() + 5
        while "long" in scheduler.active_requests and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        after = await bystander
        late = counts["long"] - at_abort
        # The handler cancel_request() leaves behind is dropped once late outputs are swallowed.
        while "long" in router.result_handlers and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return rest, late, scheduler, after

    rest, late, scheduler, bystander = loop.run_until_complete(scenario())
    assert [s.finish_reason for s in rest] == ["cancelled"]
    assert rest[0].completion_tokens < 900
    assert "long" not in scheduler.active_requests
    assert late <= 2  # the step already running, at most one more
    assert "long" not in router.result_handlers and router.output_queue.empty()
    # The bystander in the same batch ran to its end, untouched.
    assert bystander[-1].finish_reason == "length" and bystander[-1].completion_tokens == 40


def test_abort_of_unknown_or_finished_request_is_ignored(loop, engine):
    engine.abort("never-existed")
    steps = loop.run_until_complete(collect(engine, "done-1", prompt_for(engine, "hi"), 3))
    engine.abort("done-1")
    assert steps[-1].finish_reason == "length"


def test_reply_budget_is_clamped_to_the_context_and_overflow_is_a_prompt_error(loop, engine):
    tok = engine.tokenizer
    words = 100
    while len(tok.encode(prompt_for(engine, "good morning " * words))) < 1024 - 12:
        words += 1
    prompt = prompt_for(engine, "good morning " * words)
    n = len(tok.encode(prompt, add_special_tokens=False))
    assert n < 1024, "the prompt must leave a little room"
    steps = loop.run_until_complete(collect(engine, "clamped", prompt, 500))
    assert steps[-1].finish_reason == "length"
    assert steps[-1].completion_tokens == 1024 - n

    with pytest.raises(PromptError) as err:
        loop.run_until_complete(collect(engine, "too-long", prompt_for(engine, "hi " * 1200), 10))
    assert err.value.code == "chat_prompt_too_long"


def test_warm_prefills_a_prefix_and_reports_its_tokens(loop, engine):
    prefix = "<|system|>\nYou are a friendly assistant who answers briefly.<|end|>\n" * 4
    n = loop.run_until_complete(engine.warm(prefix))
    assert n == len(engine.tokenizer.encode(prefix, add_special_tokens=False))


def test_end_token_finishes_with_stop_and_its_text_is_stripped(loop, tiny_models, tmp_path):
    # A copy of the tiny model whose generation config treats every token as an end token:
    # whatever it samples first ends the reply.
    model_dir = tmp_path / "tiny-chat-stops"
    shutil.copytree(tiny_models["chat"], model_dir)
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    vocab_size = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    gen["eos_token_id"] = list(range(vocab_size))
    gen_path.write_text(json.dumps(gen))

    engine = load_chat_engine("hf", chat_config(str(model_dir)))

    async def scenario():
        await engine.start()
        try:
            # ignore_eos (as benchmarks ask): the budget is generated all the same
            whole = await collect(engine, "no-stop", prompt_for(engine, "hello"), 6,
                                  Sampling(ignore_eos=True))
            assert whole[-1].finish_reason == "length"
            assert whole[-1].completion_tokens == 6
            return await collect(engine, "stops", prompt_for(engine, "hello"), 50)
        finally:
            await engine.close()

    steps = loop.run_until_complete(scenario())
    assert not engine.alive()
    with pytest.raises(EngineDead):  # a stopped engine refuses work loudly
        loop.run_until_complete(collect(engine, "after-close", prompt_for(engine, "hi"), 5))
    assert steps[-1].finish_reason == "stop"
    assert steps[-1].completion_tokens == 1
    assert "".join(s.text for s in steps) == ""
