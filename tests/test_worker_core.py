"""The worker's rules (``WorkerCore``) without sockets, an engine or sleeps: what it sends,
asks of the engine and logs for each broker frame, engine event and clock tick."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest

from broker import frames
from broker.frames import (
    Cancel, ChatJob, Deltas, Drain, Finished, Ready, Reregister, Sampling, Shutdown, Submit,
    ToolJob, ToolResult,
)
from pipeline import PromptError
from tests.char_tokenizer import CharTokenizer
from workers.config import WorkerConfig
from workers.core import (
    Abort, Action, Classify, FlushLater, FlushSoon, Generate, InFlight, Log, Send, Stop, Warm, WorkerCore,
)
from workers.engines import (
    ChatStep, EngineDead, EngineUnavailable, RequestCancelled, RequestFailed, ToolDecision,
)


def make_core(kind: str = "chat", **cfg: object) -> WorkerCore:
    config = WorkerConfig(name=f"{kind}-1", kind=kind, connect="tcp://broker:5556",  # type: ignore[arg-type]
                          heartbeat_interval_s=0.25, **cfg)  # type: ignore[arg-type]
    core = WorkerCore(config, model_label="builtin:tiny-chat", pid=4242)
    core.on_engine_started(CharTokenizer() if kind == "chat" else None, now=0.0)
    return core


def chat_job(utterance: str = "hello", max_tokens: int = 8, **kw: object) -> ChatJob:
    return ChatJob(persona=str(kw.pop("persona", "be kind")), history=str(kw.pop("history", "")),
                   utterance=utterance, max_tokens=max_tokens, **kw)  # type: ignore[arg-type]


def submit(core: WorkerCore, rid: str, job: ChatJob | ToolJob | None = None,
           front: bytes = b"f1", now: float = 0.0) -> list[Action]:
    return core.on_frame(front, Submit(rid, "sess", job or chat_job()), now)


def started(core: WorkerCore, rid: str, front: bytes = b"f1",
            job: ChatJob | ToolJob | None = None) -> InFlight:
    """Submit and return the booked request the engine call is for."""
    calls = [a for a in submit(core, rid, job, front) if isinstance(a, (Generate, Warm, Classify))]
    assert len(calls) == 1
    return calls[0].request


def of(kind: type, actions: list[Action]) -> list:
    return [a for a in actions if isinstance(a, kind)]


def sent(actions: list[Action]) -> list[msgspec.Struct]:
    """The control frames sent now (Ready, Heartbeat), decoded."""
    return [frames.control_decoder.decode(a.parts[-1]) for a in of(Send, actions)]


def flushed(core: WorkerCore) -> list[tuple[bytes | None, msgspec.Struct]]:
    """This tick's output as the broker gets it: (front or None for a control frame, frame)."""
    out: list[tuple[bytes | None, msgspec.Struct]] = []
    for parts in core.flush():
        if len(parts) == 2:
            out.append((parts[0], frames.to_front_decoder.decode(parts[1])))
        else:
            out.append((None, frames.control_decoder.decode(parts[0])))
    return out


def logged(actions: list[Action], level: int | None = None) -> list[str]:
    return [a.text for a in of(Log, actions) if level is None or a.level == level]


def step(text: str, tokens: int = 1, reason=None, prompt: int = 0, completion: int = 0,
         cached: int = 0) -> ChatStep:
    return ChatStep(text, tokens, reason, prompt, completion, cached)


# ---------------------------------------------------------------- registering


def test_registering_sends_ready_with_what_the_worker_serves_and_the_protocol_version():
    config = WorkerConfig(name="chat-7", kind="chat", connect="tcp://b:1", capacity=5,
                          device="cuda:1")
    actions = WorkerCore(config, model_label="org/model", pid=99).on_engine_started(None, 1.0)
    (ready,) = sent(actions)
    assert isinstance(ready, Ready)
    assert (ready.name, ready.kind, ready.engine, ready.model, ready.capacity, ready.pid,
            ready.device, ready.protocol) == ("chat-7", "chat", "hf", "org/model", 5, 99,
                                              "cuda:1", frames.PROTOCOL_VERSION)
    assert logged(actions) == ["ready: chat engine hf, model org/model, capacity 5, broker tcp://b:1"]


def test_an_engine_that_cannot_start_exits_1_with_one_line_or_its_traceback():
    core = WorkerCore(WorkerConfig(name="c", kind="chat"), model_label="m", pid=1)
    (line,) = core.on_engine_start_failed(EngineUnavailable("no vllm here"), unavailable=True)
    assert (line.text, line.exc, core.exit_code) == ("engine unavailable: no vllm here", None, 1)
    bug = KeyError("config")
    (line,) = WorkerCore(WorkerConfig(name="c", kind="chat"), model_label="m",
                         pid=1).on_engine_start_failed(bug, unavailable=False)
    assert (line.text, line.exc) == ("engine failed to start", bug)


