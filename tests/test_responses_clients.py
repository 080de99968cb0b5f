"""Real OpenAI Responses clients against a real stack's ``/v1/responses`` WebSocket: the
`openai` SDK's ``responses.connect()`` (async, and sync once) and Pipecat's
``OpenAIResponsesLLMService``. Event order, token limits, chaining, errors that keep the socket
open, a cancel and a barge-in that stop the engine, and the screenshot tool as a function call.
The tiny chat model never ends a reply on its own, so every text reply ends at its token
limit (``response.incomplete``); only a function call ends ``response.completed``."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.exceptions import InvalidStatus

from tests import pipecat_harness
from tests.stack import API_KEY, Stack
from tests.test_openai_clients import (
    assert_the_engine_stops, metrics, pipecat_screenshot_tool, wait_for_the_turn_on_the_worker,
)

import openai  # noqa: E402  (the test extra installs it, with pipecat-ai)

pytestmark = pytest.mark.integration

MAX_OUT = 1500  # CHAT_MAX_OUT: ~3.5 s of tiny-model noise, long enough to interrupt
SCREENSHOT_TOOL = {"type": "function", "name": "take_screenshot",
                   "description": "Look at the user's screen.",
                   "parameters": {"type": "object", "properties": {}}}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")
CANCELLED = 'textserve_turns_ended_total{outcome="cancelled",protocol="openai_responses"}'
STARTED = 'textserve_turns_total{deploy_mode="both",protocol="openai_responses"}'


@pytest.fixture(scope="module")
def stack():
    s = Stack(env={"CHAT_MAX_OUT": str(MAX_OUT)})
    s.start()
    yield s
    s.stop()


def base_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.port}/v1"


@pytest.fixture(scope="module")
def model(stack) -> str:
    with openai.OpenAI(base_url=base_url(stack), api_key=API_KEY, max_retries=0) as c:
        return c.models.list().data[0].id


def async_client(stack: Stack, api_key: str = API_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url(stack), api_key=api_key, max_retries=0)


async def until_end(conn, timeout: float = 20.0) -> list:
    """Events up to the next terminal event or ``error``, that one included."""
    got = []
    while True:
        event = await asyncio.wait_for(conn.recv(), timeout)
        got.append(event)
        if event.type in TERMINAL or event.type == "error":
            return got


async def until_type(conn, kind: str, timeout: float = 20.0) -> list:
    got = []
    while not got or got[-1].type != kind:
        got.append(await asyncio.wait_for(conn.recv(), timeout))
    return got


def session(stack: Stack, drive):
    """``drive(conn)`` on one async SDK connection to the stack."""
    async def main():
        async with async_client(stack) as client, client.responses.connect() as conn:
            return await drive(conn)
    return asyncio.run(main())


def types(events) -> list[str]:
    return [e.type for e in events]


def text_of(events) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


def assert_one_text_response(events, status: str = "incomplete"):
    """One response's events in the stream's order: created, in_progress, the message item
    opened, its text deltas, closed; the terminal event last, with usage. Its response."""
    kinds = types(events)
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"], kinds
    deltas = [k for k in kinds if k == "response.output_text.delta"]
    assert deltas and kinds[4:4 + len(deltas)] == deltas, kinds
    assert kinds[4 + len(deltas):] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        f"response.{status}" if status != "cancelled" else "response.incomplete"], kinds
    seqs = [e.sequence_number for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    created, final = events[0].response, events[-1].response
    assert created.status == "in_progress" and final.id == created.id
    assert final.status == status
    item_id = events[2].item.id
    assert {e.item_id for e in events if e.type == "response.output_text.delta"} == {item_id}
    text = text_of(events)
    assert text and events[-4].text == text and events[-3].part.text == text
    [message] = final.output
    assert message.type == "message" and message.id == item_id and message.role == "assistant"
    assert message.content[0].text == text == final.output_text
    usage = final.usage
    # A cancelled response counts the tokens it sent; its prompt is not counted (0).
    assert usage.output_tokens > 0 and (usage.input_tokens > 0 or status == "cancelled")
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens >= 0
    return final


# ------------------------------------------------------------------ the openai SDK


def test_a_response_streams_in_order_and_its_deltas_make_its_text(stack, model):
    async def drive(conn):
        await conn.response.create(model=model, input="tell me a story", max_output_tokens=40)
        return await until_end(conn)
    final = assert_one_text_response(session(stack, drive))
    assert final.model == model and final.usage.output_tokens == 40


def test_the_sync_client_connects_and_streams_too(stack, model):
    with openai.OpenAI(base_url=base_url(stack), api_key=API_KEY, max_retries=0) as client, \
            client.responses.connect() as conn:
        conn.response.create(model=model, input="hello there", max_output_tokens=8)
        events = []
        for event in conn:
            events.append(event)
            if event.type in TERMINAL or event.type == "error":
                break
    assert assert_one_text_response(events).usage.output_tokens == 8


def test_max_output_tokens_ends_the_response_incomplete(stack, model):
    async def drive(conn):
        await conn.response.create(model=model, input="count to a thousand",
                                   max_output_tokens=5)
        return await until_end(conn)
    final = assert_one_text_response(session(stack, drive))
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.usage.output_tokens == 5 and final.max_output_tokens == 5
    assert final.output[0].status == "incomplete"


def test_a_chained_response_sends_only_the_new_input(stack, model):
    async def drive(conn):
        await conn.response.create(model=model, input="my name is Ada",
                                   instructions="You are terse.", max_output_tokens=6)
        first = await until_end(conn)
        await conn.response.create(model=model, max_output_tokens=6,
                                   previous_response_id=first[-1].response.id,
                                   input=[{"role": "user", "content": "what is my name?"}])
        return first, await until_end(conn)
    first, second = session(stack, drive)
    a, b = assert_one_text_response(first), assert_one_text_response(second)
    assert b.previous_response_id == a.id and b.id != a.id
    # The history (the first exchange, its reply included) went into the prompt.
    assert b.usage.input_tokens > a.usage.input_tokens


def test_an_unknown_previous_response_is_an_error_and_the_socket_goes_on(stack, model):
    async def drive(conn):
        await conn.response.create(model=model, input="hi", previous_response_id="resp_nope")
        error = await until_end(conn)
        await conn.response.create(model=model, input="hi", max_output_tokens=4)
        return error, await until_end(conn)
    error, after = session(stack, drive)
    assert types(error) == ["error"]
    assert error[0].error.code == "previous_response_not_found"
    assert error[0].error.param == "previous_response_id" and error[0].status == 400
    assert assert_one_text_response(after).usage.output_tokens == 4


def test_bad_events_are_errors_and_the_socket_stays_open(stack, model):
    async def drive(conn):
        errors = []
        await conn.response.create(model=model, input="hi", temperature=9)
        errors += await until_end(conn)
        await conn.send({"type": "response.frobnicate"})
        errors += await until_end(conn)
        await conn.send_raw("{not json")
        errors += await until_end(conn)
        await conn.response.create(model=model, input="hi", max_output_tokens=4)
        return errors, await until_end(conn)
    errors, after = session(stack, drive)
    assert types(errors) == ["error"] * 3
    temperature, unknown, garbled = (e.error for e in errors)
    assert temperature.param == "temperature" and temperature.type == "invalid_request_error"
    assert unknown.code == "unknown_event_type" and garbled.code == "invalid_json"
    assert all(e.status == 400 for e in errors)
    assert_one_text_response(after)


def test_a_wrong_key_is_refused_at_the_handshake(stack):
    async def connect():
        async with async_client(stack, api_key="wrong") as client:
            async with client.responses.connect():
                pass
    with pytest.raises(InvalidStatus) as err:
        asyncio.run(connect())
    assert err.value.response.status_code == 401


def test_a_cancel_ends_the_response_cancelled_and_the_engine_stops(stack, model):
    before = metrics(stack)

    async def drive(conn):
        await conn.response.create(model=model, input="tell me a long story")
        head = await until_type(conn, "response.output_text.delta")
        await asyncio.to_thread(wait_for_the_turn_on_the_worker, stack)
        # The SDK has no typed response.cancel for this API: its send takes any event.
        await conn.send({"type": "response.cancel"})
        cancelled_at = time.monotonic()
        tail = await until_end(conn)
        ended_after = time.monotonic() - cancelled_at
        await asyncio.to_thread(assert_the_engine_stops, stack)
        return head + tail, ended_after
    events, ended_after = session(stack, drive)
    final = assert_one_text_response(events, status="cancelled")
    assert final.incomplete_details is None
    assert 0 < final.usage.output_tokens < MAX_OUT
    assert ended_after < 1.0
    after = metrics(stack)
    assert after[STARTED] - before.get(STARTED, 0) == 1
    assert after[CANCELLED] - before.get(CANCELLED, 0) == 1


def test_a_create_during_a_response_ends_that_one_first(stack, model):
    before = metrics(stack)

    async def drive(conn):
        await conn.response.create(model=model, input="tell me a long story")
        head = await until_type(conn, "response.output_text.delta")
        await conn.response.create(model=model, input="stop, a new question",
                                   max_output_tokens=5)
        old = await until_end(conn)
        new = await until_end(conn)
        await asyncio.to_thread(assert_the_engine_stops, stack)
        return head + old, new
    old, new = session(stack, drive)
    old_final = assert_one_text_response(old, status="cancelled")
    new_final = assert_one_text_response(new)
    assert new_final.id != old_final.id and new_final.usage.output_tokens == 5
    # The old response's terminal event came before the new response.created.
    assert old[-1].sequence_number < new[0].sequence_number
    assert metrics(stack)[CANCELLED] - before.get(CANCELLED, 0) == 1


def test_the_screenshot_tool_is_a_function_call_then_its_output_is_answered(stack, model):
    async def drive(conn):
        # The tiny tool model was trained on "take a screenshot": a clear yes (p > 0.99).
        await conn.response.create(model=model, tools=[SCREENSHOT_TOOL], max_output_tokens=10,
                                   input="take a screenshot of this page")
        call = await until_end(conn)
        [item] = call[-1].response.output
        await conn.response.create(
            model=model, tools=[SCREENSHOT_TOOL], max_output_tokens=10,
            previous_response_id=call[-1].response.id,
            input=[{"type": "function_call_output", "call_id": item.call_id,
                    "output": json.dumps({"screen": "a code editor"})}])
        return call, await until_end(conn)
    call, answer = session(stack, drive)
    assert types(call) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"], types(call)
    final = call[-1].response
    [item] = final.output
    assert item.type == "function_call" and item.name == "take_screenshot"
    assert item.call_id and json.loads(item.arguments) == {} and item.status == "completed"
    assert call[2].item.id == item.id and call[4].arguments == "{}"
    assert final.status == "completed" and final.output_text == ""
    assert [t.name for t in final.tools] == ["take_screenshot"]
    # The answer: text, not the tool again.
    chained = assert_one_text_response(answer)
    assert chained.previous_response_id == final.id
    assert "response.function_call_arguments.done" not in types(answer)


# ------------------------------------------------------------------ Pipecat


def run_pipecat(stack: Stack, model: str, drive, *, tools=None, **settings):
    """``drive(session)`` in a Pipecat pipeline whose LLM is ``OpenAIResponsesLLMService`` on
    the stack's /v1/responses (tests/pipecat_harness.py); ``session.log``: what the service
    logged."""
    from pipecat.services.openai.responses.llm import OpenAIResponsesLLMService

    def make_llm():
        return OpenAIResponsesLLMService(
            ws_url=f"ws://127.0.0.1:{stack.port}/v1/responses", api_key=API_KEY,
            settings=OpenAIResponsesLLMService.Settings(model=model, **settings))

    return pipecat_harness.run_pipecat(make_llm, OpenAIResponsesLLMService.Settings, drive,
                                       tools=tools,
                                       log_filter="pipecat.services.openai.responses")


def test_pipecat_turns_on_one_socket_and_an_interruption_stops_the_engine(stack, model):
    short = 20
    before = metrics(stack)

    async def drive(session):
        rec = session.recorder
        first = await session.reply("hello there")

        await session.set_budget(MAX_OUT)  # a reply long enough to be interrupted
        await session.say("tell me a long story")
        await session.until(lambda: rec.current)  # mid-stream: its text is arriving
        await asyncio.to_thread(wait_for_the_turn_on_the_worker, stack)
        interrupted_at = time.monotonic()
        await session.interrupt()
        await asyncio.to_thread(assert_the_engine_stops, stack)
        stopped_after = time.monotonic() - interrupted_at

        await session.set_budget(short)
        asked_at = time.monotonic()
        third = await session.reply("what now?")
        return first, stopped_after, third, time.monotonic() - asked_at

    (first, stopped_after, third, third_took), session = run_pipecat(
        stack, model, drive, max_completion_tokens=short)
    assert first and third
    assert stopped_after < 1.5
    # No 5 s drain stall: the cancelled response's terminal event came at once.
    assert third_took < 3.0
    after = metrics(stack)
    assert after[STARTED] - before.get(STARTED, 0) == 3
    assert after[CANCELLED] - before.get(CANCELLED, 0) == 1
    # The tiny model never ends a reply: the two short ones end at their token limit, which
    # Pipecat reports as an error, as it does with OpenAI's own response.incomplete.
    messages = [getattr(e, "error", str(e)) for e in session.errors]
    assert messages == ["LLM response error: max_output_tokens"] * 2, messages


def test_pipecat_calls_the_screenshot_tool_and_chains_its_result(stack, model):
    calls: list[dict] = []

    async def drive(session):
        # The tiny tool model was trained on "take a screenshot": a clear yes (p > 0.99).
        return await session.reply("take a screenshot of this page")

    answer, session = run_pipecat(stack, model, drive, tools=pipecat_screenshot_tool(calls),
                                  max_completion_tokens=10)
    assert calls == [{}]  # once: the create that carries the result is not classified again
    assert answer
    messages = session.context.get_messages()
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"], messages
    assert messages[1]["tool_calls"][0]["function"]["name"] == "take_screenshot"
    assert session.recorder.responses[0] == ""  # the call's own response has no text
    # The call's response completed, so the result went alone, chained to it.
    sent = [m for m in session.log if m.split(": ", 1)[-1].startswith("Sending ")]
    assert [m.split(": ", 1)[1] for m in sent] == [
        "Sending full context (1 items)",
        "Sending incremental context via previous_response_id (1 new items, 2 cached)"], sent
    # Only the answer (cut at its limit) is reported; the call's response completed.
    assert [getattr(e, "error", str(e)) for e in session.errors] == [
        "LLM response error: max_output_tokens"]
