"""The OpenAI Responses WebSocket adapter, sans I/O: client events in, events and broker frames
out, with the broker's answers played by hand (the turn core under it is the real one). Every
event the session sends is also validated against the openai SDK's own pydantic types."""

from __future__ import annotations

import json
import typing

import pytest
from openai.types.responses import ResponseErrorEvent, ResponseStreamEvent
from openai.types.responses.responses_server_event import ResponsesServerEvent

from broker import frames
from wsfront import openai_responses as oar
from wsfront import turns as core
from wsfront.config import FrontConfig
from wsfront.guards import Refusal
from wsfront.responses_frames import encode_server
from wsfront.turns import ToBroker
from wsfront.yap import CloseClient, SendClient

MODEL = "builtin:smollm2"
TOOL = {"type": "function", "name": "take_screenshot", "description": "Look at the screen.",
        "parameters": {"type": "object", "properties": {}}, "strict": None}


def _by_type(union: object) -> dict[str, type]:
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(m.model_fields["type"].annotation)[0]: m for m in members}


SDK_STREAM = _by_type(ResponseStreamEvent)  # the HTTP stream's event types
SDK_WS = _by_type(ResponsesServerEvent)  # the WebSocket connection's


def make(deploy_mode: str = "chat", concurrent: bool = False, served: list[str] | None = None,
         **config) -> oar.ResponsesSession:
    return oar.ResponsesSession(FrontConfig(api_key="k", deploy_mode=deploy_mode,
                                            concurrent_model_call=concurrent, **config),
                                "c1", [MODEL, "other"] if served is None else served, now=0.0)


def create(s: oar.ResponsesSession, now: float = 1.0, **fields) -> list:
    fields.setdefault("input", "hello")
    return s.on_client(json.dumps({"type": "response.create", "model": MODEL, **fields}),
                       now, 1700000000)


def cancel(s: oar.ResponsesSession, response_id: str | None = None, now: float = 1.0) -> list:
    msg = {"type": "response.cancel"} | ({"response_id": response_id} if response_id else {})
    return s.on_client(json.dumps(msg), now, 1700000000)


def events(actions) -> list[dict]:
    """The events sent, decoded, each checked against the SDK's types as a strict client
    (LiveKit) reads them."""
    out = [json.loads(encode_server(a.frame)) for a in actions if type(a) is SendClient]
    for ev in out:
        SDK_WS[ev["type"]].model_validate(ev)
        if ev["type"] == "error":
            ResponseErrorEvent.model_validate({**ev["error"], **ev})  # as LiveKit reads it
        else:
            SDK_STREAM[ev["type"]].model_validate(ev)
    return out


def types(actions) -> list[str]:
    return [e["type"] for e in events(actions)]


def submits(actions) -> list[frames.Submit]:
    return [a.frame for a in actions if type(a) is ToBroker and type(a.frame) is frames.Submit]


def cancelled_ids(actions) -> list[str]:
    return [rid for a in actions if type(a) is ToBroker and type(a.frame) is frames.Cancel
            for rid in a.frame.request_ids]


def chat_of(actions) -> frames.Submit:
    [submit] = [s for s in submits(actions) if s.kind == "chat"]
    return submit


def reply(s: oar.ResponsesSession, rid: str, *texts: str, prompt: int = 9, cached: int = 4,
          reason: str = "stop") -> list:
    out: list = []
    for text in texts:
        out += s.on_broker(frames.Delta(rid, text, 1))
    return out + s.on_broker(frames.Finished(rid, reason, prompt, len(texts), cached_tokens=cached))


STREAM = ["response.output_item.added", "response.content_part.added"]
DONE = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


# ---------------------------------------------------------------- one response


