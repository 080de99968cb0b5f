"""The ``trt`` chat engine: TensorRT-LLM's LLM API (in-flight batching, streaming, abort).

TensorRT-LLM needs an NVIDIA GPU and its own wheel, so it is imported in ``start()`` only; a
missing package is an ``EngineUnavailable`` naming the extra. The settings are checked first
(``trt_config.plan_trt``), so a misconfiguration reads as such on any machine.

We tokenize the prompt ourselves (we must count it to budget the reply, and the chat template
already holds the special tokens) and detokenize with the shared ``IncrementalDetokenizer``, as
the hf engine does; TensorRT-LLM is asked for token ids only. The pure parts (sampling
mapping, the token budget, turning streamed outputs into ``ChatStep``s, the ``LLM`` arguments)
are module functions tested without the package.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline import Sampling
from pipeline import PromptError

from ..config import WorkerConfig
from ..detokenizer import IncrementalDetokenizer
from ..quantization import QuantizationError, read_quant_files
from .base import (
    ChatStep, EngineDead, EngineUnavailable, RequestFailed, StepReason, clamp_max_tokens,
    warm_by_prefill,
)
from .torch_env import gpu_capability
from .trt_config import TrtPlan, parse_engine_config, plan_trt, read_engine_config

log = logging.getLogger(__name__)

INSTALL_HINT = ("pip install 'textserve[trt]' (TensorRT-LLM needs an NVIDIA GPU, CUDA and "
                "Python 3.10; give it a virtualenv of its own)")
_CANCELLED = object()  # queued to a stream by abort()
_KV_QUANT_ALGOS = {"fp8": "FP8", "int8": "INT8"}


# ------------------------------------------------------------------ pure parts


def sampling_kwargs(sampling: Sampling, max_tokens: int, eos_ids: Sequence[int],
                    pad_id: int | None) -> dict[str, Any]:
    """``SamplingParams`` keyword arguments for one request.

    Client values arrive validated (pipeline/sampling.py: vLLM-like ranges); here they are
    mapped to TensorRT-LLM's meaning: temperature 0 is greedy (top_k=1, as the runtime rejects
    a zero temperature), top_k -1 and top_p 1 are "off" (left unset), the first EOS id is
    ``end_id`` and any others stop the request too.
    """
    kwargs: dict[str, Any] = {"max_tokens": max_tokens, "detokenize": False}
    if eos_ids:
        kwargs["end_id"] = eos_ids[0]
        kwargs["pad_id"] = eos_ids[0] if pad_id is None else pad_id
        if len(eos_ids) > 1:
            kwargs["stop_token_ids"] = list(eos_ids[1:])
    greedy = sampling.temperature is not None and sampling.temperature <= 0
    if greedy:
        kwargs["top_k"] = 1
    else:
        if sampling.temperature is not None:
            kwargs["temperature"] = float(sampling.temperature)
        if sampling.top_k is not None and sampling.top_k > 0:
            kwargs["top_k"] = int(sampling.top_k)
        if sampling.top_p is not None and 0 < sampling.top_p < 1:
            kwargs["top_p"] = float(sampling.top_p)
        if sampling.min_p is not None and sampling.min_p > 0:
            kwargs["min_p"] = float(sampling.min_p)
    if sampling.repetition_penalty is not None and sampling.repetition_penalty > 0:
        kwargs["repetition_penalty"] = float(sampling.repetition_penalty)
    if sampling.presence_penalty is not None:
        kwargs["presence_penalty"] = float(sampling.presence_penalty)
    if sampling.frequency_penalty is not None:
        kwargs["frequency_penalty"] = float(sampling.frequency_penalty)
    if sampling.seed is not None:
        kwargs["seed"] = int(sampling.seed)
    if sampling.ignore_eos:
        kwargs["ignore_eos"] = True
    return kwargs


def token_budget(prompt_tokens: int, max_tokens: int, plan: TrtPlan) -> int:
    """The reply budget within the engine's limits: the prompt must fit ``max_input_len``
    (TensorRT-LLM rejects longer inputs), the reply ``max_output_len`` and both together
    ``max_seq_len``."""
    if prompt_tokens > plan.max_input_len:
        raise PromptError(
            "chat_prompt_too_long",
            f"prompt is {prompt_tokens} tokens; this engine takes at most {plan.max_input_len}",
            field="chat_prompt")
    return min(clamp_max_tokens(prompt_tokens, max_tokens, plan.max_seq_len), plan.max_output_len)


@dataclass(slots=True)
class TrtUpdate:
    """One streamed output of one request, copied out of TensorRT-LLM's mutable result."""

    new_token_ids: list[int]
    finish_reason: str | None  # CompletionOutput.finish_reason: stop | length | timeout | cancelled
    finished: bool


