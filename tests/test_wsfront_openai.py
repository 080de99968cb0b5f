"""The OpenAI Chat Completions adapter, sans I/O: requests in, HTTP output and broker frames
out, with the broker's answers played by hand (the turn core under it is the real one)."""

from __future__ import annotations

import json

import msgspec
import pytest

from broker import frames
from wsfront import openai_chat as oac
from wsfront import openai_frames as oa
from wsfront import turns as core
from wsfront.config import FrontConfig
from wsfront.turns import ToBroker

MODEL = "builtin:smollm2"
TOOL = {"type": "function", "function": {"name": "take_screenshot", "description": "Look.",
                                         "parameters": {"type": "object", "properties": {}}}}


def make(deploy_mode: str = "chat", concurrent: bool = False, **config) -> oac.ChatCompletion:
    return oac.ChatCompletion(FrontConfig(api_key="k", deploy_mode=deploy_mode,
                                          concurrent_model_call=concurrent, **config),
                              "c1", [MODEL, "other"], created=1700000000)


def body(**fields) -> bytes:
    fields.setdefault("messages", [{"role": "user", "content": "hello"}])
    return json.dumps({"model": MODEL, **fields}).encode()


def submits(actions) -> list[frames.Submit]:
    return [a.frame for a in actions if type(a) is ToBroker and type(a.frame) is frames.Submit]


def cancels(actions) -> list[str]:
    return [rid for a in actions if type(a) is ToBroker and type(a.frame) is frames.Cancel
            for rid in a.frame.request_ids]


def respond(actions) -> oac.Respond:
    [r] = [a for a in actions if type(a) is oac.Respond]
    return r


def events(actions) -> list[dict | str]:
    """The server-sent events in the actions, decoded ('[DONE]' as is)."""
    out: list[dict | str] = []
    for a in actions:
        if type(a) is oac.StreamData and a.data:
            assert a.data.startswith(b"data: ") and a.data.endswith(b"\n\n")
            payload = a.data[6:-2].decode()
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def error_of(actions) -> tuple[int, dict]:
    r = respond(actions)
    return r.status, json.loads(r.body)["error"]


# ---------------------------------------------------------------- messages -> turn


def test_messages_map_onto_persona_history_and_utterance_as_on_ws():
    c = make()
    out = c.start(body(messages=[
        {"role": "system", "content": "You are brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Speak plainly."}]},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": [{"type": "text", "text": "what is "},
                                     {"type": "text", "text": "the time?"}]}],
        max_completion_tokens=20, temperature=0.3, seed=4))
    [submit] = submits(out)
    job = submit.job
    assert isinstance(job, frames.ChatJob)
    assert job.persona == "You are brief.\n\nSpeak plainly."
    assert job.history == "User: hi\nAssistant: Hello! How can I help?"
    assert job.utterance == "what is the time?"
    assert job.max_tokens == 20
    assert job.sampling.temperature == 0.3 and job.sampling.seed == 4


def test_one_persona_routes_to_one_session_and_a_key_of_the_clients_wins():
    a, b = make().start(body()), make().start(body())
    assert submits(a)[0].session_id == submits(b)[0].session_id
    keyed = make().start(body(prompt_cache_key="call-42"))
    assert submits(keyed)[0].session_id == "call-42"


def test_max_tokens_is_bounded_by_chat_max_out_and_max_completion_tokens_wins():
    [s] = submits(make(chat_max_out=50).start(body(max_tokens=4000)))
    assert s.job.max_tokens == 50
    [s] = submits(make().start(body(max_tokens=30, max_completion_tokens=7)))
    assert s.job.max_tokens == 7


def test_fields_the_server_does_not_act_on_are_accepted():
    out = make().start(body(user="u1", metadata={"a": "b"}, service_tier="auto",
                            parallel_tool_calls=False, logprobs=False, store=False,
                            response_format={"type": "text"}, n=1))
    assert len(submits(out)) == 1


def test_a_missing_model_is_the_first_served_one():
    c = make()
    c.start(json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode())
    assert c.model == MODEL


