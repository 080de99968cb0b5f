"""A Pipecat pipeline as a voice app builds it, driven by a test: the real Pipecat, with the
real LLM service under test (``OpenAILLMService`` on ``/v1``, ``OpenAIResponsesLLMService`` on
``/v1/responses``). Shared by tests/test_openai_clients.py and tests/test_responses_clients.py."""

from __future__ import annotations

import asyncio
import time


def run_pipecat(make_llm, settings_class, drive, *, tools=None, log_filter: str | None = None):
    """Run ``drive(session)`` in a live Pipecat pipeline as a voice app builds it (user
    context aggregator, the LLM service ``make_llm()`` returns, a recorder, assistant
    aggregator) and return what ``drive`` returns, and the session (``session.errors``: what
    the pipeline reported; ``session.log``: what the loggers under ``log_filter`` said, DEBUG
    and up). ``settings_class``: the service's Settings, for runtime changes. Pipecat is
    imported here: that takes seconds."""
    import pipecat  # noqa: F401  (the test extra installs it)
    from pipecat.frames.frames import (
        EndFrame, InterruptionFrame, LLMFullResponseEndFrame, LLMFullResponseStartFrame,
        LLMMessagesAppendFrame, LLMTextFrame, LLMUpdateSettingsFrame, MetricsFrame,
    )
    from pipecat.metrics.metrics import LLMUsageMetricsData
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    class Recorder(FrameProcessor):
        """What the service pushes: the text of each response (one per inference, empty for
        a tool call) and the usage Pipecat read from the stream."""

        def __init__(self) -> None:
            super().__init__()
            self.current: list[str] = []
            self.responses: list[str] = []
            self.usage: list[object] = []

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if direction == FrameDirection.DOWNSTREAM:
                if isinstance(frame, LLMFullResponseStartFrame):
                    self.current = []
                elif isinstance(frame, LLMTextFrame):
                    self.current.append(frame.text)
                elif isinstance(frame, LLMFullResponseEndFrame):
                    self.responses.append("".join(self.current))
                    self.current = []
                elif isinstance(frame, MetricsFrame):
                    self.usage += [d.value for d in frame.data
                                   if isinstance(d, LLMUsageMetricsData)]
            await self.push_frame(frame, direction)

    class Session:
        def __init__(self) -> None:
            self.context = LLMContext(tools=tools) if tools is not None else LLMContext()
            pair = LLMContextAggregatorPair(self.context)
            llm = make_llm()
            self.recorder = Recorder()
            self.worker = PipelineWorker(
                Pipeline([pair.user(), llm, self.recorder, pair.assistant()]),
                cancel_on_idle_timeout=False, enable_rtvi=False,
                params=PipelineParams(enable_metrics=True, enable_usage_metrics=True))
            self.started = asyncio.Event()
            self.errors: list[object] = []
            self.log: list[str] = []

            @self.worker.event_handler("on_pipeline_started")
            async def _started(_worker, _frame):
                self.started.set()

            @self.worker.event_handler("on_pipeline_error")
            async def _error(_worker, frame):
                self.errors.append(frame)

        async def until(self, predicate, timeout: float = 30.0) -> None:
            deadline = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"pipeline: not reached within {timeout}s "
                                       f"(responses {self.recorder.responses!r})")
                await asyncio.sleep(0.01)

        async def say(self, text: str) -> None:
            """The user's turn, as a speech-to-text stage would hand it on."""
            await self.worker.queue_frame(LLMMessagesAppendFrame(
                [{"role": "user", "content": text}], run_llm=True))

        async def reply(self, text: str) -> str:
            """Say ``text`` and wait for the first response with text (a tool call's empty
            response and the answer after its result come first)."""
            seen = len(self.recorder.responses)
            await self.say(text)
            await self.until(lambda: any(self.recorder.responses[seen:]))
            return next(r for r in self.recorder.responses[seen:] if r)

        async def interrupt(self) -> None:
            await self.worker.queue_frame(InterruptionFrame())

        async def set_budget(self, tokens: int) -> None:
            """``max_completion_tokens`` for the next inferences, changed at runtime."""
            await self.worker.queue_frame(LLMUpdateSettingsFrame(
                delta=settings_class(max_completion_tokens=tokens)))

    async def main():
        session = Session()

        async def driven():
            await asyncio.wait_for(session.started.wait(), 10)
            try:
                out = await drive(session)
            except BaseException:
                await session.worker.cancel()
                raise
            await session.worker.queue_frame(EndFrame())
            return out

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(session.worker)
        sink = None
        if log_filter is not None:
            from loguru import logger
            sink = logger.add(lambda m: session.log.append(m.record["message"]), level="DEBUG",
                              filter=log_filter)
        try:
            _, out = await asyncio.wait_for(asyncio.gather(runner.run(), driven()), 60)
        finally:
            if sink is not None:
                logger.remove(sink)
        return out, session

    return asyncio.run(main())


