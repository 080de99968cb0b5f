"""What a connection's turn events say, booked into ``FrontMetrics``.

The adapters and the turn core stay free of clocks and counters: the shell shows this observer
the event behind every frame it sends (``SendClient.event``), and the observer derives turn
starts, latencies and outcomes from the typed events.
"""

from __future__ import annotations

from .guards import Refusal
from .metrics import FrontMetrics
from .turns import Accepted, Cancelled, Completed, TextDelta, ToolDecided, TurnEvent, TurnFailed


class TurnObserver:
    """One per connection; ``now`` is a monotonic clock in seconds."""

    def __init__(self, metrics: FrontMetrics, deploy_mode: str, protocol: str = "yap") -> None:
        self.metrics = metrics
        self.deploy_mode = deploy_mode
        self.protocol = protocol
        self.started: float | None = None
        self.first_token = False

    def on_event(self, event: TurnEvent | Refusal, now: float) -> None:
        kind = type(event)
        m = self.metrics
        if kind is TextDelta:
            m.tokens_streamed_total.inc()
            if not self.first_token and self.started is not None:
                self.first_token = True
                m.ttft_seconds.observe(now - self.started, protocol=self.protocol)
        elif kind is Accepted:
            m.turns_total.inc(deploy_mode=self.deploy_mode, protocol=self.protocol)
            self.started, self.first_token = now, False
        elif kind is ToolDecided:
            if self.started is not None:
                m.toolcall_latency_seconds.observe(now - self.started)
        elif kind is Completed:
            self._end("done", now)
        elif kind is Cancelled:
            m.cancels_total.inc()
            self._end("cancelled", now)
        elif kind is TurnFailed:
            m.errors_total.inc(code=event.code, protocol=self.protocol)
            self._end("error", now)
        elif kind is Refusal:  # a message turned away; no turn ends with it
            m.errors_total.inc(code=event.code, protocol=self.protocol)

    def _end(self, outcome: str, now: float) -> None:
        self.metrics.turns_ended_total.inc(outcome=outcome, protocol=self.protocol)
        if self.started is not None:
            self.metrics.turn_duration_seconds.observe(now - self.started)
            self.started = None