def test_a_response_streams_its_events_in_order_and_completes_with_usage():
    s = make()
    out = create(s)
    assert types(out) == ["response.created", "response.in_progress"]
    created = events(out)[0]["response"]
    assert created["id"].startswith("resp_") and created["object"] == "response"
    assert created["status"] == "in_progress" and created["model"] == MODEL
    assert created["created_at"] == 1700000000 and created["output"] == []
    chat = chat_of(out)
    out = reply(s, chat.request_id, "Hi", " there")
    got = events(out)
    assert [e["type"] for e in got] == [*STREAM, "response.output_text.delta",
                                        "response.output_text.delta", *DONE,
                                        "response.completed"]
    item_id = got[0]["item"]["id"]
    assert item_id.startswith("msg_") and got[0]["item"]["status"] == "in_progress"
    assert all(e["item_id"] == item_id and e["output_index"] == 0 and e["content_index"] == 0
               for e in got[1:6])
    assert [e["delta"] for e in got[2:4]] == ["Hi", " there"]
    assert got[4]["text"] == "Hi there" and got[5]["part"]["text"] == "Hi there"
    assert got[6]["item"] == {"type": "message", "id": item_id, "status": "completed",
                              "role": "assistant", "content": [
                                  {"type": "output_text", "text": "Hi there",
                                   "annotations": [], "logprobs": []}]}
    done = got[-1]["response"]
    assert done["id"] == created["id"] and done["status"] == "completed"
    assert done["output"] == [got[6]["item"]]
    assert done["usage"] == {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11,
                             "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                             "output_tokens_details": {"reasoning_tokens": 0}}
    assert s.running is None and not s.closed


def test_sequence_numbers_increase_across_the_connection():
    s = make()
    out = create(s)
    out += reply(s, chat_of(out).request_id, "a")
    second = create(s, input="again")
    out += second + reply(s, chat_of(second).request_id, "b")
    seqs = [e["sequence_number"] for e in events(out)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_each_event_carries_the_core_event_it_renders_for_the_metrics():
    s = make()
    out = create(s)
    out += reply(s, chat_of(out).request_id, "Hi")
    kinds = {json.loads(encode_server(a.frame))["type"]: type(a.event)
             for a in out if type(a) is SendClient and a.event is not None}
    assert kinds == {"response.created": core.Accepted, "response.output_text.delta":
                     core.TextDelta, "response.completed": core.Completed}


def test_input_maps_onto_persona_history_and_utterance():
    s = make()
    out = create(s, instructions="You are brief.", input=[
        {"role": "developer", "content": "Speak plainly."},  # Pipecat's form: no "type"
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Hello! How can I help?",
                      "annotations": []}]},
        {"role": "user", "content": [{"type": "input_text", "text": "what is "},
                                     {"type": "input_text", "text": "the time?"}]}],
        max_output_tokens=20, temperature=0.3, top_p=0.9, seed=4, store=False,
        metadata={"call": "42"}, parallel_tool_calls=False, reasoning={"effort": "low"},
        include=[], truncation="auto", service_tier="auto")
    job = chat_of(out).job
    assert isinstance(job, frames.ChatJob)
    assert job.persona == "You are brief.\n\nSpeak plainly."
    assert job.history == "User: hi\nAssistant: Hello! How can I help?"
    assert job.utterance == "what is the time?"
    assert job.max_tokens == 20 and job.runtime_text == ""
    assert job.sampling.temperature == 0.3 and job.sampling.top_p == 0.9
    assert job.sampling.seed == 4
    created = events(out)[0]["response"]
    assert created["instructions"] == "You are brief." and created["metadata"] == {"call": "42"}
    assert created["max_output_tokens"] == 20 and created["temperature"] == 0.3


def test_a_connection_routes_its_turns_to_one_session_and_a_cache_key_wins():
    s = make()
    first = create(s)
    reply(s, chat_of(first).request_id, "x")
    second = create(s, input="more")
    assert chat_of(first).session_id == chat_of(second).session_id
    reply(s, chat_of(second).request_id, "y")
    assert chat_of(create(s, prompt_cache_key="call-42")).session_id == "call-42"


def test_a_missing_model_is_the_first_served_one_and_none_known_passes_any():
    s = make()
    s.served = [MODEL]
    out = s.on_client(json.dumps({"type": "response.create", "input": "hi"}), 1.0, 0)
    assert events(out)[0]["response"]["model"] == MODEL
    s = make(served=[])
    assert events(create(s, model="anything"))[0]["response"]["model"] == "anything"


