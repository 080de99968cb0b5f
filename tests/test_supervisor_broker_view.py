"""The supervisor's view of the broker's table, with a fake clock."""

from __future__ import annotations

import pytest

from broker.frames import BrokerStatus, WorkerInfo
from supervisor.broker_view import BrokerView


def report(*workers: tuple[str, int, float], load: int = 0) -> BrokerStatus:
    return BrokerStatus([WorkerInfo(name, "chat", "hf", "tiny", 4, load, pid, "cpu", "ready", silent)
                         for name, pid, silent in workers])


def test_a_worker_is_registered_while_fresh_reports_list_its_pid() -> None:
    view = BrokerView(stale_after_s=1.0)
    assert view.worker("chat-0", 7, now=0.0) is None
    view.on_status(report(("chat-0", 7, 0.0), load=2), now=0.0)
    assert view.worker("chat-0", 7, now=0.5).load == 2
    assert view.in_flight(now=0.5) == 2
    assert view.worker("chat-0", 8, now=0.5) is None  # another process of that name
    assert view.worker("chat-0", 7, now=1.5) is None and view.in_flight(now=1.5) is None  # stale


def test_silence_counts_from_the_last_frame_the_broker_had_and_goes_on_after_expiry() -> None:
    view = BrokerView(stale_after_s=1.0)
    view.on_status(report(("chat-0", 7, 0.1)), now=10.0)
    assert view.silent_for("chat-0", 7, now=10.0) == pytest.approx(0.1)
    view.on_status(report(), now=10.5)  # the broker expired it
    view.on_status(report(), now=11.0)
    assert view.silent_for("chat-0", 7, now=11.0) == pytest.approx(1.1)
    assert view.silent_for("chat-0", 8, now=11.0) is None  # the replacement never registered


def test_nobody_is_judged_silent_while_the_broker_is_down_and_the_clock_restarts_after() -> None:
    view = BrokerView(stale_after_s=1.0)
    view.on_status(report(("chat-0", 7, 0.0)), now=0.0)
    assert view.silent_for("chat-0", 7, now=30.0) is None  # no fresh report: no verdict
    view.on_status(report(), now=30.0)  # a restarted broker that does not know it yet
    assert view.silent_for("chat-0", 7, now=30.5) == 0.5


def test_a_new_broker_process_restarts_every_silence_even_without_a_gap() -> None:
    view = BrokerView(stale_after_s=1.0)
    view.on_status(BrokerStatus(report(("chat-0", 7, 0.0)).workers, epoch=1), now=0.0)
    view.on_status(BrokerStatus([], epoch=1), now=0.8)
    view.on_status(BrokerStatus([], epoch=2), now=1.2)  # restarted within the staleness
    assert view.silent_for("chat-0", 7, now=1.5) == pytest.approx(0.3)
