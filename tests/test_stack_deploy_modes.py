"""Deploy modes over real stacks: chat-only skips the toolcall, tool-only ends after it."""

from __future__ import annotations

import asyncio

import pytest

from tests.stack import Stack, default_config, open_client, run_turn

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode,chat,tool", [("chat", 1, 0), ("tool", 0, 1)])
def test_deploy_mode_shapes_the_turn_and_healthz(mode, chat, tool):
    stack = Stack(config_text=default_config(chat, tool), env={"CHAT_MAX_OUT": "16"})
    stack.start()
    try:
        status, body = stack.health()
        assert status == 200 and body["deploy_mode"] == mode

        async def turn():
            async with await open_client(stack.url) as ws:
                return await run_turn(ws, "take a screenshot", request_id="m-1")
        kinds = [f["type"] for f in asyncio.run(turn())]
        if mode == "chat":
            assert "toolcall" not in kinds and kinds[-2:] == ["final", "done"], kinds
        else:
            assert kinds == ["ack", "toolcall", "done"], kinds
    finally:
        assert stack.stop().returncode == 0


def test_concurrent_model_call_still_sends_the_toolcall_before_any_chat_token():
    stack = Stack(env={"CHAT_MAX_OUT": "16", "CONCURRENT_MODEL_CALL": "1"})
    stack.start()
    try:
        async def turns():
            async with await open_client(stack.url) as ws:
                return [await run_turn(ws, "hello there", sampling={"sanitize_output": False})
                        for _ in range(5)]
        for frames in asyncio.run(turns()):
            kinds = [f["type"] for f in frames]
            assert kinds[:2] == ["ack", "toolcall"] and kinds[-2:] == ["final", "done"], kinds
            assert "token" in kinds
    finally:
        assert stack.stop().returncode == 0
