"""The Yap protocol adapter over the turn core, without sockets (docs/protocol.md): what the
client is sent, checked on the encoded wire frames."""

from __future__ import annotations

import json

import pytest

from broker import frames
from wsfront.config import FrontConfig
from wsfront.turns import ToBroker
from wsfront.yap import CloseClient, SendClient, YapSession
from wsfront.yap_frames import encode_server


def make(deploy_mode: str = "both", concurrent: bool = False) -> YapSession:
    return YapSession(FrontConfig(api_key="k", deploy_mode=deploy_mode,
                               concurrent_model_call=concurrent), "c1")


def start(session: YapSession, **fields) -> list:
    msg = {"type": "start", "session_id": "s1", "user_utterance": "hello there", **fields}
    return session.on_client(json.dumps(msg))


def client_frames(actions) -> list[dict]:
    return [json.loads(encode_server(a.frame)) for a in actions if isinstance(a, SendClient)]


def submits(actions) -> list[frames.Submit]:
    return [a.frame for a in actions if isinstance(a, ToBroker) and isinstance(a.frame, frames.Submit)]


def cancels(actions) -> list[frames.Cancel]:
    return [a.frame for a in actions if isinstance(a, ToBroker) and isinstance(a.frame, frames.Cancel)]


def types(actions) -> list[str]:
    return [f["type"] for f in client_frames(actions)]


def ids(session: YapSession) -> dict[str, str]:
    assert session.turn is not None
    return {kind: rid for rid, kind in session.core.turns[session.turn].requests.items()}


def test_full_turn_sends_ack_toolcall_tokens_final_done_in_order():
    s = make()
    out = start(s, request_id="r-1")
    assert types(out) == ["ack"] and [x.kind for x in submits(out)] == ["tool"]
    rid = ids(s)
    out = s.on_broker(frames.ToolResult(rid["tool"], "no", 0.1))
    assert types(out) == ["toolcall"] and client_frames(out)[0]["status"] == "no"
    [chat] = submits(out)
    assert chat.kind == "chat" and chat.job.utterance == "hello there"
    out = s.on_broker(frames.Delta(chat.request_id, "hi", 1))
    out += s.on_broker(frames.Delta(chat.request_id, " friend", 1))
    out += s.on_broker(frames.Finished(chat.request_id, "stop", 12, 2, cached_tokens=8))
    got = client_frames(out)
    assert [f["type"] for f in got][-2:] == ["final", "done"]
    tokens = "".join(f["text"] for f in got if f["type"] == "token")
    assert got[-2]["text"] == tokens == "Hi friend"
    assert got[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14,
                                "prompt_tokens_details": {"cached_tokens": 8},
                                "finish_reason": "stop"}
    assert all(f["request_id"] == "r-1" for f in got)
    assert s.turn is None


def test_concurrent_mode_holds_chat_tokens_until_the_toolcall():
    s = make(concurrent=True)
    out = start(s)
    assert sorted(x.kind for x in submits(out)) == ["chat", "tool"]
    rid = ids(s)
    assert s.on_broker(frames.Delta(rid["chat"], "early", 1)) == []
    assert s.on_broker(frames.Finished(rid["chat"], "stop", 3, 1)) == []
    out = s.on_broker(frames.ToolResult(rid["tool"], "yes", 0.9, True))
    assert types(out) == ["toolcall", "token", "final", "done"]
    assert client_frames(out)[0]["status"] == "yes"


def test_chat_only_deployment_skips_toolcall_and_tool_only_ends_after_it():
    s = make("chat")
    out = start(s)
    assert [x.kind for x in submits(out)] == ["chat"]
    out = s.on_broker(frames.Finished(ids(s)["chat"], "length", 3, 200))
    assert types(out) == ["final", "done"]
    t = make("tool")
    out = start(t)
    assert [x.kind for x in submits(out)] == ["tool"]
    out = t.on_broker(frames.ToolResult(ids(t)["tool"], "yes", 0.7, True))
    assert types(out) == ["toolcall", "done"] and t.turn is None


@pytest.mark.parametrize("cancel", ['{"type": "cancel"}', '{"cancel": true}', "__CANCEL__"])
def test_cancel_aborts_on_the_broker_and_answers_done_cancelled(cancel):
    s = make()
    start(s, request_id="r-1")
    rid = ids(s)
    out = s.on_client(cancel)
    assert cancels(out) == [frames.Cancel([rid["tool"]])]
    assert client_frames(out) == [{"type": "done", "cancelled": True, "cancelled_after_tokens": 0,
                                   "request_id": "r-1"}]
    # A late result of the cancelled turn reaches nobody.
    assert s.on_broker(frames.ToolResult(rid["tool"], "yes", 0.9, True)) == []