def test_max_output_tokens_is_capped_and_reaching_it_ends_incomplete():
    s = make(chat_max_out=50)
    out = create(s, max_output_tokens=4000)
    chat = chat_of(out)
    assert chat.job.max_tokens == 50
    got = events(reply(s, chat.request_id, "a", "b", reason="length"))
    assert [e["type"] for e in got][-4:] == [*DONE, "response.incomplete"]
    assert got[-2]["item"]["status"] == "incomplete"
    response = got[-1]["response"]
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["usage"]["output_tokens"] == 2
    assert response["output"][0]["content"][0]["text"] == "ab"


def test_the_cleaner_for_speech_is_off_by_default_and_can_be_asked_for():
    s = make()
    chat = chat_of(create(s))
    got = events(reply(s, chat.request_id, "**Bold** move: 50%"))
    assert got[-1]["response"]["output"][0]["content"][0]["text"] == "**Bold** move: 50%"
    chat = chat_of(create(s, sanitize_output=True))
    got = events(reply(s, chat.request_id, "**Bold** move."))
    assert "**" not in got[-1]["response"]["output"][0]["content"][0]["text"]


def test_an_empty_reply_still_has_its_message_item():
    s = make()
    chat = chat_of(create(s))
    got = events(reply(s, chat.request_id))
    assert [e["type"] for e in got] == [*STREAM, *DONE, "response.completed"]
    assert got[-1]["response"]["output"][0]["content"][0]["text"] == ""


# ---------------------------------------------------------------- cancel, barge-in, disconnect


def test_cancel_aborts_the_chat_request_and_ends_incomplete_with_status_cancelled():
    s = make()
    out = create(s)
    rid = events(out)[0]["response"]["id"]
    chat = chat_of(out)
    streamed = s.on_broker(frames.Delta(chat.request_id, "Once upon", 2))
    out = cancel(s, rid)
    assert cancelled_ids(out) == [chat.request_id]
    got = events(out)
    # Pipecat drains until completed, failed or incomplete before its next create.
    assert [e["type"] for e in got] == [*DONE, "response.incomplete"]
    response = got[-1]["response"]
    assert response["id"] == rid and response["status"] == "cancelled"
    assert response["incomplete_details"] is None and response["usage"]["output_tokens"] == 2
    assert response["output"][0]["status"] == "incomplete"
    assert [type(a.event) for a in out if type(a) is SendClient][-1] is core.Cancelled
    assert events(streamed)[-1]["delta"] == "Once upon"
    assert s.on_broker(frames.Finished(chat.request_id, "cancelled", 9, 2)) == []  # late


def test_cancel_before_any_text_ends_with_no_output_item():
    s = make()
    out = create(s)
    got = events(cancel(s))  # no response_id: the running one
    assert [e["type"] for e in got] == ["response.incomplete"]
    assert got[0]["response"]["output"] == [] and got[0]["response"]["status"] == "cancelled"
    assert s.running is None and chat_of(out)


def test_a_late_cancel_or_one_for_another_response_says_nothing():
    """Pipecat cancels what it was streaming; the response may have ended already, and any
    event then would be read as the next response's."""
    s = make()
    out = create(s)
    rid = events(out)[0]["response"]["id"]
    reply(s, chat_of(out).request_id, "done")
    assert cancel(s, rid) == []
    out = create(s, input="next")
    assert cancel(s, rid) == [] and s.running is not None


def test_barge_in_ends_the_running_response_before_the_new_one_is_created():
    s = make()
    first = create(s)
    old = chat_of(first)
    s.on_broker(frames.Delta(old.request_id, "Let me", 1))
    out = create(s, input="stop, something else")
    assert cancelled_ids(out) == [old.request_id]
    got = events(out)
    assert [e["type"] for e in got] == [*DONE, "response.incomplete", "response.created",
                                        "response.in_progress"]
    assert got[3]["response"]["status"] == "cancelled"
    assert got[3]["response"]["id"] != got[4]["response"]["id"]
    new = chat_of(out)
    assert new.job.utterance == "stop, something else"
    assert s.on_broker(frames.Delta(old.request_id, " think", 1)) == []  # the old one's, late
    assert types(reply(s, new.request_id, "Sure"))[-1] == "response.completed"


