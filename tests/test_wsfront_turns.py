"""The protocol-neutral turn core: typed requests and broker frames in, broker frames and turn
events out (no sockets, no clock)."""

from __future__ import annotations

import pytest

from broker import frames
from pipeline import Sampling
from wsfront.turns import (
    CLIENT_CODES, TERMINAL, Cancelled, Completed, Reply, TextDelta, ToBroker, ToolDecided,
    TurnCore, TurnFailed, TurnRequest, Usage, Warmed, WarmFailed, client_code,
)


def request(**fields) -> TurnRequest:
    return TurnRequest(**{"session_id": "s1", "utterance": "hello there", "persona": "P",
                          "max_tokens": 50, **fields})


def submits(actions) -> list[frames.Submit]:
    return [a.frame for a in actions if isinstance(a, ToBroker)
            and isinstance(a.frame, frames.Submit)]


def cancels(actions) -> list[frames.Cancel]:
    return [a.frame for a in actions if isinstance(a, ToBroker)
            and isinstance(a.frame, frames.Cancel)]


def events(actions) -> list[object]:
    return [a for a in actions if not isinstance(a, ToBroker)]


def test_tool_first_then_chat_then_reply_and_completed_with_usage():
    core = TurnCore("c1", "both", concurrent=False)
    [tool] = submits(core.start("t1", request(history="User: hi", sanitize=False)))
    assert tool.kind == "tool" and tool.job == frames.ToolJob("hello there", "User: hi")
    out = core.on_broker(frames.ToolResult(tool.request_id, "yes", 0.9, True))
    assert events(out) == [ToolDecided("t1", True, "yes", 0.9)]
    [chat] = submits(out)
    assert chat.kind == "chat" and chat.job.persona == "P" and chat.job.max_tokens == 50
    out = core.on_broker(frames.Delta(chat.request_id, "Hi", 1))
    out += core.on_broker(frames.Finished(chat.request_id, "stop", 9, 1, cached_tokens=4))
    assert events(out) == [TextDelta("t1", "Hi"), Reply("t1", "Hi"),
                           Completed("t1", Usage(9, 1, 4, "stop"))]
    assert not core.busy() and core.live_request_ids() == []


def test_the_decision_uses_the_workers_yes_not_the_label_name():
    core = TurnCore("c1", "tool", concurrent=False)
    [tool] = submits(core.start("t1", request()))
    out = core.on_broker(frames.ToolResult(tool.request_id, "LABEL_1", 0.8, True))
    assert events(out) == [ToolDecided("t1", True, "LABEL_1", 0.8), Completed("t1", None)]


def test_concurrent_mode_holds_chat_text_and_its_end_until_the_decision():
    core = TurnCore("c1", "both", concurrent=True)
    tool, chat = submits(core.start("t1", request(sanitize=False)))
    assert (tool.kind, chat.kind) == ("tool", "chat")
    assert core.on_broker(frames.Delta(chat.request_id, "early", 1)) == []
    assert core.on_broker(frames.Finished(chat.request_id, "stop", 3, 1)) == []
    out = core.on_broker(frames.ToolResult(tool.request_id, "no", 0.1, False))
    assert [type(e) for e in events(out)] == [ToolDecided, TextDelta, Reply, Completed]


def test_a_request_that_declares_no_tool_skips_the_tool_model():
    core = TurnCore("c1", "both", concurrent=False)
    [chat] = submits(core.start("t1", request(tool=False)))
    assert chat.kind == "chat"


def test_cancel_reaches_every_live_request_and_ends_the_turn_once():
    core = TurnCore("c1", "both", concurrent=True)
    tool, chat = submits(core.start("t1", request()))
    core.on_broker(frames.Delta(chat.request_id, "x", 2))  # held, but counted
    out = core.cancel("t1")
    assert cancels(out) == [frames.Cancel([tool.request_id, chat.request_id])]
    assert events(out) == [Cancelled("t1", 2)]
    assert core.cancel("t1") == []  # a second cancel ends nothing
    # Late frames of the cancelled turn reach nobody.
    assert core.on_broker(frames.Finished(chat.request_id, "cancelled")) == []
    assert core.on_broker(frames.ToolResult(tool.request_id, "no", 0.1)) == []


