"""``python -m workers`` as a real process, against a ROUTER socket this test binds and
drives as the broker would: Ready, Submit with a front envelope, Deltas, Finished, Cancel,
Drain, Reregister, Shutdown and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import zmq

from broker import frames
from broker.frames import (
    Cancel, ChatJob, Deltas, Drain, Finished, Ready, Reregister, Shutdown, Submit, ToolJob,
    ToolResult,
)

ROOT = Path(__file__).resolve().parent.parent
FRONT = b"front-1"
START_TIMEOUT_S = 60  # imports torch + transformers and loads the model on a busy 2-core box


def model_cache(tiny_models: dict[str, str]) -> str:
    """The cache the fixture built into: the worker resolves builtin:tiny-* there."""
    return str(Path(tiny_models["chat"]).parent)


class FakeBroker:
    """A bound ROUTER and the worker process connected to it."""

    def __init__(self, tmp_path: Path, model_cache: str, **config: object) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.name = str(config.get("name", f"{config['kind']}-t"))
        cfg = {"name": self.name, "connect": f"tcp://127.0.0.1:{port}",
               "model_cache": model_cache, "heartbeat_interval_s": 0.1,
               "max_model_len": 2048, "capacity": 8, **config}
        path = tmp_path / f"{self.name}.json"
        path.write_text(json.dumps(cfg))
        self.identity = self.name.encode()
        # A file, not a pipe: nobody reads a pipe while the test runs, and a full one blocks.
        self.log_path = tmp_path / f"{self.name}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "workers", "--config", str(path)],
                                         cwd=ROOT, stderr=log)
        self.ready = self.expect(Ready, timeout=START_TIMEOUT_S)

    def send(self, frame: msgspec.Struct, front: bytes | None = None) -> None:
        envelope = [front] if front is not None else []
        self.sock.send_multipart([self.identity, *envelope, frames.encode(frame)])

    def submit(self, rid: str, job: ChatJob | ToolJob, session: str = "s1") -> None:
        kind = "chat" if isinstance(job, ChatJob) else "tool"
        self.send(Submit(rid, session, job), front=FRONT)

    def recv(self, timeout: float) -> tuple[list[bytes], msgspec.Struct]:
        """The next frame from the worker that is not a heartbeat."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(left * 1000):
                break
            parts = self.sock.recv_multipart()
            assert parts[0] == self.identity
            if len(parts) == 3:  # [worker, front, payload]: output for a front
                return parts, frames.to_front_decoder.decode(parts[2])
            msg = frames.control_decoder.decode(parts[1])
            if not isinstance(msg, frames.Heartbeat):
                return parts, msg
        raise TimeoutError(f"nothing from the worker within {timeout}s; exit code "
                           f"{self.proc.poll()}; its log:\n{self.log()}")

    def expect(self, kind: type, timeout: float = 10.0):
        """Skip frames until one of ``kind``; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            _, msg = self.recv(max(0.0, deadline - time.monotonic()))
            if isinstance(msg, kind):
                return msg

    def run_chat(self, rid: str, job: ChatJob, timeout: float = 20.0):
        """Submit, then gather (Deltas frames, Finished) of that request."""
        self.submit(rid, job)
        deltas: list[Deltas] = []
        deadline = time.monotonic() + timeout
        while True:
            parts, msg = self.recv(max(0.0, deadline - time.monotonic()))
            if isinstance(msg, Deltas):
                assert parts[1] == FRONT
                deltas.append(msg)
            elif isinstance(msg, Finished) and msg.request_id == rid:
                assert len(parts) == 2  # control frame: the broker books it, then forwards
                return deltas, msg

    def wait_exit(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        assert code == 0, f"exit code {code}; its log:\n{self.log()}"
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.ctx.destroy(0)


@pytest.fixture(scope="module")
def chat(tiny_models, tmp_path_factory):
    broker = FakeBroker(tmp_path_factory.mktemp("chat"), model_cache(tiny_models), kind="chat",
                        engine="hf", model="builtin:tiny-chat")
    yield broker
    broker.close()


def job(utterance: str = "hello there", max_tokens: int = 12, **kw) -> ChatJob:
    return ChatJob(persona=kw.pop("persona", "You are a friendly assistant."),
                   history=kw.pop("history", ""), utterance=utterance, max_tokens=max_tokens, **kw)


def test_worker_registers_with_ready(chat):
    ready = chat.ready
    assert (ready.name, ready.kind, ready.engine, ready.model, ready.capacity, ready.device) == (
        "chat-t", "chat", "hf", "builtin:tiny-chat", 8, "cpu")
    assert ready.pid == chat.proc.pid


def test_chat_turn_streams_deltas_to_its_front_then_finishes(chat):
    deltas, finished = chat.run_chat("r1", job(max_tokens=16))
    items = [item for frame in deltas for item in frame.items]
    assert items and {item.request_id for item in items} == {"r1"}
    assert "".join(item.text for item in items)
    assert finished.reason == "length" and finished.completion_tokens == 16
    assert sum(item.tokens for item in items) <= 16
    assert finished.prompt_tokens > 5


def test_concurrent_turns_share_delta_frames(chat):
    for i in range(6):
        chat.submit(f"c{i}", job(f"question {i}", max_tokens=20), session=f"s{i}")
    finished: set[str] = set()
    shared = 0
    while len(finished) < 6:
        _, msg = chat.recv(20)
        if isinstance(msg, Deltas):
            shared = max(shared, len({item.request_id for item in msg.items}))
        elif isinstance(msg, Finished):
            assert msg.reason == "length"
            finished.add(msg.request_id)
    assert shared >= 4  # one frame per engine step per front, not one per token


def test_cancel_mid_stream_finishes_with_cancelled(chat):
    chat.submit("long", job(max_tokens=1500), session="sess-long")
    chat.expect(Deltas)
    chat.send(Cancel(request_ids=["long"]))
    finished = chat.expect(Finished, timeout=5)
    assert finished.request_id == "long" and finished.reason == "cancelled"
    assert 0 < finished.completion_tokens < 1500


def test_cancel_of_several_ids_aborts_each_and_spares_the_others(chat):
    chat.submit("a1", job(max_tokens=1500), session="barge")
    chat.submit("a2", job(max_tokens=1500), session="barge")
    chat.submit("other", job(max_tokens=8), session="calm")
    chat.expect(Deltas)
    chat.send(Cancel(["a1", "a2"]))
    reasons: dict[str, str] = {}
    while len(reasons) < 3:
        msg = chat.expect(Finished, timeout=10)
        reasons[msg.request_id] = msg.reason
    assert reasons == {"a1": "cancelled", "a2": "cancelled", "other": "length"}


def test_persona_over_the_token_limit_is_a_prompt_error(chat):
    deltas, finished = chat.run_chat("big", job(persona="you are nice and kind " * 600))
    assert deltas == []
    assert (finished.reason, finished.code) == ("error", "chat_prompt_too_long")
    assert "persona" in finished.message


def test_tool_job_on_a_chat_worker_is_answered_with_an_error(chat):
    chat.submit("wrong", ToolJob("take a screenshot"))
    reply = chat.expect(ToolResult)
    assert (reply.request_id, reply.reason, reply.code) == ("wrong", "error", "bad_request")


def test_reregister_and_broker_silence_both_bring_a_new_ready(chat):
    chat.send(Reregister())
    assert chat.expect(Ready, timeout=5).name == "chat-t"
    # This test's broker never heartbeats: after heartbeat_liveness (12) silent intervals the
    # worker registers again.
    assert chat.expect(Ready, timeout=5).name == "chat-t"


def test_drained_worker_refuses_new_turns_and_shutdown_exits_zero(chat):
    chat.send(Drain())
    deltas, finished = chat.run_chat("late", job())
    assert (finished.reason, finished.code) == ("error", "draining")
    chat.send(Shutdown())
    assert chat.wait_exit(10) == 0


def test_sigterm_mid_stream_cancels_in_flight_turns_and_exits_zero(tiny_models, tmp_path):
    broker = FakeBroker(tmp_path, model_cache(tiny_models), kind="chat", name="chat-term",
                        model="builtin:tiny-chat")
    try:
        broker.submit("t1", job(max_tokens=1500))
        broker.expect(Deltas)
        broker.proc.send_signal(signal.SIGTERM)
        finished = broker.expect(Finished, timeout=5)
        assert (finished.request_id, finished.reason) == ("t1", "cancelled")
        assert broker.wait_exit(5) == 0
        assert "chat-term" in broker.log()  # log lines carry the worker name
    finally:
        broker.close()


def test_tool_worker_answers_yes_and_no(tiny_models, tmp_path):
    broker = FakeBroker(tmp_path, model_cache(tiny_models), kind="tool", model="builtin:tiny-tool")
    try:
        assert (broker.ready.kind, broker.ready.engine) == ("tool", "classifier")
        broker.submit("y", ToolJob("take a screenshot"))
        broker.submit("n", ToolJob("tell me a joke"))
        replies = {}
        while len(replies) < 2:
            reply = broker.expect(ToolResult)
            replies[reply.request_id] = reply
        assert (replies["y"].label, replies["y"].reason) == ("yes", "stop")
        assert replies["n"].label == "no" and replies["n"].score < 0.5
        broker.send(Shutdown())
        assert broker.wait_exit(10) == 0
    finally:
        broker.close()


def test_unknown_engine_exits_non_zero_with_one_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "chat-bad", "kind": "chat", "engine": "nope",
                                "connect": "tcp://127.0.0.1:1",
                                "model_cache": str(tmp_path / "no-models-built-here")}))
    result = subprocess.run([sys.executable, "-m", "workers", "--config", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert "unknown chat engine 'nope'; known: hf, vllm, trt" in result.stderr
    assert not (tmp_path / "no-models-built-here").exists()  # it failed before building one