def finish_reason(trt_reason: str | None, finished: bool, completion_tokens: int,
                  budget: int) -> StepReason | None:
    """Our finish reason for a TensorRT-LLM one; a timeout or an unknown reason fails the
    request (we set no timeout, so one means the runtime gave up on it)."""
    if trt_reason is None:
        if not finished:
            return None
        return "length" if completion_tokens >= budget else "stop"
    if trt_reason in ("stop", "length", "cancelled"):
        return trt_reason  # type: ignore[return-value]
    raise RequestFailed(f"TensorRT-LLM ended the request with {trt_reason!r}")


@dataclass(slots=True)
class TrtStream:
    """Per-request state turning ``TrtUpdate``s into ``ChatStep`` deltas (sans I/O)."""

    detokenizer: IncrementalDetokenizer
    eos_ids: frozenset[int]
    prompt_tokens: int
    budget: int
    completion_tokens: int = 0
    unreported: int = 0  # tokens whose text the detokenizer still holds back
    ended: bool = False

    def push(self, update: TrtUpdate) -> ChatStep | None:
        """The step for this update, or None while its text is still incomplete."""
        self.completion_tokens += len(update.new_token_ids)
        self.unreported += len(update.new_token_ids)
        text = self.detokenizer.push([t for t in update.new_token_ids if t not in self.eos_ids])
        reason = finish_reason(update.finish_reason, update.finished, self.completion_tokens,
                               self.budget)
        if reason is not None:
            self.ended = True
            tail = "" if reason == "cancelled" else self.detokenizer.flush()
            return ChatStep(text + tail, self.unreported, reason, self.prompt_tokens,
                            self.completion_tokens)
        if not text:
            return None
        step, self.unreported = ChatStep(text, self.unreported), 0
        return step

    def cancelled(self) -> ChatStep:
        self.ended = True
        return ChatStep("", self.unreported, "cancelled", self.prompt_tokens,
                        self.completion_tokens)


@dataclass(frozen=True, slots=True)
class LlmSettings:
    """The ``LLM(...)`` arguments as plain values; ``build``/``quant`` are None when nothing
    is built or quantized (a prebuilt engine carries both)."""

    kwargs: dict[str, Any]
    kv_cache: dict[str, Any]
    build: dict[str, Any] | None
    quant: dict[str, Any] | None


def llm_settings(plan: TrtPlan) -> LlmSettings:
    """What to hand TensorRT-LLM for a plan. ``max_batch_size`` outside ``build_config`` is the
    runtime batch (the executor's), inside it the one baked into the engine."""
    kwargs: dict[str, Any] = {"model": plan.model, "tokenizer": plan.tokenizer,
                              "max_batch_size": plan.batch_size}
    kv_cache = {"enable_block_reuse": plan.kv_block_reuse,
                "free_gpu_memory_fraction": plan.free_gpu_memory_fraction}
    if not plan.builds:
        return LlmSettings(kwargs, kv_cache, None, None)
    kwargs["tensor_parallel_size"] = plan.tensor_parallel_size
    kwargs["enable_build_cache"] = True  # a restart reuses the engine instead of rebuilding it
    if plan.source == "hf":
        kwargs["dtype"] = plan.dtype  # a checkpoint brings its own
    build = {"max_batch_size": plan.max_batch_size, "max_input_len": plan.max_input_len,
             "max_seq_len": plan.max_seq_len}
    quant: dict[str, Any] = {}
    if plan.quant.engine_arg:
        quant["quant_algo"] = plan.quant.engine_arg
    if plan.quant.kv_cache_dtype in _KV_QUANT_ALGOS:
        quant["kv_cache_quant_algo"] = _KV_QUANT_ALGOS[plan.quant.kv_cache_dtype]
    return LlmSettings(kwargs, kv_cache, build, quant or None)


