"""Turn metrics derived from the frames a session sends, without sockets."""

from __future__ import annotations

from wsfront.metrics import FrontMetrics
from wsfront.turn_metrics import TurnObserver


def sample(text: str, name: str) -> float:
    """The value of one sample line of the exposition text, by its full name+labels."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def test_a_turn_books_ttft_toolcall_latency_tokens_and_outcome():
    m = FrontMetrics()
    o = TurnObserver(m, "both")
    o.on_frame({"type": "ack", "request_id": "r"}, 10.0)
    o.on_frame({"type": "toolcall", "status": "no"}, 10.02)
    o.on_frame({"type": "token", "text": "Hi"}, 10.05)
    o.on_frame({"type": "token", "text": " there"}, 10.06)
    o.on_frame({"type": "final", "text": "Hi there"}, 10.07)
    o.on_frame({"type": "done", "usage": {}}, 10.07)
    text = m.render()
    assert sample(text, 'textserve_turns_total{deploy_mode="both"}') == 1
    assert sample(text, "textserve_tokens_streamed_total") == 2
    assert sample(text, "textserve_ttft_seconds_count") == 1
    assert abs(sample(text, "textserve_ttft_seconds_sum") - 0.05) < 1e-9
    assert abs(sample(text, "textserve_toolcall_latency_seconds_sum") - 0.02) < 1e-9
    assert sample(text, 'textserve_turns_ended_total{outcome="done"}') == 1


def test_cancel_and_error_outcomes_and_error_codes():
    m = FrontMetrics()
    o = TurnObserver(m, "chat")
    o.on_frame({"type": "ack"}, 0.0)
    o.on_frame({"type": "done", "cancelled": True, "request_id": "a"}, 0.1)
    o.on_frame({"type": "ack"}, 1.0)
    o.on_frame({"type": "error", "error_code": "worker_lost", "request_id": "b"}, 1.2)
    o.on_frame({"type": "error", "error_code": "invalid_message"}, 2.0)  # no turn ended
    text = m.render()
    assert sample(text, 'textserve_turns_ended_total{outcome="cancelled"}') == 1
    assert sample(text, 'textserve_turns_ended_total{outcome="error"}') == 1
    assert sample(text, "textserve_cancels_total") == 1
    assert sample(text, 'textserve_errors_total{code="worker_lost"}') == 1
    assert sample(text, 'textserve_errors_total{code="invalid_message"}') == 1
    assert sample(text, "textserve_turn_duration_seconds_count") == 2