def test_cancelled_done_says_how_many_reply_tokens_were_streamed_before_the_cancel():
    s = make()
    start(s, request_id="r-2", sampling={"sanitize_output": False})
    s.on_broker(frames.ToolResult(ids(s)["tool"], "no", 0.1))
    chat = ids(s)["chat"]
    s.on_broker(frames.Delta(chat, "Hel", 2))  # a delta covers every token of its step
    s.on_broker(frames.Delta(chat, "lo", 1))
    out = s.on_client('{"type": "cancel"}')
    assert client_frames(out) == [{"type": "done", "cancelled": True, "cancelled_after_tokens": 3,
                                   "request_id": "r-2"}]


def test_cancel_without_a_turn_still_answers_done_with_the_request_id():
    out = make().on_client('{"type": "cancel", "request_id": "x"}')
    assert client_frames(out) == [{"type": "done", "cancelled": True, "request_id": "x"}]


def test_barge_in_ends_the_old_turn_with_done_cancelled_before_the_new_ack():
    s = make()
    start(s, request_id="old")
    old = ids(s)
    s.on_broker(frames.ToolResult(old["tool"], "no", 0.1))
    old = ids(s)
    out = start(s, request_id="new", user_utterance="wait, actually")
    assert cancels(out) == [frames.Cancel([old["chat"]])]  # the tool request had ended
    got = client_frames(out)
    assert got[0] == {"type": "done", "cancelled": True, "cancelled_after_tokens": 0,
                      "request_id": "old"}
    assert got[1]["type"] == "ack" and got[1]["request_id"] == "new"
    assert s.on_broker(frames.Delta(old["chat"], "stale", 1)) == []


def test_worker_failure_becomes_one_error_frame_with_the_request_id():
    s = make()
    start(s, request_id="r-9")
    s.on_broker(frames.ToolResult(ids(s)["tool"], "no", 0.1))
    chat = ids(s)["chat"]
    s.on_broker(frames.Delta(chat, "partial", 1))
    out = s.on_broker(frames.Failed(chat, "worker_lost", "worker chat-0 stopped responding"))
    [error] = client_frames(out)
    assert error["type"] == "error" and error["error_code"] == "worker_lost"
    assert error["request_id"] == "r-9" and s.turn is None


def test_prompt_error_from_the_worker_reaches_the_client_with_its_code():
    s = make("chat")
    start(s)
    out = s.on_broker(frames.Finished(ids(s)["chat"], "error", code="chat_prompt_too_long",
                                      message="persona is 2000 tokens"))
    assert client_frames(out)[0]["error_code"] == "chat_prompt_too_long"


def test_end_cancels_work_and_closes_with_1000():
    s = make()
    start(s)
    out = s.on_client("__END__")
    assert cancels(out)
    # The running turn ends with its own terminal frame before the connection does.
    assert types(out) == ["done", "connection_closed"] and client_frames(out)[0]["cancelled"]
    assert client_frames(out)[-1] == {"type": "connection_closed", "reason": "client_request"}
    assert out[-1] == CloseClient(1000, "client_request")


def test_disconnect_aborts_the_running_turn():
    s = make()
    start(s)
    rid = ids(s)
    assert cancels(s.on_disconnect()) == [frames.Cancel([rid["tool"]])]
    assert s.on_client('{"type": "ping"}') == []


@pytest.mark.parametrize("raw,code", [
    ("{not json", "invalid_message"),
    ("[1, 2]", "invalid_message"),
    ('{"type": "dance"}', "unknown_message_type"),
    ('{"no_type": 1}', "invalid_message"),
    ('{"type": "start", "user_utterance": "hi"}', "missing_session_id"),
    ('{"type": "start", "session_id": "s"}', "invalid_message"),
    ('{"type": "start", "session_id": "s", "user_utterance": "hi", "temperature": "hot"}',
     "invalid_sampling"),
    ('{"type": "start", "session_id": "s", "user_utterance": "hi",'
     ' "sampling_params": {"nope": 1}}', "invalid_sampling"),
    (b"\xff\xfe", "invalid_message"),
    ('{"type": "start", "session_id": "s", "user_utterance": 5}', "invalid_message"),
    ('{"type": "start", "session_id": "s", "user_utterance": "hi", "sampling": {"top_p": 7}}',
     "invalid_sampling"),
    ('{"type": "start", "session_id": "s", "user_utterance": "hi", "persona_style": "evil"}',
     "invalid_persona"),
])
def test_malformed_frames_get_a_specific_error_and_the_session_stays_usable(raw, code):
    s = make()
    [frame] = client_frames(s.on_client(raw))
    assert frame["type"] == "error" and frame["error_code"] == code
    assert types(start(s)) == ["ack"]