def test_close_aborts_everything_silently():
    core = TurnCore("c1", "chat", concurrent=False)
    [chat] = submits(core.start("t1", request()))
    warm = submits(core.warm("persona", "s1", "P"))[0]
    out = core.close()
    assert cancels(out) == [frames.Cancel([chat.request_id]), frames.Cancel([warm.request_id])]
    assert events(out) == [] and not core.busy()


@pytest.mark.parametrize("frame_code,client", [
    ("worker_lost", "worker_lost"), ("no_worker", "worker_unavailable"),
    ("overloaded", "worker_unavailable"), ("queue_timeout", "queue_timeout"),
    ("worker_restarting", "worker_restarting"), ("bad_request", "internal_error"),
])
def test_a_broker_failure_fails_the_turn_with_the_client_code_and_cancels_the_rest(
        frame_code, client):
    core = TurnCore("c1", "both", concurrent=True)
    tool, chat = submits(core.start("t1", request()))
    out = core.on_broker(frames.Failed(tool.request_id, frame_code, "why"))
    assert cancels(out) == [frames.Cancel([chat.request_id])]
    assert events(out) == [TurnFailed("t1", client, "why")]
    assert core.on_broker(frames.Failed(chat.request_id, "worker_lost", "late")) == []


def test_worker_errors_and_unexpected_cancels_fail_the_turn():
    core = TurnCore("c1", "chat", concurrent=False)
    [chat] = submits(core.start("t1", request()))
    out = core.on_broker(frames.Finished(chat.request_id, "error", code="chat_prompt_too_long",
                                         message="too long"))
    assert events(out) == [TurnFailed("t1", "chat_prompt_too_long", "too long")]
    [chat] = submits(core.start("t2", request()))
    out = core.on_broker(frames.Finished(chat.request_id, "cancelled"))
    assert [e.code for e in events(out)] == ["worker_lost"]


def test_every_failure_code_of_the_wire_has_a_client_code():
    from typing import get_args
    for code in (*get_args(frames.FailCode), *get_args(frames.WorkerCode)):
        assert code == "" or code in CLIENT_CODES
    assert client_code("something new") == "internal_error"


def test_the_reply_is_cleaned_across_deltas_and_the_tail_flushed():
    core = TurnCore("c1", "chat", concurrent=False)
    [chat] = submits(core.start("t1", request(speak_numbers=True)))
    out = core.on_broker(frames.Delta(chat.request_id, "it costs $5", 1))
    out += core.on_broker(frames.Delta(chat.request_id, ".20 *smiles*", 1))
    out += core.on_broker(frames.Finished(chat.request_id, "stop", 3, 2))
    [reply] = [e for e in events(out) if isinstance(e, Reply)]
    assert reply.text == "It costs five dollars and twenty cents"
    assert "".join(e.text for e in events(out) if isinstance(e, TextDelta)) == reply.text


def test_sampling_and_runtime_text_reach_the_chat_job():
    core = TurnCore("c1", "chat", concurrent=False)
    [chat] = submits(core.start("t1", request(sampling=Sampling(temperature=0.2),
                                              runtime_text="It is 9 pm.")))
    assert chat.job.sampling == Sampling(temperature=0.2)
    assert chat.job.runtime_text == "It is 9 pm."


def test_warm_answers_warmed_or_warm_failed_with_its_tag():
    core = TurnCore("c1", "both", concurrent=False)
    [warm] = submits(core.warm("history", "s1", "P", "User: hi"))
    assert warm.kind == "chat" and warm.job.max_tokens == 0 and warm.job.history == "User: hi"
    assert core.on_broker(frames.Finished(warm.request_id, "stop", 40)) == [Warmed("history", 40)]
    [warm] = submits(core.warm("persona", "s1", "P"))
    assert core.on_broker(frames.Failed(warm.request_id, "no_worker", "none")) == [
        WarmFailed("persona", "worker_unavailable", "none")]


def test_request_ids_are_unique_per_connection_and_turn_ids_cannot_repeat_while_running():
    core = TurnCore("c1", "both", concurrent=True)
    ids = [s.request_id for s in submits(core.start("t1", request()))]
    ids += [s.request_id for s in submits(core.start("t2", request()))]
    assert len(set(ids)) == 4 and all(i.startswith("c1.") for i in ids)
    with pytest.raises(ValueError):
        core.start("t1", request())


def test_terminal_events_are_the_three_endings():
    assert set(TERMINAL) == {Completed, Cancelled, TurnFailed}