@pytest.mark.parametrize("fields,status,param,code", [
    ({"model": "gpt-9"}, 404, "model", "model_not_found"),
    ({"n": 2}, 400, "n", "invalid_request"),
    ({"logprobs": True}, 400, "logprobs", "invalid_request"),
    ({"temperature": 7}, 400, "temperature", "invalid_request"),
    ({"max_tokens": 0}, 400, "max_tokens", "invalid_request"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "invalid_request"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages", "invalid_request"),
    ({"messages": [{"role": "user", "content": 3}]}, 400, "messages[0].content",
     "invalid_request"),
    ({"messages": [{"content": "hi"}]}, 400, "messages[0].role", "invalid_request"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "messages[0].content[0]", "invalid_request"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role",
     "invalid_request"),
    ({"messages": [{"role": "user", "content": "  "}]}, 400, "messages[0].content",
     "invalid_request"),
    ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, 400,
     "tool_choice", "invalid_request"),
    ({"tool_choice": "required"}, 400, "tool_choice", "invalid_request"),
])
def test_bad_requests_are_openai_errors_naming_the_field(fields, status, param, code):
    c = make()
    out = c.start(body(**fields))
    assert not submits(out) and c.done
    got_status, error = error_of(out)
    assert (got_status, error["param"], error["code"]) == (status, param, code)
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert error["message"]


def test_invalid_json_is_a_400_without_a_param():
    status, error = error_of(make().start(b"{not json"))
    assert status == 400 and error["param"] is None and "JSON" in error["message"]


def test_with_no_model_known_yet_the_turn_goes_to_the_broker_as_on_ws():
    for served in (None, []):  # a front that just started; the only chat worker restarting
        c = oac.ChatCompletion(FrontConfig(api_key="k", deploy_mode="chat"), "c1", served, 0)
        assert len(submits(c.start(body(model="anything")))) == 1


# ---------------------------------------------------------------- streaming


def stream_turn(c: oac.ChatCompletion, **fields):
    out = c.start(body(stream=True, **fields))
    [submit] = submits(out)
    return submit.request_id, out


def test_stream_first_chunk_carries_the_role_and_the_first_text_then_finish_usage_done():
    c = make()
    rid, out = stream_turn(c, stream_options={"include_usage": True})
    assert events(out) == []  # nothing before the first text: no fake first byte
    assert not [a for a in out if type(a) is oac.StreamStart]
    first = c.on_broker(frames.Delta(rid, "Hel", 1))
    assert [type(a) for a in first][:2] == [oac.StreamStart, oac.StreamData]
    [chunk] = events(first)
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    [more] = events(c.on_broker(frames.Delta(rid, "lo \"you\"\n", 2)))
    assert more["choices"][0]["delta"] == {"content": "lo \"you\"\n"}
    assert more["id"] == chunk["id"] and more["model"] == MODEL
    end = c.on_broker(frames.Finished(rid, "length", 12, 3, cached_tokens=8))
    finish, usage, done = events(end)
    assert finish["choices"][0]["finish_reason"] == "length"
    assert finish["choices"][0]["delta"] == {}
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                              "prompt_tokens_details": {"cached_tokens": 8}}
    assert done == "[DONE]" and type(end[-1]) is oac.StreamEnd and c.done


def test_the_fast_text_chunk_is_the_chunk_struct_encoded():
    writer = oa.ChunkWriter("chatcmpl-x", 5, MODEL, include_usage=False)
    for text in ("plain", "quote \" and \\ back", "\u00e9\u4f60\n\t", ""):
        fast = json.loads(writer.text(text)[6:-2])
        slow = json.loads(oa.event(oa.ChunkOut("chatcmpl-x", 5, MODEL, [
            oa.ChunkChoice(oa.Delta(content=text))]))[6:-2])
        assert fast == slow


def test_without_include_usage_no_usage_chunk():
    c = make()
    rid, _ = stream_turn(c)
    c.on_broker(frames.Delta(rid, "a", 1))
    finish, done = events(c.on_broker(frames.Finished(rid, "stop", 3, 1)))
    assert finish["choices"][0]["finish_reason"] == "stop" and done == "[DONE]"