def test_ping_pong_and_client_pong_is_a_no_op():
    s = make()
    assert client_frames(s.on_client('{"type": "ping"}')) == [{"type": "pong"}]
    assert s.on_client('{"type": "pong"}') == []


def test_persona_settings_persist_across_turns_and_reach_the_chat_job():
    s = make("chat")
    out = start(s, persona_style="nerdy", assistant_gender="male")
    ack = client_frames(out)[0]
    assert (ack["persona_style"], ack["gender"]) == ("nerdy", "man")
    persona = submits(out)[0].job.persona
    s.on_broker(frames.Finished(ids(s)["chat"], "stop"))
    out = start(s)
    assert submits(out)[0].job.persona == persona
    out = start(s, chat_prompt="You are a pirate.")
    assert submits(out)[0].job.persona == "You are a pirate."


def test_sampling_overrides_reach_the_job_and_sanitize_false_sends_raw_text():
    s = make("chat")
    out = start(s, sampling={"temperature": 0.3, "top_k": 5, "sanitize_output": False})
    job = submits(out)[0].job
    assert job.sampling.temperature == 0.3 and job.sampling.top_k == 5
    out = s.on_broker(frames.Delta(ids(s)["chat"], "*waves* hi", 2))
    assert client_frames(out)[0]["text"] == "*waves* hi"


# ------------------------------------------------------------------ guards and warming


def limited(**overrides) -> YapSession:
    return YapSession(FrontConfig(api_key="k", **overrides), "c1")


def test_message_rate_limit_answers_rate_limited_with_retry_after_and_recovers():
    s = limited(max_messages_per_window=2, message_window_s=10)
    assert types(s.on_client('{"type": "ping"}', now=0.0)) == ["pong"]
    assert types(s.on_client('{"type": "ping"}', now=1.0)) == ["pong"]
    [err] = client_frames(s.on_client('{"type": "ping"}', now=2.0))
    assert err["error_code"] == "rate_limited" and err["retry_after_s"] == 8.0
    assert types(s.on_client('{"type": "ping"}', now=10.5)) == ["pong"]  # the oldest aged out


def test_a_zero_limit_or_window_disables_the_rate_limit():
    for overrides in ({"max_messages_per_window": 0}, {"message_window_s": 0}):
        s = limited(**overrides)
        assert all(types(s.on_client('{"type": "ping"}', now=0.0)) == ["pong"] for _ in range(500))


def test_cancel_rate_limit_counts_cancels_only():
    s = limited(max_cancels_per_window=1, cancel_window_s=5)
    assert types(s.on_client("__CANCEL__", now=0.0)) == ["done"]
    assert types(s.on_client('{"type": "ping"}', now=0.1)) == ["pong"]
    [err] = client_frames(s.on_client('{"type": "cancel"}', now=0.2))
    assert err["error_code"] == "rate_limited"


def test_persona_changes_are_rate_limited_per_session_but_repeats_are_free():
    s = limited(persona_updates_per_window=1, persona_update_window_s=60)
    assert types(start(s, chat_prompt="You are a pirate.")) == ["ack"]
    for _ in range(3):  # the same persona again is not an update (each start barges in)
        assert types(start(s, chat_prompt="You are a pirate.")) == ["done", "ack"]
    out = start(s, chat_prompt="You are a robot.")
    [err] = [f for f in client_frames(out) if f["type"] == "error"]
    assert err["error_code"] == "chat_prompt_update_rate_limited" and err["retry_after_s"] > 0
    assert s.persona_text == "You are a pirate."


