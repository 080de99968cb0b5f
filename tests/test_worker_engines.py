"""Choosing an engine by name: clear one-line errors for unknown and not-yet-built engines."""

from __future__ import annotations

import importlib.util

import pytest

from workers.config import WorkerConfig
from workers.engines import EngineUnavailable, load_chat_engine, load_tool_engine

CHAT = WorkerConfig(name="chat-0", kind="chat")
TOOL = WorkerConfig(name="tool-0", kind="tool")


def test_unknown_engine_names_the_known_ones():
    with pytest.raises(EngineUnavailable,
                       match=r"unknown chat engine 'llama'; known: hf, vllm, trt"):
        load_chat_engine("llama", CHAT)
    with pytest.raises(EngineUnavailable, match=r"unknown tool engine 'hf'; known: classifier"):
        load_tool_engine("hf", TOOL)


@pytest.mark.parametrize("name, module", [("vllm", "vllm"), ("trt", "tensorrt_llm")])
def test_engines_without_their_package_name_the_extra(name, module):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here; its engine is tested in its own tier")
    with pytest.raises(EngineUnavailable) as err:
        load_chat_engine(name, CHAT)
    assert f"pip install 'textserve[{name}]'" in str(err.value)
    assert "\n" not in str(err.value)


def test_known_engines_load_without_starting():
    assert load_chat_engine("hf", CHAT).name == "hf"
    assert load_tool_engine("classifier", TOOL).name == "classifier"
