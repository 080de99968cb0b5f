"""The ``classifier`` tool engine on the tiny screenshot-intent model: its decisions, the
threshold, micro-batching of concurrent requests and abort."""

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
