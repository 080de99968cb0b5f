"""The wire codec: every frame survives a round trip through its direction's decoder."""

from __future__ import annotations

import msgspec
import pytest

from broker import frames
from broker.frames import (
    BrokerStatus, Cancel, ChatJob, Delta, Deltas, Failed, Finished, FrontHeartbeat, Heartbeat,
    Ready, Sampling, Submit, ToolJob, ToolResult, WorkerInfo,
)

CASES = [
    (frames.front_decoder, Submit("r1", "s1", ChatJob("persona", "User: hi", "hello", 200,
                                                             Sampling(temperature=0.7, top_k=40)))),
    (frames.front_decoder, Submit("r2", "s1", ToolJob("take a screenshot", "User: look"))),
    (frames.front_decoder, Cancel(["r1"])),
    (frames.front_decoder, FrontHeartbeat()),
    (frames.worker_decoder, Cancel(["r1", "r2"])),
    (frames.worker_decoder, frames.Drain()),
    (frames.worker_decoder, frames.Shutdown()),
    (frames.worker_decoder, frames.Reregister()),
    (frames.worker_decoder, Heartbeat()),
    (frames.control_decoder, Ready("chat-0", "chat", "hf", "tiny", 32, 123, "cpu",
                                   frames.PROTOCOL_VERSION)),
    (frames.control_decoder, Heartbeat(3)),
    (frames.control_decoder, Finished("r1", "stop", 10, 5)),
    (frames.control_decoder, Finished("r1", "error", code="chat_prompt_too_long", message="x")),
    (frames.control_decoder, ToolResult("r2", "yes", 0.9, True)),
    (frames.to_front_decoder, Deltas([Delta("r1", "Hel", 1), Delta("r3", "lo", 2)])),
    (frames.to_front_decoder, Failed("r1", "worker_lost", "gone")),
    (frames.to_front_decoder, BrokerStatus([WorkerInfo("chat-0", "chat", "hf", "m", 32, 1, 9,
                                                      "cpu", "ready")], 2)),
]


@pytest.mark.parametrize("decoder,frame", CASES, ids=lambda c: type(c).__name__)
def test_frame_round_trips(decoder, frame):
    assert decoder.decode(frames.encode(frame)) == frame


def test_token_frame_is_small():
    # array_like + class-name tags: a one-token delta frame stays a few dozen bytes.
    assert len(frames.encode(Deltas([Delta("a1b2c3d4", "Hello", 1)]))) < 32


def test_frame_of_the_wrong_direction_is_rejected():
    with pytest.raises(msgspec.ValidationError):
        frames.front_decoder.decode(frames.encode(Ready("c", "chat", "hf", "m", 1, 1, "cpu")))


def test_a_submit_kind_is_the_kind_of_its_job():
    assert Submit("r", "s", ChatJob("p", "", "hi", 5)).kind == "chat"
    assert Submit("r", "s", ToolJob("hi")).kind == "tool"
    decoded = frames.front_decoder.decode(frames.encode(Submit("r", "s", ToolJob("hi"))))
    assert decoded.kind == "tool"
