"""The ``classifier`` tool engine on the tiny screenshot-intent model: its decisions, the
threshold, the conversation history it reads (its newest ``tool_history_tokens``),
micro-batching of concurrent requests and abort."""

from __future__ import annotations

import asyncio

import pytest

from workers.config import WorkerConfig
from workers.engines import RequestCancelled, load_tool_engine


def tool_config(model: str, **overrides) -> WorkerConfig:
    return WorkerConfig(name="tool-test", kind="tool", model=model, **overrides)


async def with_engine(cfg: WorkerConfig, body):
    engine = load_tool_engine("classifier", cfg)
    await engine.start()
    try:
        return await body(engine)
    finally:
        await engine.close()


def test_screenshot_intents_say_yes_and_small_talk_says_no(tiny_models):
    async def body(engine):
        return {text: await engine.classify(f"r{i}", text) for i, text in enumerate(
            ["take a screenshot", "look at my screen", "tell me a joke", "who was columbus"])}

    got = asyncio.run(with_engine(tool_config(tiny_models["tool"]), body))
    assert {text: d.label for text, d in got.items()} == {
        "take a screenshot": "yes", "look at my screen": "yes",
        "tell me a joke": "no", "who was columbus": "no"}
    # The score is P(positive) whatever the label.
    assert got["take a screenshot"].score > 0.5 > got["tell me a joke"].score
    assert got["take a screenshot"].yes and not got["tell me a joke"].yes


def test_threshold_decides_the_label_and_the_score_stays_the_positive_probability(tiny_models):
    async def body(engine):
        return await engine.classify("r", "take a screenshot")

    decision = asyncio.run(with_engine(tool_config(tiny_models["tool"], tool_threshold=1.01),
                                       body))
    assert decision.label == "no" and not decision.yes and decision.score > 0.5


def test_concurrent_requests_run_in_one_batch(tiny_models):
    texts = ["take a screenshot", "tell me a joke", "what is on my screen", "good morning"] * 3

    async def body(engine):
        before = engine.batches_run
        results = await asyncio.gather(*(engine.classify(f"b{i}", t) for i, t in enumerate(texts)))
        return results, engine.batches_run - before, engine.largest_batch

    results, batches, largest = asyncio.run(
        with_engine(tool_config(tiny_models["tool"], tool_max_batch=8), body))
    assert [d.label for d in results] == ["yes", "no", "yes", "no"] * 3
    assert largest == 8 and batches == 2  # 12 requests, batches of at most 8


def test_aborted_request_raises_cancelled_and_the_others_are_answered(tiny_models):
    async def body(engine):
        keep = asyncio.create_task(engine.classify("keep", "take a screenshot"))
        drop = asyncio.create_task(engine.classify("drop", "tell me a joke"))
        await asyncio.sleep(0)  # both queued, the batch window still open
        engine.abort("drop")
        return await keep, await asyncio.gather(drop, return_exceptions=True)

    kept, (dropped,) = asyncio.run(with_engine(tool_config(tiny_models["tool"]), body))
    assert kept.label == "yes" and kept.yes
    assert isinstance(dropped, RequestCancelled)


def test_unknown_positive_label_fails_at_start(tiny_models):
    from workers.engines import EngineUnavailable

    with pytest.raises(EngineUnavailable, match="tool_positive_label 'maybe'.*labels: no, yes"):
        asyncio.run(with_engine(tool_config(tiny_models["tool"], tool_positive_label="maybe"),
                                lambda engine: asyncio.sleep(0)))


def test_the_history_reaches_the_model(tiny_models):
    async def body(engine):
        alone = await engine.classify("a", "and this one")
        after = await engine.classify("b", "and this one", "User: look at my screen\n"
                                      "Assistant: I see a photo of a beach.")
        return alone, after

    alone, after = asyncio.run(with_engine(tool_config(tiny_models["tool"]), body))
    assert alone.score != after.score


def test_only_the_newest_history_tokens_count(tiny_models):
    tail = " User: take a screenshot please\nAssistant: sure, I see your screen now"

    async def body(engine):
        return [(await engine.classify(f"h{i}", "what do you think", old + tail)).score
                for i, old in enumerate(["User: tell me a joke " * 50, "User: good morning"])]

    # tail is more than 8 tokens of the tiny tokenizer: what comes before it is never read.
    long_ago, recent = asyncio.run(with_engine(
        tool_config(tiny_models["tool"], tool_history_tokens=8), body))
    assert long_ago == recent


def test_zero_history_tokens_decides_on_the_utterance_alone(tiny_models):
    async def body(engine):
        return [(await engine.classify(f"z{i}", "take a screenshot", history)).score
                for i, history in enumerate(["", "User: tell me a joke\nAssistant: no"])]

    plain, ignored = asyncio.run(with_engine(
        tool_config(tiny_models["tool"], tool_history_tokens=0), body))
    assert plain == ignored


def test_a_history_far_longer_than_the_model_is_cut_not_refused(tiny_models):
    async def body(engine):
        return await asyncio.gather(
            engine.classify("long", "take a screenshot", "User: blah blah blah " * 3000),
            engine.classify("short", "tell me a joke"))

    long, short = asyncio.run(with_engine(tool_config(tiny_models["tool"]), body))
    assert (long.label, long.yes, short.label, short.yes) == ("yes", True, "no", False)


def test_8bit_serves_dynamic_int8_with_the_same_decisions_and_other_methods_are_refused(
        tiny_models):
    texts = ["take a screenshot", "look at my screen", "tell me a joke", "who was columbus"]

    async def body(engine):
        return [await engine.classify(f"q{i}", t) for i, t in enumerate(texts)]

    plain = asyncio.run(with_engine(tool_config(tiny_models["tool"]), body))
    int8 = asyncio.run(with_engine(tool_config(tiny_models["tool"], quantization="8bit"), body))
    assert [d.yes for d in int8] == [d.yes for d in plain] == [True, True, False, False]
    assert all(abs(a.score - b.score) < 0.1 for a, b in zip(int8, plain))
    from workers.engines import EngineUnavailable
    with pytest.raises(EngineUnavailable, match="quantization '4bit' is not available"):
        asyncio.run(with_engine(tool_config(tiny_models["tool"], quantization="4bit"),
                                lambda engine: asyncio.sleep(0)))