# ---------------------------------------------------------------- submit


def test_a_chat_turn_asks_the_engine_to_generate_the_rendered_prompt():
    core = make_core()
    sampling = Sampling(temperature=0.2)
    actions = submit(core, "r1", chat_job("hi there", max_tokens=30, history="user: before",
                                          sampling=sampling))
    (call,) = of(Generate, actions)
    assert call.prompt == "<system>be kind<user>before<user>hi there<assistant>"
    assert (call.max_tokens, call.sampling) == (30, sampling)
    assert (call.request.request_id, call.request.front) == ("r1", b"f1")
    assert core.requests == {"r1": call.request}


def test_prompt_budgets_come_from_the_worker_config():
    core = make_core(history_max_tokens=6, user_utt_max_tokens=4)
    (call,) = of(Generate, submit(core, "r1", chat_job("abcdefgh", history="user: 123456789")))
    assert call.prompt == "<system>be kind<user>456789<user>abcd<assistant>"


def test_a_persona_over_its_budget_is_answered_with_the_prompt_error_and_not_booked():
    assert of(Generate, submit(make_core(chat_prompt_max_tokens=1200), "fits",
                               chat_job(persona="x" * 1200)))
    core = make_core(chat_prompt_max_tokens=1200)  # CHAT_PROMPT_MAX_TOKENS
    actions = submit(core, "big", chat_job(persona="x" * 1201))
    assert of(Generate, actions) == [] and of(FlushSoon, actions)
    assert core.requests == {}
    ((_, reply),) = flushed(core)
    assert (reply.request_id, reply.reason, reply.code) == ("big", "error", "chat_prompt_too_long")
    assert "persona" in reply.message


def test_zero_max_tokens_warms_persona_and_history_and_answers_the_prefix_tokens():
    core = make_core()
    (call,) = of(Warm, submit(core, "w", chat_job("", max_tokens=0)))
    assert call.prefix == "<system>be kind"
    assert of(FlushSoon, core.on_warmed(call.request, 15))
    ((_, reply),) = flushed(core)
    assert (reply.request_id, reply.reason, reply.prompt_tokens) == ("w", "stop", 15)


def test_zero_max_tokens_with_nothing_to_warm_answers_at_once():
    core = make_core()
    actions = submit(core, "w", chat_job("", max_tokens=0, persona=""))
    assert of(Warm, actions) == [] and core.requests == {}
    ((_, reply),) = flushed(core)
    assert (reply.reason, reply.prompt_tokens) == ("stop", 0)


def test_a_tool_request_asks_the_engine_to_classify_it_with_the_history():
    core = make_core("tool")
    (call,) = of(Classify, submit(core, "t", ToolJob("take a screenshot", "user: look")))
    assert (call.utterance, call.history) == ("take a screenshot", "user: look")
    core.on_decision(call.request, ToolDecision("yes", 0.91, True))
    ((front, reply),) = flushed(core)
    assert front is None and isinstance(reply, ToolResult)
    assert (reply.request_id, reply.label, reply.score, reply.yes, reply.reason) == (
        "t", "yes", 0.91, True, "stop")


def test_a_job_of_the_other_kind_is_a_bad_request():
    core = make_core("chat")
    actions = submit(core, "wrong", ToolJob("take a screenshot"))
    assert of(Classify, actions) == [] and core.requests == {}
    ((_, reply),) = flushed(core)
    assert isinstance(reply, ToolResult)
    assert (reply.reason, reply.code, reply.message) == (
        "error", "bad_request", "a chat worker got a tool job")


def test_a_request_submitted_twice_is_served_once():
    core = make_core()
    first = started(core, "r1")
    again = submit(core, "r1")
    assert logged(again, logging.WARNING) == ["request r1 submitted twice; ignoring the second"]
    assert of(Generate, again) == [] and core.requests == {"r1": first}
    assert core.flush() == []


def test_a_request_id_serves_again_once_its_final_went_out():
    core = make_core()
    core.on_step(first := started(core, "r1"), step("", 0, "stop"))
    core.on_stream_end(first, 1.0)
    assert of(Generate, submit(core, "r1"))


def test_over_capacity_is_accepted_with_a_warning_and_queues_in_the_engine():
    core = make_core(capacity=1)
    started(core, "a")
    actions = submit(core, "b")
    assert of(Generate, actions)
    assert logged(actions, logging.WARNING) == ["over capacity (1): request b queues in the engine"]