# ------------------------------------------------------------------ loading


def load_tensorrt_llm() -> Any:
    """The ``tensorrt_llm`` package, or ``EngineUnavailable`` naming the extra."""
    try:
        return importlib.import_module("tensorrt_llm")
    except ImportError as exc:
        raise EngineUnavailable(f"engine 'trt' needs TensorRT-LLM: {INSTALL_HINT} ({exc})") from exc


def _llm_class(trt: Any) -> Any:
    # From TensorRT-LLM 1.0 ``tensorrt_llm.LLM`` is the PyTorch backend, which neither loads
    # engine directories nor bakes a max batch size; the TensorRT-engine LLM API the
    # single-process TRT server built on (engine dir, checkpoint build, build_config) lives in
    # ``_tensorrt_engine``.
    # Before 1.0 ``tensorrt_llm.LLM`` is that one.
    try:
        return importlib.import_module("tensorrt_llm._tensorrt_engine").LLM
    except ImportError:
        return trt.LLM


def resolve_plan(cfg: WorkerConfig) -> TrtPlan:
    """Read what the plan depends on (engine config, checkpoint files, GPU) and check it; a
    bad setting or combination is an ``EngineUnavailable`` with the one-line reason."""
    opts = cfg.trt
    capability = gpu_capability(cfg.device)
    try:
        engine = None
        if opts.engine_dir and (raw := read_engine_config(opts.engine_dir)) is not None:
            engine = parse_engine_config(raw, opts.engine_dir)
        files = read_quant_files(opts.checkpoint_dir or cfg.model)
        return plan_trt(cfg, capability=capability, engine=engine, files=files)
    except ValueError as exc:  # TrtConfigError, QuantizationError
        reason = str(exc)
        if isinstance(exc, QuantizationError) and capability is None and cfg.device.startswith(
                "cuda"):
            reason += f" (device {cfg.device!r} is set, but torch sees no CUDA device)"
        raise EngineUnavailable(reason) from exc


# ------------------------------------------------------------------ the engine


@dataclass(slots=True)
class _Request:
    result: Any  # TensorRT-LLM's RequestOutput
    queue: asyncio.Queue[Any]
    pump: asyncio.Task[None] | None = None


