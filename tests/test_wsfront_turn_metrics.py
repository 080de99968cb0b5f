"""Turn metrics derived from the turn events behind the frames a session sends, without sockets."""

from __future__ import annotations

from wsfront.metrics import FrontMetrics
from wsfront.guards import Refusal
from wsfront.turn_metrics import TurnObserver
from wsfront.turns import (
    Accepted, Cancelled, Completed, Reply, TextDelta, ToolDecided, TurnFailed, Usage,
)


def sample(text: str, name: str) -> float:
    """The value of one sample line of the exposition text, by its full name+labels."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def test_a_turn_books_ttft_toolcall_latency_tokens_and_outcome():
    m = FrontMetrics()
    o = TurnObserver(m, "both")
    o.on_event(Accepted("r"), 10.0)
    o.on_event(ToolDecided("r", False, "no", 0.1), 10.02)
    o.on_event(TextDelta("r", "Hi"), 10.05)
    o.on_event(TextDelta("r", " there"), 10.06)
    o.on_event(Reply("r", "Hi there"), 10.07)
    o.on_event(Completed("r", Usage(5, 2, 0, "stop")), 10.07)
    text = m.render()
    assert sample(text, 'textserve_turns_total{deploy_mode="both",protocol="yap"}') == 1
    assert sample(text, "textserve_tokens_streamed_total") == 2
    assert sample(text, 'textserve_ttft_seconds_count{protocol="yap"}') == 1
    assert abs(sample(text, 'textserve_ttft_seconds_sum{protocol="yap"}') - 0.05) < 1e-9
    assert abs(sample(text, "textserve_toolcall_latency_seconds_sum") - 0.02) < 1e-9
    assert sample(text, 'textserve_turns_ended_total{outcome="done",protocol="yap"}') == 1


def test_cancel_and_error_outcomes_and_error_codes():
    m = FrontMetrics()
    o = TurnObserver(m, "chat")
    o.on_event(Accepted("a"), 0.0)
    o.on_event(Cancelled("a", 3), 0.1)
    o.on_event(Accepted("b"), 1.0)
    o.on_event(TurnFailed("b", "worker_lost", "gone"), 1.2)
    o.on_event(Refusal("invalid_message", "bad"), 2.0)  # no turn ended
    text = m.render()
    assert sample(text, 'textserve_turns_ended_total{outcome="cancelled",protocol="yap"}') == 1
    assert sample(text, 'textserve_turns_ended_total{outcome="error",protocol="yap"}') == 1
    assert sample(text, "textserve_cancels_total") == 1
    assert sample(text, 'textserve_errors_total{code="worker_lost",protocol="yap"}') == 1
    assert sample(text, 'textserve_errors_total{code="invalid_message",protocol="yap"}') == 1
    assert sample(text, "textserve_turn_duration_seconds_count") == 2