def test_an_empty_reply_still_streams_the_role_chunk_first():
    c = make()
    rid, _ = stream_turn(c)
    first, finish, done = events(c.on_broker(frames.Finished(rid, "stop", 3, 0)))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert finish["choices"][0]["finish_reason"] == "stop" and done == "[DONE]"


def test_a_failure_before_any_text_is_an_http_error_with_its_status():
    c = make()
    rid, _ = stream_turn(c)
    out = c.on_broker(frames.Failed(rid, "no_worker", "no chat worker"))
    status, error = error_of(out)
    assert status == 503 and error["code"] == "worker_unavailable"
    assert ("retry-after", "1") in respond(out).headers


def test_a_failure_mid_stream_is_an_error_event_then_done():
    c = make()
    rid, _ = stream_turn(c)
    c.on_broker(frames.Delta(rid, "partial", 1))
    out = c.on_broker(frames.Failed(rid, "worker_lost", "the worker died"))
    error, done = events(out)
    assert error["error"]["code"] == "worker_lost" and error["error"]["message"]
    assert done == "[DONE]" and type(out[-1]) is oac.StreamEnd and c.done


def test_a_client_that_goes_away_cancels_the_turn_on_the_workers():
    c = make()
    rid, _ = stream_turn(c)
    c.on_broker(frames.Delta(rid, "some", 1))
    out = c.on_disconnect()
    assert cancels(out) == [rid] and events(out) == [] and c.done
    assert [type(a.event) for a in out if type(a) is oac.Note] == [core.Cancelled]


# ---------------------------------------------------------------- non-streaming


def test_non_streaming_answers_one_chat_completion():
    c = make()
    out = c.start(body())
    [s] = submits(out)
    [note] = c.on_broker(frames.Delta(s.request_id, "Hi ", 1))  # nothing sent yet
    assert type(note) is oac.Note
    out = c.on_broker(frames.Finished(s.request_id, "stop", 9, 2, cached_tokens=4))
    r = respond(out)
    completion = json.loads(r.body)
    assert r.status == 200 and completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Hi ",
                                                   "tool_calls": None, "refusal": None}
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}
    assert completion["usage"]["total_tokens"] == 11


def test_the_reply_is_not_cleaned_for_speech_unless_asked():
    raw = "**Bold** text"
    for fields, expect_clean in (({}, False), ({"sanitize_output": True}, True)):
        c = make()
        [s] = submits(c.start(body(**fields)))
        c.on_broker(frames.Delta(s.request_id, raw, 3))
        text = json.loads(respond(c.on_broker(frames.Finished(s.request_id, "stop", 3, 3))).body)[
            "choices"][0]["message"]["content"]
        assert (text != raw) is expect_clean
        if expect_clean:
            assert "**" not in text


# ---------------------------------------------------------------- stop sequences


def test_a_stop_sequence_ends_the_reply_before_it_and_cancels_the_chat_request():
    c = make()
    rid, _ = stream_turn(c, stop=["END"], stream_options={"include_usage": True})
    texts = []
    for piece in ("Once upon ", "a time E", "NDand more"):
        out = c.on_broker(frames.Delta(rid, piece, 1))
        texts += [e["choices"][0]["delta"].get("content", "") for e in events(out)]
    assert "".join(texts) == "Once upon a time "
    assert cancels(out) == [rid]
    assert c.on_broker(frames.Delta(rid, "late", 1)) == []  # after the stop: dropped
    finish, usage, done = events(c.on_broker(frames.Finished(rid, "cancelled", 11, 4)))
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["usage"]["prompt_tokens"] == 11 and usage["usage"]["completion_tokens"] == 4
    assert done == "[DONE]"


def test_a_partial_stop_sequence_that_never_completes_is_reply_text():
    c = make()
    [s] = submits(c.start(body(stop="\n\n")))
    c.on_broker(frames.Delta(s.request_id, "line\n", 1))
    r = respond(c.on_broker(frames.Finished(s.request_id, "stop", 3, 1)))
    assert json.loads(r.body)["choices"][0]["message"]["content"] == "line\n"


