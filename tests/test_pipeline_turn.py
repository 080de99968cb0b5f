"""The turn plan for each deployment mode."""

from __future__ import annotations

import pytest

from pipeline import TurnPlan


def test_both_sequential_submits_tool_then_chat_after_the_tool_answers() -> None:
    plan = TurnPlan("both", concurrent=False)
    assert (plan.needs_tool, plan.needs_chat, plan.start_chat_with_tool) == (True, True, False)
    assert plan.initial_submissions() == ("tool",)
    assert plan.on_tool_result() is True
    assert plan.on_tool_result() is False  # chat is submitted once
    assert plan.chat_submitted


def test_both_concurrent_submits_both_at_once_and_nothing_after_the_tool() -> None:
    plan = TurnPlan("both", concurrent=True)
    assert plan.start_chat_with_tool
    assert plan.initial_submissions() == ("tool", "chat")
    assert plan.on_tool_result() is False


@pytest.mark.parametrize("concurrent", [False, True])
def test_chat_tokens_wait_for_the_toolcall_frame_when_a_tool_model_runs(concurrent: bool) -> None:
    plan = TurnPlan("both", concurrent=concurrent)
    assert plan.may_stream_chat(tool_done=False) is False
    assert plan.may_stream_chat(tool_done=True) is True


@pytest.mark.parametrize("concurrent", [False, True])
def test_chat_only_streams_at_once_without_a_tool(concurrent: bool) -> None:
    plan = TurnPlan("chat", concurrent=concurrent)
    assert (plan.needs_tool, plan.needs_chat, plan.start_chat_with_tool) == (False, True, False)
    assert plan.initial_submissions() == ("chat",)
    assert plan.may_stream_chat(tool_done=False) is True
    assert plan.on_tool_result() is False


@pytest.mark.parametrize("concurrent", [False, True])
def test_tool_only_never_submits_chat(concurrent: bool) -> None:
    plan = TurnPlan("tool", concurrent=concurrent)
    assert (plan.needs_tool, plan.needs_chat, plan.start_chat_with_tool) == (True, False, False)
    assert plan.initial_submissions() == ("tool",)
    assert plan.on_tool_result() is False
    assert not plan.chat_submitted


def test_unknown_deploy_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="deploy_mode"):
        TurnPlan("vision", concurrent=False)  # type: ignore[arg-type]