# ---------------------------------------------------------------- drain


def test_a_draining_worker_refuses_new_requests_and_finishes_the_ones_it_holds():
    core = make_core()
    held = started(core, "held")
    assert logged(core.on_frame(b"", Drain(), 0.0)) == [
        "draining: 1 in flight, accepting nothing new"]
    assert logged(core.on_frame(b"", Drain(), 0.1)) == []  # said once
    assert of(Generate, submit(core, "late")) == []
    ((_, refused),) = flushed(core)
    assert (refused.request_id, refused.reason, refused.code, refused.message) == (
        "late", "error", "draining", "worker chat-1 is draining")
    assert core.requests == {"held": held}
    core.on_step(held, step("ok", 1))
    assert [type(m) for _, m in flushed(core)] == [Deltas]


def test_a_draining_tool_worker_refuses_with_a_tool_result():
    core = make_core("tool")
    core.on_frame(b"", Drain(), 0.0)
    submit(core, "t", ToolJob("hi"))
    ((_, reply),) = flushed(core)
    assert isinstance(reply, ToolResult) and (reply.reason, reply.code) == ("error", "draining")


# ---------------------------------------------------------------- output


def test_one_tick_makes_one_deltas_frame_per_front_then_the_finals():
    core = make_core()
    a, b, c = started(core, "a", b"f1"), started(core, "b", b"f1"), started(core, "c", b"f2")
    core.on_step(a, step("Hel", 2))
    core.on_step(c, step("Yes", 1))
    core.on_step(b, step("Hi", 1))
    core.on_step(a, step("lo", 1, "stop", prompt=9, completion=3, cached=4))
    core.on_stream_end(a, 0.5)
    out = flushed(core)
    assert [(front, type(m)) for front, m in out] == [(b"f1", Deltas), (b"f2", Deltas),
                                                      (None, Finished)]
    assert [(d.request_id, d.text, d.tokens) for d in out[0][1].items] == [
        ("a", "Hello", 3), ("b", "Hi", 1)]  # a request's text of one flush is one delta
    assert [d.request_id for d in out[1][1].items] == ["c"]
    final = out[2][1]
    assert (final.request_id, final.reason, final.prompt_tokens, final.completion_tokens,
            final.cached_tokens) == ("a", "stop", 9, 3, 4)
    assert set(core.requests) == {"b", "c"} and core.flush() == []


def test_only_the_first_output_of_a_tick_asks_for_a_flush():
    core = make_core()
    a, b = started(core, "a"), started(core, "b")
    assert core.on_step(a, step("x")) == FlushSoon()
    assert core.on_step(b, step("y")) is None
    core.on_step(a, step("", 0, "length"))
    assert of(FlushSoon, core.on_stream_end(a, 0.1)) == []  # the tick's flush takes it too
    core.flush()
    assert core.on_step(b, step("z")) == FlushSoon()  # no window: one flush per engine step


def test_with_a_flush_window_first_text_goes_this_tick_and_later_text_waits_merged():
    core = make_core(stream_flush_ms=20)
    a, b = started(core, "a"), started(core, "b")
    assert core.on_step(a, step("Hel")) == FlushSoon()  # a's first text: at once
    assert core.on_step(b, step("Hi")) is None  # b's first too, in the same flush
    [(_, first)] = flushed(core)
    assert [(d.request_id, d.text) for d in first.items] == [("a", "Hel"), ("b", "Hi")]
    assert core.on_step(a, step("lo")) == FlushLater(0.02)  # later text: after the window
    assert core.on_step(a, step(" you")) is None  # the window is running
    assert core.on_step(b, step(" there")) is None
    c = started(core, "c")
    assert core.on_step(c, step("Yes")) == FlushSoon()  # a new request's first text: now
    [(_, merged)] = flushed(core)
    assert [(d.request_id, d.text, d.tokens) for d in merged.items] == [
        ("a", "lo you", 2), ("b", " there", 1), ("c", "Yes", 1)]
    assert core.on_step(a, step("!")) == FlushLater(0.02)  # a new window after a flush
    core.on_step(a, step("", 0, "stop"))
    assert of(FlushSoon, core.on_stream_end(a, 0.3)) == [FlushSoon()]  # a final: at once
    [(_, last), (_, final)] = flushed(core)
    assert [d.text for d in last.items] == ["!"] and final.reason == "stop"


def test_a_final_alone_asks_for_a_flush():
    core = make_core()
    a = started(core, "a")
    core.on_step(a, step("", 0, "length"))
    assert of(FlushSoon, core.on_stream_end(a, 0.1)) == [FlushSoon()]


