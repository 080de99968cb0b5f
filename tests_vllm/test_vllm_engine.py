"""The ``vllm`` chat engine on vLLM's real AsyncLLM (CPU build), in-process: streaming deltas,
finish reasons and usage, abort within two engine steps, prefix-cache hits after ``warm`` in
vLLM's own counters, greedy determinism, concurrent streams, and over-long prompts.

Run with the vLLM venv's python (scripts/test-vllm.sh does).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from broker.frames import Sampling
from pipeline import PromptError
from workers.config import VllmOptions, WorkerConfig
from workers.engines import ChatStep, load_chat_engine

pytestmark = pytest.mark.usefixtures("in_vllm_venv")

PERSONA = ("You are a friendly assistant who answers briefly and kindly, with a warm voice. "
           "You love reading books about science, history, space, and the ocean. ") * 6


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def engine(loop, tiny_models):
    cfg = WorkerConfig(name="chat-vllm-test", kind="chat", engine="vllm", model=tiny_models["chat"],
                       capacity=16, max_model_len=2048,
                       vllm=VllmOptions(cache_reset_interval_s=0))
    engine = load_chat_engine("vllm", cfg)
    loop.run_until_complete(engine.start())
    yield engine
    loop.run_until_complete(engine.close())


def prompt_for(engine, text: str, persona: str = "") -> str:
    messages = ([{"role": "system", "content": persona}] if persona else []) + [
        {"role": "user", "content": text}]
    return engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


async def collect(engine, request_id: str, prompt: str, max_tokens: int,
                  sampling: Sampling | None = None) -> list[ChatStep]:
    return [step async for step in engine.generate(request_id, prompt, max_tokens,
                                                   sampling or Sampling())]


def wait_until(loop, predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        loop.run_until_complete(asyncio.sleep(0.02))


def counter(name: str) -> float:
    from prometheus_client import REGISTRY
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == name:
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def test_streams_deltas_then_one_finish_with_usage(loop, engine):
    steps = loop.run_until_complete(collect(engine, "stream-1", prompt_for(engine, "hello"), 24,
                                            Sampling(temperature=0.8, top_p=0.9, top_k=40)))
    assert [s.finish_reason for s in steps[:-1]] == [None] * (len(steps) - 1)
    last = steps[-1]
    assert last.finish_reason in ("stop", "length")
    assert last.prompt_tokens == len(engine.tokenizer.encode(prompt_for(engine, "hello"),
                                                             add_special_tokens=False))
    assert 1 <= last.completion_tokens <= 24
    assert sum(s.tokens for s in steps) == last.completion_tokens
    assert len(steps) > 2, "deltas must stream, not arrive as one block"


def test_length_limit_and_greedy_determinism(loop, engine):
    prompt = prompt_for(engine, "tell me a joke")
    runs = [loop.run_until_complete(collect(engine, f"greedy-{i}", prompt, 12,
                                            Sampling(temperature=0.0))) for i in range(2)]
    texts = ["".join(s.text for s in run) for run in runs]
    assert texts[0] == texts[1]
    for run in runs:
        assert run[-1].completion_tokens == 12 and run[-1].finish_reason == "length"


def test_abort_stops_the_engine_within_two_steps(loop, engine):
    async def scenario() -> tuple[int, float, float]:
        before = counter("vllm:generation_tokens")
        delivered = 0
        aborted_at = 0.0
        async for step in engine.generate("abort-1", prompt_for(engine, "hello"), 1000, Sampling()):
            delivered += step.tokens
            if step.finish_reason is not None:
                assert step.finish_reason == "cancelled"
                return delivered, time.perf_counter() - aborted_at, before
            if delivered >= 5 and not aborted_at:
                aborted_at = time.perf_counter()
                engine.abort("abort-1")
        raise AssertionError("stream ended without a finish reason")

    delivered, latency, before = loop.run_until_complete(scenario())
    assert latency < 0.05, f"abort took {latency * 1000:.1f} ms to end the stream"
    # vLLM's own counter is final once the engine core has dropped the sequence.
    wait_until(loop, lambda: engine._llm.get_num_unfinished_requests() == 0, 2.0,
               "the aborted request leaving the engine")
    generated = counter("vllm:generation_tokens") - before
    print(f"abort: stream ended {latency * 1000:.2f} ms after abort; engine generated "
          f"{generated:.0f} tokens, {delivered} delivered before the abort")
    assert generated - delivered <= 2, f"engine kept generating: {generated} vs {delivered}"
    assert engine._llm.get_num_unfinished_requests() == 0


def test_warm_fills_the_prefix_cache(loop, engine):
    prefix = prompt_for(engine, "", PERSONA).rsplit("<|user|>", 1)[0]
    hits_before = counter("vllm:prefix_cache_hits")
    prompt_tokens = loop.run_until_complete(engine.warm(prefix))
    assert prompt_tokens > 128
    steps = loop.run_until_complete(collect(engine, "after-warm", prompt_for(engine, "hi", PERSONA), 4))
    cached = steps[-1].cached_tokens
    hits = counter("vllm:prefix_cache_hits") - hits_before
    print(f"warm: {prompt_tokens} prefix tokens; next turn {cached} cached tokens, "
          f"vLLM prefix_cache_hits +{hits:.0f}")
    assert cached >= 128, "the warmed persona should be served from the prefix cache"
    assert hits >= cached


def test_concurrent_streams_all_finish(loop, engine):
    async def many() -> list[list[ChatStep]]:
        return await asyncio.gather(*(collect(engine, f"many-{i}", prompt_for(engine, f"hello {i}"), 16)
                                      for i in range(12)))

    runs = loop.run_until_complete(many())
    assert all(run[-1].finish_reason in ("stop", "length") for run in runs)
    assert engine._llm.get_num_unfinished_requests() == 0


def test_prompt_longer_than_the_context_is_a_prompt_error(loop, engine):
    with pytest.raises(PromptError) as info:
        loop.run_until_complete(collect(engine, "too-long", "hello " * 3000, 8))
    assert info.value.code == "chat_prompt_too_long"
    steps = loop.run_until_complete(collect(engine, "after-too-long", prompt_for(engine, "hi"), 4))
    assert steps[-1].finish_reason in ("stop", "length")


def test_walking_away_from_a_stream_frees_its_sequence(loop, engine):
    async def walk_away() -> None:
        stream = engine.generate("walk-away", prompt_for(engine, "hello"), 1000, Sampling())
        async for _ in stream:
            break
        await stream.aclose()

    loop.run_until_complete(walk_away())
    wait_until(loop, lambda: engine._llm.get_num_unfinished_requests() == 0, 2.0,
               "the abandoned request leaving the engine")


def test_periodic_cache_reset_empties_the_prefix_cache_when_idle(loop, engine):
    import msgspec

    prefix = prompt_for(engine, "", PERSONA + " Reset me. ").rsplit("<|user|>", 1)[0]
    prompt = prompt_for(engine, "hi", PERSONA + " Reset me. ")
    loop.run_until_complete(engine.warm(prefix))
    cached = loop.run_until_complete(collect(engine, "before-reset", prompt, 2))[-1].cached_tokens
    assert cached >= 128
    engine.cfg = msgspec.structs.replace(
        engine.cfg, vllm=msgspec.structs.replace(engine.cfg.vllm, cache_reset_interval_s=0.2))
    task = loop.create_task(engine._reset_caches_periodically())
    try:
        wait_until(loop, lambda: engine.cache_resets >= 1, 5.0, "a periodic reset")
    finally:
        task.cancel()
    after = loop.run_until_complete(collect(engine, "after-reset", prompt, 2))[-1].cached_tokens
    assert after == 0, f"{after} tokens still cached after the periodic reset"
