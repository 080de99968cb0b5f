"""Which processes ``restart NAME|KIND|all`` restarts, and in what order (pure)."""

from __future__ import annotations

import pytest

from supervisor.commands.restart import targets
from supervisor.control import ProcessInfo, StatusReply


def status(*procs: tuple[str, str]) -> StatusReply:
    return StatusReply(supervisor_pid=1, stopping=False, processes=[
        ProcessInfo(name=name, kind=kind, pid=10, state="RUNNING", uptime_s=1.0, restarts=0)
        for name, kind in procs])


STACK = status(("broker", "broker"), ("chat-0", "chat"), ("chat-1", "chat"), ("tool-0", "tool"),
               ("wsfront", "wsfront"))


def test_a_kind_names_every_worker_of_it_in_order() -> None:
    assert targets(STACK, "chat") == ["chat-0", "chat-1"]
    assert targets(STACK, "tool") == ["tool-0"]


def test_all_restarts_the_workers_first_the_front_last() -> None:
    assert targets(STACK, "all") == ["chat-0", "chat-1", "tool-0", "broker", "wsfront"]


def test_a_name_wins_over_a_kind_and_an_unknown_name_is_left_to_the_supervisor() -> None:
    assert targets(status(("chat", "chat"), ("chat-1", "chat")), "chat") == ["chat"]
    assert targets(STACK, "chat-9") == ["chat-9"]
    with pytest.raises(LookupError):
        targets(status(("broker", "broker"), ("chat-0", "chat")), "tool")


def test_wsfront_names_every_front_when_several_share_the_port() -> None:
    fronts = status(("broker", "broker"), ("chat-0", "chat"), ("wsfront-0", "wsfront"),
                    ("wsfront-1", "wsfront"))
    assert targets(fronts, "wsfront") == ["wsfront-0", "wsfront-1"]
    assert targets(fronts, "all") == ["chat-0", "broker", "wsfront-0", "wsfront-1"]