def test_idle_connection_is_closed_with_4000_but_not_while_a_turn_streams():
    s = limited(idle_timeout_s=150)
    assert s.idle_deadline() == 150.0
    assert s.on_idle(100.0) == []
    s.on_client('{"type": "ping"}', now=100.0)  # any frame resets the timer
    assert s.on_idle(200.0) == []
    start(s)
    assert s.on_idle(250.0) == [] and s.idle_deadline() == 400.0  # the turn is activity
    s.on_client('{"type": "cancel"}', now=260.0)
    assert s.on_idle(400.0) == []
    out = s.on_idle(410.0)
    assert out == [CloseClient(4000, "idle timeout")]


def test_warm_persona_submits_a_prefill_only_job_and_answers_warmed():
    s = make()
    out = s.on_client('{"type": "warm_persona", "chat_prompt": "You are a pirate."}')
    [job] = submits(out)
    assert job.kind == "chat" and job.job.persona == "You are a pirate." and job.job.max_tokens == 0
    out = s.on_broker(frames.Finished(job.request_id, "stop", prompt_tokens=42))
    assert client_frames(out) == [{"type": "warmed", "target": "persona", "prompt_tokens": 42}]
    # The warmed persona is the session's persona from now on.
    assert s.persona_text == "You are a pirate."


def test_warm_history_carries_persona_and_history_and_failures_are_errors():
    s = make()
    out = s.on_client(json.dumps({"type": "warm_history", "session_id": "s9",
                                  "history_text": "User: hi\nAssistant: hello"}))
    [job] = submits(out)
    assert job.session_id == "s9" and job.job.history.startswith("User: hi")
    out = s.on_broker(frames.Failed(job.request_id, "queue_timeout", "busy"))
    [err] = client_frames(out)
    assert err["error_code"] == "queue_timeout" and err["target"] == "history"


def test_warm_in_a_tool_only_deployment_is_skipped():
    out = make("tool").on_client('{"type": "warm_persona", "chat_prompt": "x"}')
    assert client_frames(out)[0]["skipped"] is True and not submits(out)


def test_frame_over_the_size_limit_gets_an_error_then_close_1009():
    s = limited(max_message_bytes=100)
    start(s)
    out = s.on_client(json.dumps({"type": "ping", "pad": "é" * 60}))  # 120+ bytes, <100 chars
    assert cancels(out)
    assert client_frames(out)[-1]["error_code"] == "message_too_large"
    assert out[-1] == CloseClient(1009, "message too large")


def test_send_overflow_mid_turn_cancels_everywhere_ends_the_turn_with_one_error_and_closes():
    s = make()
    start(s, request_id="r-9")
    rid = ids(s)
    out = s.on_broker(frames.ToolResult(rid["tool"], "no", 0.1))
    [chat] = submits(out)
    out = s.on_send_overflow(2_000_000)
    [cancel] = cancels(out)
    assert cancel.request_ids == [chat.request_id]  # the tool request had ended
    [err] = client_frames(out)
    assert err["error_code"] == "client_too_slow" and err["request_id"] == "r-9"
    assert "2000000 bytes" in err["message"]
    assert out[-1] == CloseClient(1008, "client too slow")
    # Whatever the workers still send for the turn is dropped; the session is over.
    assert s.on_broker(frames.Delta(chat.request_id, "late", 1)) == []
    assert s.on_client('{"type": "ping"}') == []


def test_send_overflow_between_turns_closes_without_a_turn_to_end():
    s = make()
    out = s.on_send_overflow(5000)
    assert not cancels(out)
    [err] = client_frames(out)
    assert err["error_code"] == "client_too_slow" and "request_id" not in err
    assert out[-1] == CloseClient(1008, "client too slow")


def test_outgoing_frames_are_utf8_json_not_escaped():
    from wsfront.server import YAP
    from wsfront.yap_frames import Token
    wide = YAP.encode(Token(text="héllo 你好", request_id="r"))
    assert "你好".encode() in wide  # sent as is, not \\u-escaped
    assert json.loads(wide) == {"type": "token", "text": "héllo 你好", "request_id": "r"}


def test_a_refused_start_that_reuses_the_running_turns_id_does_not_look_like_its_end():
    s = make("chat")
    start(s, request_id="r-1")
    [error] = client_frames(start(s, request_id="r-1", sampling={"temperature": 9}))
    assert error["error_code"] == "invalid_sampling" and "request_id" not in error
    assert s.turn == "r-1"  # still running, and its own end is still to come
    [other] = client_frames(start(s, request_id="r-2", sampling={"temperature": 9}))
    assert other["request_id"] == "r-2"