def test_a_refused_create_during_a_response_leaves_it_running():
    s = make()
    out = create(s)
    chat = chat_of(out)
    refused = create(s, model="gpt-9")
    assert types(refused) == ["error"] and not cancelled_ids(refused)
    assert types(reply(s, chat.request_id, "ok"))[-1] == "response.completed"


def test_disconnect_cancels_everything_and_says_nothing():
    s = make(deploy_mode="both", concurrent=True)
    out = create(s, tools=[TOOL])
    live = [x.request_id for x in submits(out)]
    assert len(live) == 2
    out = s.on_disconnect()
    assert sorted(cancelled_ids(out)) == sorted(live)
    assert not [a for a in out if type(a) is SendClient] and s.closed
    assert create(s) == []


# ---------------------------------------------------------------- chaining


def test_a_chained_create_continues_the_conversation_with_the_responses_own_output():
    s = make()
    out = create(s, instructions="Be kind.", input="hello")
    first = events(out)[0]["response"]["id"]
    reply(s, chat_of(out).request_id, "Hi", " there!")
    out = create(s, previous_response_id=first,
                 input=[{"role": "user", "content": "how are you?"}])
    job = chat_of(out).job
    assert job.persona == "Be kind."  # the chain's instructions, as none came with it
    assert job.history == "User: hello\nAssistant: Hi there!"
    assert job.utterance == "how are you?"
    second = events(out)[0]["response"]
    assert second["previous_response_id"] == first
    reply(s, chat_of(out).request_id, "Well.")
    out = create(s, previous_response_id=second["id"], instructions="Be terse.", input="bye")
    job = chat_of(out).job
    assert job.persona == "Be terse."
    assert job.history == ("User: hello\nAssistant: Hi there!\nUser: how are you?\n"
                           "Assistant: Well.")


def test_an_unknown_previous_response_is_an_error_and_the_socket_stays_usable():
    s = make()
    out = create(s, previous_response_id="resp_nope", input="hi")
    [error] = events(out)
    assert error["error"]["code"] == "previous_response_not_found"  # Pipecat then resends all
    assert error["error"]["param"] == "previous_response_id" and error["status"] == 400
    assert error["error"]["type"] == "invalid_request_error"
    assert not submits(out) and not s.closed
    assert types(create(s))[0] == "response.created"


def test_a_failed_response_cannot_be_chained_but_a_cancelled_one_can():
    s = make()
    out = create(s)
    failed = events(out)[0]["response"]["id"]
    s.on_broker(frames.Failed(chat_of(out).request_id, "worker_lost", "gone"))
    assert events(create(s, previous_response_id=failed))[0]["type"] == "error"
    out = create(s, input="tell me a story")
    cut = events(out)[0]["response"]["id"]
    s.on_broker(frames.Delta(chat_of(out).request_id, "Once", 1))
    cancel(s)
    job = chat_of(create(s, previous_response_id=cut, input="shorter")).job
    assert job.history == "User: tell me a story\nAssistant: Once"


def test_only_the_newest_responses_can_be_chained():
    s = make()
    ids = []
    for i in range(oar.MAX_CHAINS + 1):
        out = create(s, input=f"turn {i}")
        ids.append(events(out)[0]["response"]["id"])
        reply(s, chat_of(out).request_id, "ok")
    assert events(create(s, previous_response_id=ids[0]))[0]["type"] == "error"
    out = create(s, previous_response_id=ids[1], input="again")
    assert chat_of(out).job.history == "User: turn 1\nAssistant: ok"


# ---------------------------------------------------------------- the screenshot tool


