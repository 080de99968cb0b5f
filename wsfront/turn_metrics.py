"""What the frames a session sends say about its turns, booked into ``FrontMetrics``.

The session stays free of clocks and counters: the shell shows this observer every frame
on its way to the client, and the observer derives turn starts, latencies and outcomes.
"""

from __future__ import annotations

from typing import Any

from .metrics import FrontMetrics


class TurnObserver:
    """One per connection; ``now`` is a monotonic clock in seconds."""

    def __init__(self, metrics: FrontMetrics, deploy_mode: str) -> None:
        self.metrics = metrics
        self.deploy_mode = deploy_mode
        self.started: float | None = None
        self.first_token = False

    def on_frame(self, frame: dict[str, Any], now: float) -> None:
        kind = frame.get("type")
        m = self.metrics
        if kind == "token":
            m.tokens_streamed_total.inc()
            if not self.first_token and self.started is not None:
                self.first_token = True
                m.ttft_seconds.observe(now - self.started)
        elif kind == "ack":
            m.turns_total.inc(deploy_mode=self.deploy_mode)
            self.started, self.first_token = now, False
        elif kind == "toolcall" and self.started is not None:
            m.toolcall_latency_seconds.observe(now - self.started)
        elif kind == "done":
            cancelled = bool(frame.get("cancelled"))
            if cancelled:
                m.cancels_total.inc()
            self._end("cancelled" if cancelled else "done", now)
        elif kind == "error":
            m.errors_total.inc(code=str(frame.get("error_code", "unknown")))
            if "request_id" in frame:  # an error that ends a turn (or a start refused)
                self._end("error", now)

    def _end(self, outcome: str, now: float) -> None:
        self.metrics.turns_ended_total.inc(outcome=outcome)
        if self.started is not None:
            self.metrics.turn_duration_seconds.observe(now - self.started)
            self.started = None
