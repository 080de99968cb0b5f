"""The ``hf`` chat engine: Hugging Face transformers' continuous batching (CPU default).

transformers runs the batch in its own thread (``ContinuousBatchingManager``) and hands each
step's outputs to per-request callbacks on our event loop, so every active request advances
in the same forward pass and a request can join or leave between two steps.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

from pipeline import Sampling

from ..config import WorkerConfig
from ..detokenizer import IncrementalDetokenizer
from .base import (
    ChatStep, EngineDead, EngineUnavailable, RequestFailed, clamp_max_tokens, warm_by_prefill,
)
from .torch_env import configure_threads, torch_device, torch_dtype

log = logging.getLogger(__name__)

PAGE_SIZE = 64  # tokens per KV page; small pages waste little cache on short replies
MAX_BATCH_TOKENS = 1024  # tokens per forward: longer prefills are chunked so decodes keep flowing
# Without flash attention (CPU) the manager keeps one dense mask of batch tokens x (cache tokens
# + batch tokens) and fills all of it at start: 1024 x 195k float32 is 800 MB for 32 x 5760.
# Fewer tokens per forward keep it within this budget; only prefill chunking changes.
MASK_BUDGET_BYTES = 256 * 2**20
# After an abort the step already running may still deliver one output for the request;
# it is swallowed for this long before the request's handler is dropped.
LATE_OUTPUT_GRACE_S = 2.0
_CANCELLED = object()  # queued to a stream by abort()


def continuous_batching_config(cfg: WorkerConfig, dtype_bytes: int) -> Any:
    """Size the paged KV cache so that ``capacity`` requests of ``max_model_len`` tokens fit
    at once (plus one warm-up request): the broker never sends more, so nothing is evicted."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    slots = cfg.capacity + 1
    num_blocks = slots * (math.ceil(cfg.max_model_len / PAGE_SIZE) + 1)
    cache_tokens = num_blocks * PAGE_SIZE
    batch_tokens = MAX_BATCH_TOKENS
    while batch_tokens > 128 and batch_tokens * (cache_tokens + batch_tokens) * dtype_bytes > (
            MASK_BUDGET_BYTES):
        batch_tokens //= 2
    return ContinuousBatchingConfig(
        per_request_processors=True,  # per-request temperature / top_p / top_k
        max_requests_per_batch=slots,
        num_blocks=num_blocks,
        page_size=PAGE_SIZE,
        max_batch_tokens=max(batch_tokens, slots),  # every request gets a token in each step
    )