def test_a_step_without_text_sends_nothing():
    core = make_core()
    a = started(core, "a")
    assert core.on_step(a, step("", 0)) is None
    assert core.flush() == [] and a.tokens == 0


def test_streamed_tokens_are_counted_per_request():
    core = make_core()
    a = started(core, "a")
    for text in ("one ", "two ", "three"):
        core.on_step(a, step(text, 2))
    assert a.tokens == 6


# ---------------------------------------------------------------- cancel


def test_cancel_aborts_the_named_requests_this_worker_holds_and_spares_the_others():
    core = make_core()
    a1, a2, other = started(core, "a1"), started(core, "a2"), started(core, "other")
    actions = core.on_frame(b"", Cancel(["a1", "a2", "not-here"]), 1.0)
    assert of(Abort, actions) == [Abort("a1"), Abort("a2")]
    assert (a1.cancelled, a2.cancelled, other.cancelled) == (True, True, False)


def test_a_cancelled_stream_logs_what_streamed_before_the_first_abort_and_how_long_it_took():
    core = make_core()
    r = started(core, "r")
    core.on_step(r, step("a", 3))
    core.on_frame(b"", Cancel(["r"]), 10.0)
    core.on_step(r, step("b", 2))
    core.on_frame(b"", Cancel(["r"]), 10.5)  # a second cancel moves nothing
    core.on_step(r, step("", 0, "cancelled", completion=7))
    actions = core.on_stream_end(r, 10.0125)
    assert logged(actions, logging.INFO) == [
        "request r of session sess cancelled: 7 tokens generated, 3 streamed before the abort; "
        "stopped 12.5 ms after the abort"]
    final = [m for _, m in flushed(core) if isinstance(m, Finished)]
    assert [(f.reason, f.completion_tokens) for f in final] == [("cancelled", 7)]


def test_a_stream_the_engine_cancelled_on_its_own_logs_no_cancel_line():
    core = make_core()
    r = started(core, "r")
    core.on_step(r, step("", 0, "cancelled"))
    assert logged(core.on_stream_end(r, 1.0), logging.INFO) == []


def test_reregister_aborts_every_request_the_broker_forgot_and_registers_again():
    core = make_core()
    started(core, "a"), started(core, "b")
    actions = core.on_frame(b"", Reregister(), 2.0)
    assert of(Abort, actions) == [Abort("a"), Abort("b")]
    assert [type(m) for m in sent(actions)] == [Ready]
    assert logged(actions) == ["broker asked to register again; aborting 2 request(s) it no "
                               "longer knows"]


# ---------------------------------------------------------------- failures: one final each


@pytest.mark.parametrize("kind", ["chat", "tool"])
@pytest.mark.parametrize("exc, reason, code, message", [
    (RequestFailed("out of blocks"), "error", "internal_error", "out of blocks"),
    (ZeroDivisionError("scripted bug"), "error", "internal_error",
     "ZeroDivisionError: scripted bug"),
    (RequestCancelled("r"), "cancelled", "", ""),
    (asyncio.CancelledError(), "cancelled", "", ""),
    (PromptError("chat_prompt_too_long", "prompt is 9000 tokens"), "error",
     "chat_prompt_too_long", "prompt is 9000 tokens"),
])
def test_whatever_the_engine_call_raises_the_request_gets_one_final_that_says_why(
        kind, exc, reason, code, message):
    core = make_core(kind)
    job = chat_job() if kind == "chat" else ToolJob("hi")
    request = started(core, "r", job=job)
    actions = core.on_failure(request, exc)
    ((_, reply),) = flushed(core)
    assert type(reply) is (Finished if kind == "chat" else ToolResult)
    assert (reply.request_id, reply.reason, reply.code, reply.message) == ("r", reason, code,
                                                                            message)
    assert core.requests == {} and of(Stop, actions) == []


def test_an_unexpected_error_is_logged_with_its_traceback():
    core = make_core()
    bug = ZeroDivisionError("scripted bug")
    (line,) = [a for a in core.on_failure(started(core, "r"), bug) if isinstance(a, Log)
               and a.level == logging.ERROR]
    assert (line.text, line.exc) == ("request r failed", bug)


def test_a_dead_engine_fails_its_request_with_worker_lost_and_stops_the_worker_with_1():
    core = make_core()
    actions = core.on_failure(started(core, "r"), EngineDead("generation thread crashed"))
    assert of(Stop, actions) == [Stop(1)] and core.exit_code == 1
    assert logged(actions, logging.ERROR) == ["stopping: engine failed: generation thread crashed"]
    ((_, reply),) = flushed(core)
    assert (reply.reason, reply.code, reply.message) == (
        "error", "worker_lost", "engine failed: generation thread crashed")