class TrtChatEngine:
    name = "trt"

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.plan: TrtPlan | None = None
        self.tokenizer: Any = None
        self._llm: Any = None
        self._trt: Any = None
        self._request_error: type[BaseException] | None = None
        self._dead: str | None = None
        self._requests: dict[str, _Request] = {}
        self._eos: tuple[int, ...] = ()
        self._pad: int | None = None
        self._warm_count = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        plan = self.plan = await asyncio.to_thread(resolve_plan, self.cfg)
        self._trt = load_tensorrt_llm()
        log.info("%s", plan.describe())
        log.info("%s", plan.quant.describe())
        await asyncio.to_thread(self._load_tokenizer, plan.tokenizer)
        self._llm = await asyncio.to_thread(self._create_llm, plan)
        llmapi = importlib.import_module("tensorrt_llm.llmapi")
        self._request_error = getattr(llmapi, "RequestError", None)
        # The first request of a fresh executor pays one-off setup; pay it now.
        await self.warm("Hello")

    def _load_tokenizer(self, source: str) -> None:
        from transformers import AutoTokenizer, GenerationConfig

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(f"cannot load the tokenizer of {source!r}: {exc}") from exc
        eos: list[int] = []
        try:
            gen_eos = GenerationConfig.from_pretrained(source).eos_token_id
        except (OSError, ValueError):
            gen_eos = None
        for token in ([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])) + [
                self.tokenizer.eos_token_id]:
            if token is not None and token not in eos:
                eos.append(token)
        self._eos = tuple(eos)
        self._pad = self.tokenizer.pad_token_id

    def _create_llm(self, plan: TrtPlan) -> Any:
        trt = self._trt
        llmapi = importlib.import_module("tensorrt_llm.llmapi")
        settings = llm_settings(plan)
        kwargs = dict(settings.kwargs)
        kwargs["kv_cache_config"] = llmapi.KvCacheConfig(**settings.kv_cache)
        if settings.build is not None:
            build_config = getattr(llmapi, "BuildConfig", None) or trt.BuildConfig
            kwargs["build_config"] = build_config(**settings.build)
        if settings.quant is not None:
            algo = llmapi.QuantAlgo
            kwargs["quant_config"] = llmapi.QuantConfig(
                **{k: getattr(algo, v) for k, v in settings.quant.items()})
        try:
            return _llm_class(trt)(**kwargs)
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(f"TensorRT-LLM cannot load {plan.model!r}: {exc}") from exc

    async def close(self) -> None:
        if self._llm is None:
            return
        for request_id in list(self._requests):
            self.abort(request_id)
        llm, self._llm = self._llm, None
        await asyncio.to_thread(llm.shutdown)

    def alive(self) -> bool:
        return self._llm is not None and self._dead is None

    # ------------------------------------------------------------------ requests

    async def generate(self, request_id: str, prompt: str, max_tokens: int,
                       sampling: Sampling) -> AsyncIterator[ChatStep]:
        llm, plan = self._running(), self.plan
        assert plan is not None
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        budget = token_budget(len(ids), max_tokens, plan)
        params = self._trt.SamplingParams(**sampling_kwargs(sampling, budget, self._eos,
                                                             self._pad))
        try:
            result = llm.generate_async(ids, sampling_params=params, streaming=True)
        except Exception as exc:
            raise self._failure(exc) from exc
        request = _Request(result, asyncio.Queue())
        request.pump = asyncio.create_task(self._pump(result, request.queue))
        self._requests[request_id] = request
        stream = TrtStream(IncrementalDetokenizer(self.tokenizer), frozenset(self._eos),
                           len(ids), budget)
        try:
            while not stream.ended:
                item = await request.queue.get()
                if item is _CANCELLED:
                    yield stream.cancelled()
                elif isinstance(item, BaseException):
                    stream.ended = True
                    raise self._failure(item) from item
                elif (step := stream.push(item)) is not None:
                    yield step
        finally:
            if self._requests.get(request_id) is request:
                del self._requests[request_id]
                if not stream.ended:  # the consumer walked away: free its batch slot
                    _abort_quietly(result)
            request.pump.cancel()

    @staticmethod
    async def _pump(result: Any, queue: asyncio.Queue[Any]) -> None:
        """Copy each streamed output out of the (mutable) result as it arrives."""
        try:
            async for output in result:
                completion = output.outputs[0]
                queue.put_nowait(TrtUpdate(list(completion.token_ids_diff),
                                           completion.finish_reason, output.finished))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            queue.put_nowait(exc)

    def abort(self, request_id: str) -> None:
        request = self._requests.pop(request_id, None)
        if request is None:
            return
        _abort_quietly(request.result)
        request.queue.put_nowait(_CANCELLED)  # the stream ends now, not when the runtime says

    async def warm(self, prefix: str) -> int:
        self._warm_count += 1
        return await warm_by_prefill(self, f"__warm-{self._warm_count}", prefix)

    # ------------------------------------------------------------------ internals

    def _running(self) -> Any:
        if self._llm is None or self._dead is not None:
            reason = f": {self._dead}" if self._dead else ""
            raise EngineDead(f"TensorRT-LLM is not running{reason}")
        return self._llm

    def _failure(self, exc: BaseException) -> Exception:
        """A request error (or a request TensorRT-LLM refuses as invalid) fails one request;
        anything else means the executor is gone."""
        if isinstance(exc, (ValueError, TypeError)) or (
                self._request_error is not None and isinstance(exc, self._request_error)):
            return RequestFailed(str(exc))
        self._dead = f"{type(exc).__name__}: {exc}"
        return EngineDead(self._dead)


def _abort_quietly(result: Any) -> None:
    try:
        result.abort()
    except Exception:  # already finished, or the executor is gone: nothing left to stop
        log.debug("abort of a finished request ignored", exc_info=True)
