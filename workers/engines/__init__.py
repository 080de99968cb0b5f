"""Engines behind one small async interface, chosen by name from the worker's config.

Chat: ``hf`` (transformers continuous batching), ``vllm`` (vLLM AsyncLLM), ``trt``.
Tool: ``classifier``. Engine modules import torch, so they are imported only when chosen.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable

from ..config import WorkerConfig
from .base import (
    ChatEngine, ChatStep, EngineDead, EngineUnavailable, RequestCancelled, RequestFailed,
    ToolDecision, ToolEngine, clamp_max_tokens,
)

__all__ = [
    "CHAT_ENGINES", "TOOL_ENGINES", "ChatEngine", "ChatStep", "EngineDead", "EngineUnavailable",
    "RequestCancelled", "RequestFailed", "ToolDecision", "ToolEngine", "clamp_max_tokens", "engine_factory",
    "load_chat_engine", "load_tool_engine",
]


def _hf(cfg: WorkerConfig) -> ChatEngine:
    from .hf import HFChatEngine
    return HFChatEngine(cfg)


def _vllm(cfg: WorkerConfig) -> ChatEngine:
    from .vllm import INSTALL_HINT, VllmChatEngine  # vllm.py imports vLLM itself in start()
    if importlib.util.find_spec("vllm") is None:
        raise EngineUnavailable(f"engine 'vllm' is not installed in {sys.executable}; {INSTALL_HINT}")
    return VllmChatEngine(cfg)


def _trt(cfg: WorkerConfig) -> ChatEngine:
    from importlib.util import find_spec

    from .trt import INSTALL_HINT, TrtChatEngine  # trt.py imports TensorRT-LLM itself in start()
    if find_spec("tensorrt_llm") is None:
        raise EngineUnavailable(f"engine 'trt' needs TensorRT-LLM, not installed: {INSTALL_HINT}")
    return TrtChatEngine(cfg)


def _classifier(cfg: WorkerConfig) -> ToolEngine:
    from .classifier import ClassifierToolEngine
    return ClassifierToolEngine(cfg)


CHAT_ENGINES: dict[str, Callable[[WorkerConfig], ChatEngine]] = {
    "hf": _hf,
    "vllm": _vllm,
    "trt": _trt,
}
TOOL_ENGINES: dict[str, Callable[[WorkerConfig], ToolEngine]] = {"classifier": _classifier}


EngineFactory = Callable[[WorkerConfig], "ChatEngine | ToolEngine"]


def engine_factory(kind: str, name: str) -> EngineFactory:
    """The constructor of engine ``name`` for a ``kind`` worker; fails before any model work."""
    registry: dict[str, EngineFactory] = (
        CHAT_ENGINES if kind == "chat" else TOOL_ENGINES)  # type: ignore[assignment]
    if name not in registry:
        raise EngineUnavailable(f"unknown {kind} engine {name!r}; known: {', '.join(registry)}")
    return registry[name]


def load_chat_engine(name: str, cfg: WorkerConfig) -> ChatEngine:
    """An unstarted chat engine; ``cfg.model`` must already be a loadable path or HF id."""
    return engine_factory("chat", name)(cfg)  # type: ignore[return-value]


def load_tool_engine(name: str, cfg: WorkerConfig) -> ToolEngine:
    return engine_factory("tool", name)(cfg)  # type: ignore[return-value]