def test_a_declared_screenshot_tool_runs_the_tool_model_and_yes_is_a_function_call():
    s = make(deploy_mode="both")
    out = create(s, input="what's on my screen?", tools=[TOOL])
    [tool] = submits(out)
    assert tool.kind == "tool" and tool.job.utterance == "what's on my screen?"
    assert events(out)[0]["response"]["tools"] == [
        {"type": "function", "name": "take_screenshot", "parameters": TOOL["parameters"],
         "strict": None, "description": "Look at the screen."}]
    out = s.on_broker(frames.ToolResult(tool.request_id, "yes", 0.93, yes=True))
    assert not submits(out)
    got = events(out)
    assert [e["type"] for e in got] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    call = got[3]["item"]
    assert call["type"] == "function_call" and call["name"] == "take_screenshot"
    assert call["arguments"] == "{}" and call["status"] == "completed"
    assert call["id"].startswith("fc_") and call["call_id"].startswith("call_")
    assert got[0]["item"]["status"] == "in_progress" and got[2]["arguments"] == "{}"
    assert got[-1]["response"]["output"] == [call]
    assert type([a for a in out if type(a) is SendClient][0].event) is core.ToolDecided


def test_a_no_from_the_tool_model_streams_the_chat_reply():
    s = make(deploy_mode="both")
    [tool] = submits(create(s, tools=[TOOL]))
    out = s.on_broker(frames.ToolResult(tool.request_id, "no", 0.02))
    chat = chat_of(out)
    assert not [a for a in out if type(a) is SendClient]
    assert types(reply(s, chat.request_id, "Hello!"))[-1] == "response.completed"


def test_a_yes_in_concurrent_mode_cancels_the_chat_request_already_running():
    s = make(deploy_mode="both", concurrent=True)
    out = create(s, tools=[TOOL])
    chat = chat_of(out)
    [tool] = [x for x in submits(out) if x.kind == "tool"]
    s.on_broker(frames.Delta(chat.request_id, "Sure", 1))  # held for the decision
    out = s.on_broker(frames.ToolResult(tool.request_id, "yes", 0.9, yes=True))
    assert cancelled_ids(out) == [chat.request_id]
    assert "response.output_text.delta" not in types(out)


def test_without_the_tool_declared_the_tool_model_is_not_asked():
    s = make(deploy_mode="both")
    assert [x.kind for x in submits(create(s))] == ["chat"]
    other = {"type": "function", "name": "get_weather", "parameters": {}}
    assert [x.kind for x in submits(create(s, tools=[other]))] == ["chat"]
    s = make(deploy_mode="both")
    assert [x.kind for x in submits(create(s, tools=[TOOL], tool_choice="none"))] == ["chat"]


def test_the_client_ran_the_tool_its_output_is_runtime_context_and_no_tool_model_runs():
    """Pipecat's flow: the call, then a chained create carrying only the tool's output."""
    s = make(deploy_mode="both")
    out = create(s, instructions="Help.", input="what's on my screen?", tools=[TOOL])
    first = events(out)[0]["response"]["id"]
    call = events(s.on_broker(frames.ToolResult(submits(out)[0].request_id, "yes", 0.9,
                                                yes=True)))[3]["item"]
    out = create(s, previous_response_id=first, tools=[TOOL], input=[
        {"type": "function_call_output", "call_id": call["call_id"],
         "output": "a cat video, paused"}])
    [submit] = submits(out)
    assert submit.kind == "chat"
    job = submit.job
    assert job.utterance == "what's on my screen?" and job.persona == "Help."
    assert job.runtime_text == "Result of take_screenshot: a cat video, paused"
    assert job.history == ""
    assert types(reply(s, submit.request_id, "A paused cat video."))[-1] == "response.completed"


def test_a_full_context_with_the_call_echoed_reads_the_same():
    s = make(deploy_mode="both")
    out = create(s, tools=[TOOL], input=[
        {"role": "user", "content": "look at this"},
        {"type": "function_call", "call_id": "call_1", "name": "take_screenshot",
         "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": [
            {"type": "input_text", "text": "a spreadsheet"}]}])
    [submit] = submits(out)
    assert submit.kind == "chat"
    assert submit.job.runtime_text == "Result of take_screenshot: a spreadsheet"