# ---------------------------------------------------------------- the screenshot tool


def tool_turn(c: oac.ChatCompletion, **fields):
    out = c.start(body(tools=[TOOL, {"type": "function", "function": {"name": "get_weather"}}],
                       **fields))
    return out


@pytest.mark.parametrize("stream", [False, True])
def test_a_yes_from_the_tool_model_is_a_tool_call_and_no_chat_reply(stream):
    c = make("both")
    out = tool_turn(c, stream=stream, stream_options={"include_usage": True})
    [tool] = submits(out)
    assert isinstance(tool.job, frames.ToolJob) and tool.job.utterance == "hello"
    out = c.on_broker(frames.ToolResult(tool.request_id, "screenshot", 0.97, True))
    assert not submits(out)  # no chat request: the call is the answer
    if stream:
        first, finish, usage, done = events(out)
        [call] = first["choices"][0]["delta"]["tool_calls"]
        assert first["choices"][0]["delta"]["role"] == "assistant"
        assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
        assert call["function"] == {"name": "take_screenshot", "arguments": "{}"}
        assert finish["choices"][0]["finish_reason"] == "tool_calls"
        assert usage["choices"] == [] and done == "[DONE]"
    else:
        choice = json.loads(respond(out).body)["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
        assert choice["message"]["tool_calls"][0]["function"]["name"] == "take_screenshot"


def test_a_no_streams_the_chat_reply():
    c = make("both")
    [tool] = submits(tool_turn(c, stream=True))
    out = c.on_broker(frames.ToolResult(tool.request_id, "other", 0.1, False))
    [chat] = submits(out)
    assert isinstance(chat.job, frames.ChatJob) and events(out) == []
    [chunk] = events(c.on_broker(frames.Delta(chat.request_id, "Sure", 1)))
    assert chunk["choices"][0]["delta"] == {"role": "assistant", "content": "Sure"}


def test_concurrent_mode_cancels_the_chat_request_a_yes_makes_needless():
    c = make("both", concurrent=True)
    out = tool_turn(c)
    tool, chat = submits(out)
    out = c.on_broker(frames.ToolResult(tool.request_id, "screenshot", 0.9, True))
    assert cancels(out) == [chat.request_id]
    assert json.loads(respond(out).body)["choices"][0]["finish_reason"] == "tool_calls"


def test_without_the_screenshot_tool_or_with_tool_choice_none_the_tool_model_is_skipped():
    for fields in ({}, {"tools": [TOOL], "tool_choice": "none"},
                   {"tools": [{"type": "function", "function": {"name": "get_weather"}}]}):
        [s] = submits(make("both").start(body(**fields)))
        assert isinstance(s.job, frames.ChatJob)


def test_tool_choice_naming_the_screenshot_tool_calls_it_without_asking_a_model():
    c = make("both")
    out = c.start(body(tools=[TOOL], tool_choice={"type": "function",
                                                   "function": {"name": "take_screenshot"}}))
    assert not submits(out)
    assert json.loads(respond(out).body)["choices"][0]["finish_reason"] == "tool_calls"


def test_after_the_tool_ran_its_result_is_context_and_the_tool_model_is_not_asked_again():
    c = make("both")
    out = c.start(body(tools=[TOOL], messages=[
        {"role": "user", "content": "what's on my screen?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "take_screenshot", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "A spreadsheet of sales."}]))
    [s] = submits(out)
    assert isinstance(s.job, frames.ChatJob)
    assert s.job.utterance == "what's on my screen?"
    assert s.job.runtime_text == "Result of take_screenshot: A spreadsheet of sales."


def test_error_bodies_are_openai_error_objects():
    decoded = msgspec.json.decode(oac.error_body("rate_limited", "slow down"),
                                  type=oa.ErrorResponse)
    assert decoded.error.type == "rate_limit_error" and decoded.error.code == "rate_limited"