def test_a_stream_that_ends_without_a_finish_reason_is_an_internal_error():
    core = make_core()
    r = started(core, "r")
    core.on_step(r, step("partial"))
    core.on_stream_end(r, 1.0)
    out = flushed(core)
    assert [type(m) for _, m in out] == [Deltas, Finished]
    assert (out[1][1].reason, out[1][1].code, out[1][1].message) == (
        "error", "internal_error", "RuntimeError: engine stream ended without a finish reason")


def test_a_request_is_answered_exactly_once_even_if_its_end_is_reported_twice():
    core = make_core()
    r = started(core, "r")
    core.on_step(r, step("", 0, "stop"))
    core.on_stream_end(r, 1.0)
    assert core.on_failure(r, asyncio.CancelledError()) == []
    assert core.on_stream_end(r, 1.1) == []
    assert [m.reason for _, m in flushed(core)] == ["stop"]


def test_a_stale_end_does_not_answer_the_request_that_reused_its_id():
    core = make_core()
    old = started(core, "r")
    core.on_failure(old, RequestCancelled("r"))
    new = started(core, "r")
    assert core.on_failure(old, RequestCancelled("r")) == []
    assert core.requests == {"r": new}


# ---------------------------------------------------------------- liveness and stopping


def test_each_tick_heartbeats_with_the_number_of_requests_held():
    core = make_core()
    started(core, "a"), started(core, "b")
    (beat,) = sent(core.tick(0.25, engine_alive=True))
    assert isinstance(beat, frames.Heartbeat) and beat.load == 2


def test_a_silent_broker_gets_ready_again_every_liveness_intervals_and_one_warning():
    core = make_core(heartbeat_liveness=3)  # 3 x 0.25 s
    assert [type(m) for m in sent(core.tick(0.75, True))] == [frames.Heartbeat]
    actions = core.tick(0.76, True)
    assert [type(m) for m in sent(actions)] == [frames.Heartbeat, Ready]
    assert logged(actions, logging.WARNING) == [
        "no word from the broker for 0.8s: registering again until it answers"]
    assert [type(m) for m in sent(core.tick(1.5, True))] == [frames.Heartbeat]
    actions = core.tick(1.52, True)
    assert [type(m) for m in sent(actions)] == [frames.Heartbeat, Ready]
    assert logged(actions) == []  # still the same silence: warned already
    assert logged(core.on_frame(b"", frames.Heartbeat(), 1.6)) == ["broker is back"]
    assert [type(m) for m in sent(core.tick(2.3, True))] == [frames.Heartbeat]


def test_any_frame_from_the_broker_proves_it_alive_even_an_undecodable_one():
    core = make_core(heartbeat_liveness=2)
    actions = core.on_undecodable("truncated", 0.4)
    assert logged(actions, logging.WARNING) == ["undecodable frame from broker: truncated"]
    assert [type(m) for m in sent(core.tick(0.8, True))] == [frames.Heartbeat]
    core.on_frame(b"", Submit("r", "s", chat_job()), 1.2)
    assert [type(m) for m in sent(core.tick(1.6, True))] == [frames.Heartbeat]


def test_an_engine_that_stopped_running_stops_the_worker_with_1_at_the_next_tick():
    core = make_core()
    actions = core.tick(0.25, engine_alive=False)
    assert of(Stop, actions) == [Stop(1)] and sent(actions) == []
    assert logged(actions, logging.ERROR) == ["stopping: engine is no longer running"]
    assert core.tick(0.5, engine_alive=False) == []


def test_the_first_stop_reason_decides_the_exit_code():
    core = make_core()
    assert of(Stop, core.stop(0, "signal SIGTERM")) == [Stop(0)]
    assert core.stop(1, "engine is no longer running") == []
    assert core.exit_code == 0


def test_a_shutdown_frame_stops_the_worker_with_0():
    core = make_core()
    actions = core.on_frame(b"", Shutdown(), 0.1)
    assert of(Stop, actions) == [Stop(0)]
    assert logged(actions) == ["stopping: shutdown frame from broker"]


def test_shutting_down_aborts_everything_held_and_refuses_what_comes_later():
    core = make_core()
    a, b = started(core, "a"), started(core, "b")
    assert core.shutdown(3.0) == [Abort("a"), Abort("b")]
    assert a.cancelled and b.cancelled and a.aborted_at == 3.0
    submit(core, "late")
    ((_, reply),) = flushed(core)
    assert (reply.request_id, reply.code) == ("late", "draining")