def test_tool_choice_required_or_named_answers_with_the_call_outright():
    for choice in ("required", {"type": "function", "name": "take_screenshot"}):
        s = make(deploy_mode="both")
        out = create(s, tools=[TOOL], tool_choice=choice)
        assert not submits(out)
        got = events(out)
        assert got[-1]["type"] == "response.completed"
        assert got[-1]["response"]["output"][0]["name"] == "take_screenshot"
        assert s.running is None


# ---------------------------------------------------------------- failures and bad messages


def test_a_worker_failure_ends_the_response_with_response_failed():
    s = make()
    out = create(s)
    chat = chat_of(out)
    s.on_broker(frames.Delta(chat.request_id, "Hal", 1))
    out = s.on_broker(frames.Failed(chat.request_id, "worker_lost", "the worker went away"))
    [failed] = events(out)
    assert failed["type"] == "response.failed" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error"  # the SDK's closed set
    assert "worker_lost" in failed["response"]["error"]["message"]
    assert failed["response"]["output"][0]["status"] == "incomplete"
    assert type(out[-1].event) is core.TurnFailed and out[-1].event.code == "worker_lost"
    assert s.running is None


def test_a_prompt_the_worker_refuses_fails_as_invalid_prompt():
    s = make()
    chat = chat_of(create(s))
    out = s.on_broker(frames.Finished(chat.request_id, "error", code="chat_prompt_too_long",
                                      message="the prompt is too long"))
    assert events(out)[0]["response"]["error"]["code"] == "invalid_prompt"


@pytest.mark.parametrize("raw,code,param", [
    ("not json", "invalid_json", None),
    ("[1, 2]", "invalid_request", None),
    ('{"input": "hi"}', "invalid_request", "type"),
    ('{"type": "response.steer", "input": "hi"}', "unknown_event_type", "type"),
    ('{"type": "session.update"}', "unknown_event_type", "type"),
    ('{"type": "response.create", "input": 5}', "invalid_request", "input"),
    ('{"type": "response.create", "input": "hi", "max_output_tokens": "many"}',
     "invalid_request", "max_output_tokens"),
    ('{"type": "response.create", "input": [{"role": "user", "content": 3}]}',
     "invalid_request", "input[0].content"),
    ('{"type": "response.create", "input": "hi", "tools": [{"name": "x"}]}',
     "invalid_request", "tools[0].type"),
    ('{"type": "response.cancel", "response_id": 7}', "invalid_request", "response_id"),
])
def test_a_malformed_event_gets_an_error_and_the_socket_stays_open(raw, code, param):
    s = make()
    out = s.on_client(raw, 1.0, 0)
    [error] = events(out)
    assert (error["error"]["code"], error["error"]["param"]) == (code, param)
    assert error["status"] == 400 and not s.closed
    assert not [a for a in out if type(a) is CloseClient]
    assert types(create(s))[0] == "response.created"


@pytest.mark.parametrize("fields,code,param", [
    ({"model": "gpt-9"}, "model_not_found", "model"),
    ({"temperature": 7}, "invalid_request", "temperature"),
    ({"top_p": 0}, "invalid_request", "top_p"),
    ({"max_output_tokens": 0}, "invalid_request", "max_output_tokens"),
    ({"input": [{"role": "assistant", "content": "hi"}]}, "invalid_request", "input"),
    ({"input": "   "}, "invalid_request", "input"),
    ({"input": [{"role": "wizard", "content": "hi"}]}, "invalid_request", "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "invalid_request", "input[0].content[0]"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "invalid_request", "input[0].type"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "invalid_request",
     "input[0].call_id"),
    ({"background": True}, "invalid_request", "background"),
    ({"stream_id": "lane-1"}, "invalid_request", "stream_id"),
    ({"conversation": "conv_1"}, "invalid_request", "conversation"),
    ({"text": {"format": {"type": "json_schema"}}}, "invalid_request", "text.format"),
    ({"tool_choice": {"type": "function", "name": "get_weather"}}, "invalid_request",
     "tool_choice"),
    ({"tool_choice": "required"}, "invalid_request", "tool_choice"),
])
def test_a_create_the_server_cannot_serve_is_an_error_naming_the_field(fields, code, param):
    s = make(deploy_mode="both")
    out = create(s, **fields)
    [error] = events(out)
    assert (error["error"]["code"], error["error"]["param"]) == (code, param)
    assert not submits(out) and s.running is None and not s.closed
    assert type(out[0].event) is Refusal