class HFChatEngine:
    name = "hf"

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.tokenizer: Any = None
        self._mgr: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[str, asyncio.Queue[Any]] = {}
        self._eos: set[int] = set()
        self._vocab_size = 0
        self._warm_count = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        threads = configure_threads(self.cfg)
        await asyncio.to_thread(self._load)
        self._mgr.start()
        cb = self._mgr.continuous_batching_config
        log.info("hf engine: %d torch threads, %d requests and %d tokens per step, "
                 "%d KV blocks of %d tokens", threads, cb.max_requests_per_batch,
                 cb.max_batch_tokens, cb.num_blocks, cb.page_size)
        # The first step of a fresh manager pays a one-off setup (~0.5 s on CPU): pay it now,
        # not in the first user's time to first token.
        await self.warm("Hello")

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.cfg.model)
            model = AutoModelForCausalLM.from_pretrained(self.cfg.model,
                                                         dtype=torch_dtype(self.cfg.dtype))
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(f"cannot load chat model {self.cfg.model!r}: {exc}") from exc
        model = model.to(torch_device(self.cfg.device))
        gen = copy.deepcopy(model.generation_config)
        eos = gen.eos_token_id if gen.eos_token_id is not None else model.config.eos_token_id
        self._eos = {eos} if isinstance(eos, int) else set(eos or [])
        if self.tokenizer.eos_token_id is not None:
            self._eos.add(self.tokenizer.eos_token_id)
        gen.eos_token_id = sorted(self._eos) or None
        if not gen.do_sample:
            log.warning("hf engine: the model's generation config is greedy; per-request "
                        "sampling settings will be ignored")
        self._vocab_size = model.config.get_text_config().vocab_size
        self._mgr = model.init_continuous_batching(
            generation_config=gen,
            continuous_batching_config=continuous_batching_config(self.cfg, model.dtype.itemsize))

    async def close(self) -> None:
        if self._mgr is None:
            return
        for request_id in list(self._streams):
            self.abort(request_id)
        mgr, self._mgr = self._mgr, None
        await asyncio.to_thread(mgr.stop, block=True, timeout=5)

    def alive(self) -> bool:
        mgr = self._mgr
        return (mgr is not None and mgr.is_running()
                and mgr.background_thread_status.fatal_error is None)

    # ------------------------------------------------------------------ requests

    async def generate(self, request_id: str, prompt: str, max_tokens: int,
                       sampling: Sampling) -> AsyncIterator[ChatStep]:
        mgr = self._running()
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        budget = clamp_max_tokens(len(ids), max_tokens, self.cfg.max_model_len)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[request_id] = queue
        mgr.register_result_handler(request_id, queue.put_nowait)
        try:
            accepted = mgr.add_request(ids, request_id=request_id, max_new_tokens=budget,
                                       streaming=True,
                                       eos_token_id=-1 if sampling.ignore_eos else sorted(self._eos),
                                       **self._sampling_kwargs(sampling))
        except BaseException:
            self._forget(request_id)
            raise
        if accepted is None:  # the manager refuses work only when it is stopping or dead
            self._forget(request_id)
            raise EngineDead("the generation loop is not accepting requests")

        detok = IncrementalDetokenizer(self.tokenizer)
        seen = 0  # outputs carry every token so far, not just the new ones
        unreported = 0  # tokens whose text is still held back by the detokenizer
        ended = False
        try:
            while True:
                out = await queue.get()
                if out is _CANCELLED:
                    ended = True
                    yield ChatStep("", unreported, "cancelled", len(ids), seen)
                    return
                if out.error is not None or out.status.name == "FAILED":
                    ended = True
                    raise self._failure(out.error)
                new = out.generated_tokens[seen:]
                seen = len(out.generated_tokens)
                unreported += len(new)
                text = detok.push([t for t in new if t not in self._eos])
                if out.is_finished():
                    ended = True
                    self._streams.pop(request_id, None)
                    ended_on_eos = (seen and out.generated_tokens[-1] in self._eos
                                    and not sampling.ignore_eos)
                    reason = "stop" if ended_on_eos else "length"
                    yield ChatStep(text + detok.flush(), unreported, reason, len(ids), seen)
                    return
                if text:
                    yield ChatStep(text, unreported)
                    unreported = 0
        finally:
            if not ended:  # the consumer walked away: free the slot in the batch
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        queue = self._streams.pop(request_id, None)
        if queue is None:
            return
        if self._mgr is not None:
            self._mgr.cancel_request(request_id)
            self._swallow_late_outputs(request_id)
        queue.put_nowait(_CANCELLED)

    async def warm(self, prefix: str) -> int:
        self._warm_count += 1
        return await warm_by_prefill(self, f"__warm-{self._warm_count}", prefix)

    # ------------------------------------------------------------------ internals

    def _running(self) -> Any:
        if not self.alive():
            error = self._mgr.background_thread_status.fatal_error if self._mgr else None
            raise EngineDead(f"generation loop not running{f': {error}' if error else ''}")
        return self._mgr

    def _failure(self, error: str | None) -> Exception:
        if self._mgr is None or self._mgr.background_thread_status.fatal_error is not None:
            return EngineDead(error or "generation loop crashed")
        return RequestFailed(error or "generation failed")

    def _sampling_kwargs(self, sampling: Sampling) -> dict[str, float | int]:
        # The manager rejects (fails) a request whose kwargs name a processor the generation
        # config did not create, so only pass what it supports; the rest is ignored.
        supported = self._mgr.logit_processor.supported_keys
        kwargs: dict[str, float | int] = {}
        if sampling.temperature is not None and "temperature" in supported:
            # 0 means greedy to clients; the warper divides by it, so use a near-greedy value.
            kwargs["temperature"] = max(float(sampling.temperature), 1e-3)
        if sampling.top_p is not None and "top_p" in supported:
            kwargs["top_p"] = min(max(float(sampling.top_p), 1e-6), 1.0)
        if sampling.top_k is not None and "top_k" in supported:
            top_k = int(sampling.top_k)
            kwargs["top_k"] = self._vocab_size if top_k <= 0 else min(top_k, self._vocab_size)
        return kwargs

    def _swallow_late_outputs(self, request_id: str) -> None:
        # cancel_request() sends no final output and leaves the handler registered; without a
        # handler, outputs would pile up in the manager's shared queue that nobody reads.
        router = self._mgr.output_router
        with router._lock:
            router.result_handlers[request_id] = (_ignore, self._loop)
        assert self._loop is not None
        self._loop.call_later(LATE_OUTPUT_GRACE_S, self._drop_swallower, request_id)

    def _drop_swallower(self, request_id: str) -> None:
        if self._mgr is None:
            return
        router = self._mgr.output_router
        with router._lock:
            entry = router.result_handlers.get(request_id)
            if entry is not None and entry[0] is _ignore:  # not a new request of the same id
                del router.result_handlers[request_id]
        while not router.output_queue.empty():  # anything that slipped past the grace period
            router.output_queue.get_nowait()

    def _forget(self, request_id: str) -> None:
        """Undo ``generate``'s registration of a request the manager never took."""
        self._streams.pop(request_id, None)
        router = self._mgr.output_router
        with router._lock:
            router.result_handlers.pop(request_id, None)


def _ignore(_output: Any) -> None:
    pass