def test_a_message_over_the_size_limit_ends_the_response_and_closes_1009():
    s = make(max_message_bytes=200)
    out = create(s)
    chat = chat_of(out)
    out = s.on_client("x" * 300, 1.0, 0)
    assert cancelled_ids(out) == [chat.request_id]
    assert types(out) == ["response.incomplete", "error"]
    assert events(out)[1]["error"]["code"] == "message_too_large"
    assert out[-1] == CloseClient(1009, "message too large") and s.closed


def test_the_message_rate_limit_answers_an_error_and_recovers():
    s = make(max_messages_per_window=2, message_window_s=10.0)
    create(s, now=1.0)
    create(s, now=1.0)
    [error] = events(create(s, now=2.0))
    assert error["error"]["code"] == "rate_limited" and error["status"] == 429
    assert types(create(s, now=12.0))[0] == "response.incomplete"  # a barge-in: served again


def test_an_idle_connection_is_closed_but_not_while_a_response_streams():
    s = make(idle_timeout_s=10.0)
    chat = chat_of(create(s, now=1.0))
    assert s.idle_deadline() == 11.0
    assert s.on_idle(12.0) == []  # a response runs: that is activity
    reply(s, chat.request_id, "ok")
    assert s.on_idle(20.0) == []
    out = s.on_idle(22.5)
    assert out[-1] == CloseClient(4000, "idle timeout") and s.closed
    assert s.idle_deadline() is None


def test_a_client_that_stops_reading_fails_its_response_and_is_closed_1008():
    s = make()
    chat = chat_of(create(s))
    out = s.on_send_overflow(5 << 20)
    assert cancelled_ids(out) == [chat.request_id]
    assert types(out) == ["response.failed"]
    assert out[-1] == CloseClient(1008, "client too slow") and s.closed


# ---------------------------------------------------------------- generate: false


def test_generate_false_primes_the_prefix_cache_and_can_be_chained():
    s = make()
    out = create(s, generate=False, instructions="You are Ada.", input=[
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}])
    [warm] = submits(out)
    assert warm.job.persona == "You are Ada." and warm.job.history == "User: hi\nAssistant: Hello."
    assert warm.job.utterance == "" and warm.job.max_tokens == 0
    rid = events(out)[0]["response"]["id"]
    assert [a.event for a in out if type(a) is SendClient] == [None, None]  # not a turn
    got = events(s.on_broker(frames.Finished(warm.request_id, "stop", 40, 0)))
    assert [e["type"] for e in got] == ["response.completed"]
    assert got[0]["response"]["output"] == [] and got[0]["response"]["usage"]["input_tokens"] == 40
    job = chat_of(create(s, previous_response_id=rid, input="what's up?")).job
    assert job.persona == "You are Ada." and job.history == "User: hi\nAssistant: Hello."


def test_a_create_during_a_warm_up_cancels_it_and_a_failed_warm_up_is_response_failed():
    s = make()
    [warm] = submits(create(s, generate=False, instructions="You are Ada."))
    out = create(s, input="hi")
    assert cancelled_ids(out) == [warm.request_id]
    assert types(out)[:3] == ["response.incomplete", "response.created", "response.in_progress"]
    assert s.on_broker(frames.Finished(warm.request_id, "stop", 40, 0)) == []  # late
    reply(s, chat_of(out).request_id, "ok")
    [warm] = submits(create(s, generate=False))
    out = s.on_broker(frames.Failed(warm.request_id, "no_worker", "no chat worker"))
    [failed] = events(out)
    assert failed["type"] == "response.failed" and type(out[0].event) is Refusal
