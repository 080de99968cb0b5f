"""A child's lifecycle as a pure state machine: events and a clock given as plain floats in,
actions out. No processes, no sockets, no sleeps."""

from __future__ import annotations

import logging
import signal

import msgspec
import pytest

from supervisor import control
from supervisor.config import SupervisorSettings
from supervisor.exit_reason import exit_reason
from supervisor.lifecycle import (
    RETIRE_MARGIN_S,
    Action,
    Answer,
    Lifecycle,
    Log,
    Retire,
    Signal,
    Spawn,
    TellGone,
)
from supervisor.policy import State

SETTINGS = SupervisorSettings(startsecs=1.0, startretries=3, backoff_initial_s=0.5, backoff_max_s=4.0,
                              stop_timeout_s=10.0, hang_timeout_s=10.0)
LOG = "/run/logs/chat-0.log"
TERM, KILL = Signal(signal.SIGTERM), Signal(signal.SIGKILL)


def worker(**settings: object) -> Lifecycle:
    return Lifecycle("chat-0", worker=True, settings=msgspec.structs.replace(SETTINGS, **settings), log_path=LOG)


def front() -> Lifecycle:
    return Lifecycle("wsfront", worker=False, settings=SETTINGS, log_path="/run/logs/wsfront.log")


def running(life: Lifecycle, now: float = 0.0, pid: int = 100) -> Lifecycle:
    """Spawned at ``now``, registered (a worker), RUNNING after startsecs."""
    life.spawned(now, pid)
    life.registered()
    life.tick(now + SETTINGS.startsecs)
    assert life.state is State.RUNNING
    return life


def acts(actions: list[Action]) -> list[Action]:
    """What the daemon must do, without the log lines."""
    return [a for a in actions if not isinstance(a, Log)]


def lines(actions: list[Action]) -> list[tuple[int, str]]:
    return [(a.level, a.text) for a in actions if isinstance(a, Log)]


# ---- one wording for exits -----------------------------------------------------------------


@pytest.mark.parametrize("code, words", [
    (0, "exited with code 0"),
    (1, "exited with code 1"),
    (-9, "killed by SIGKILL"),
    (-15, "killed by SIGTERM"),
    (-(signal.SIGRTMIN + 2), f"killed by signal {signal.SIGRTMIN + 2}"),
    (None, "exited, status unknown"),
])
def test_an_exit_is_worded_by_its_code_or_its_signal_name(code: int | None, words: str) -> None:
    assert exit_reason(code) == words


def test_the_broker_the_log_and_status_word_an_exit_alike() -> None:
    life = running(worker())
    actions = life.exited(50.0, -9)
    assert acts(actions) == [TellGone(100, "worker chat-0 (pid 100) killed by SIGKILL")]
    assert lines(actions) == [(logging.WARNING, "chat-0: killed by SIGKILL; retry in 0.5s")]
    assert life.policy.describe(50.0) == "killed by SIGKILL; retry in 0.5s"


# ---- start, registration, running ----------------------------------------------------------


def test_a_child_is_spawned_at_start_and_starting_until_startsecs() -> None:
    life = front()
    assert life.state is State.STOPPED and not life.alive
    assert life.start() == [Spawn()]
    assert life.spawned(10.0, 42) == []
    assert (life.state, life.pid, life.alive) == (State.STARTING, 42, True)
    assert life.tick(10.9) == [] and life.state is State.STARTING
    assert life.tick(11.0) == [] and life.state is State.RUNNING


def test_a_worker_is_running_only_once_the_broker_registered_it_and_says_so_once() -> None:
    life = worker()
    life.spawned(0.0, 100)
    life.tick(30.0)
    assert life.state is State.STARTING
    assert lines(life.registered()) == [(logging.INFO, "chat-0: registered with the broker")]
    assert life.registered() == []  # already known
    life.tick(30.1)
    assert life.state is State.RUNNING


def test_only_a_live_worker_registers() -> None:
    assert front().registered() == []
    life = worker()
    assert life.registered() == [] and not life.policy.registered  # never spawned


# ---- crashes: backoff and give-up ----------------------------------------------------------


def test_a_crash_tells_the_broker_and_backs_off_before_the_restart() -> None:
    life = running(worker())
    actions = life.exited(20.0, 1)
    assert acts(actions) == [TellGone(100, "worker chat-0 (pid 100) exited with code 1")]
    assert lines(actions) == [(logging.WARNING, "chat-0: exited with code 1; retry in 0.5s")]
    assert life.state is State.BACKOFF and not life.alive
    assert life.tick(20.49) == []
    actions = life.tick(20.5)
    assert acts(actions) == [Spawn()]
    assert lines(actions) == [(logging.INFO, "chat-0: restarting (restart 1)")]
    life.spawned(20.5, 101)
    assert (life.state, life.pid, life.policy.registered) == (State.STARTING, 101, False)


def test_a_front_or_broker_exit_is_not_told_to_the_broker() -> None:
    life = running(front())
    assert acts(life.exited(5.0, 1)) == []
    assert life.state is State.BACKOFF


def test_fast_failures_back_off_doubling_up_to_the_max_then_give_up() -> None:
    life = worker(startretries=5)
    now, delays = 0.0, []
    for _ in range(4):
        life.spawned(now, 100)
        life.exited(now + 0.1, 1)
        assert life.state is State.BACKOFF
        restart_at = life.policy.restart_at
        assert restart_at is not None
        delays.append(round(restart_at - (now + 0.1), 6))
        assert acts(life.tick(restart_at)) == [Spawn()]
        now = restart_at
    assert delays == [0.5, 1.0, 2.0, 4.0]
    life.spawned(now, 100)
    actions = life.exited(now + 0.1, 1)  # the fifth in a row
    assert life.state is State.FATAL
    assert lines(actions) == [(logging.ERROR, f"chat-0: exited with code 1; gave up after 5 fast failures; "
                                              f"see {LOG}")]
    assert life.tick(1e9) == []  # FATAL never restarts by itself


def test_a_process_that_cannot_be_started_counts_as_a_failure_and_is_retried() -> None:
    life = worker()
    actions = life.spawn_failed(0.0, "No such file or directory: '/venv/bin/python'")
    assert lines(actions) == [(logging.ERROR, "chat-0: cannot start: No such file or directory: '/venv/bin/python'")]
    assert acts(actions) == []
    assert life.state is State.BACKOFF and life.policy.last_exit_code == 127
    assert acts(life.tick(0.5)) == [Spawn()]


# ---- stopping ------------------------------------------------------------------------------


def test_a_stop_sends_sigterm_then_sigkill_after_stop_timeout() -> None:
    life = running(front())
    assert life.stop(5.0) == [TERM]
    assert life.state is State.STOPPING and life.alive
    assert life.stop(6.0) == []  # already signalled: the deadline stays
    assert life.tick(14.9) == []
    actions = life.tick(15.0)
    assert acts(actions) == [KILL]
    assert lines(actions) == [(logging.WARNING, "wsfront: still alive 10s after SIGTERM; SIGKILL")]
    assert life.tick(16.0) == []  # once
    actions = life.exited(16.0, -9)
    assert lines(actions) == [(logging.INFO, "wsfront: stopped (killed by SIGKILL)")]
    assert life.state is State.EXITED and life.tick(1e9) == []


def test_a_child_that_exits_on_sigterm_is_stopped_and_not_restarted() -> None:
    life = running(worker())
    life.stop(5.0)
    actions = life.exited(5.2, 0)
    assert lines(actions) == [(logging.INFO, "chat-0: stopped (exited with code 0)")]
    assert acts(actions) == [TellGone(100, "worker chat-0 (pid 100) exited with code 0")]
    assert life.state is State.EXITED and life.tick(100.0) == []


def test_stopping_a_child_in_backoff_cancels_its_restart_without_a_signal() -> None:
    life = running(front())
    life.exited(5.0, 1)
    assert life.stop(5.1) == []
    assert life.state is State.EXITED and life.tick(100.0) == []


def test_stop_name_drains_a_registered_worker_at_a_live_broker_first() -> None:
    life = running(worker())
    actions = life.stop_requested(5.0, 10.0, broker_fresh=True)
    assert acts(actions) == [Retire(100, 10.0, "worker_lost")]
    assert lines(actions) == [(logging.INFO, "chat-0: stop requested"), (logging.INFO, "chat-0: draining (10s grace)")]
    assert life.draining and life.state is State.RUNNING  # it still serves its turns
    assert life.stop_requested(6.0, 10.0, broker_fresh=True)[1:] == []  # already on its way down
    assert life.retired(7.0, 99, 1, 0) == []  # about an older process
    actions = life.retired(7.0, 100, 2, 1)
    assert acts(actions) == [TERM]
    assert lines(actions) == [(logging.INFO, "chat-0: drained (2 turn(s) finished, 1 failed); stopping it")]
    assert not life.draining and life.state is State.STOPPING
    life.exited(7.5, 0)
    assert life.state is State.EXITED


def test_a_drain_without_the_brokers_word_ends_at_the_grace_plus_a_margin() -> None:
    life = running(worker())
    life.stop_requested(5.0, 2.0, broker_fresh=True)
    assert life.tick(5.0 + 2.0 + RETIRE_MARGIN_S - 0.01) == []
    actions = life.tick(5.0 + 2.0 + RETIRE_MARGIN_S)
    assert acts(actions) == [TERM]
    assert "no word from the broker on its drain" in lines(actions)[0][1]


def test_a_retire_no_broker_took_stops_the_worker_at_once() -> None:
    life = running(worker())
    life.stop_requested(5.0, 10.0, broker_fresh=True)
    actions = life.retire_unsent(5.0)
    assert acts(actions) == [TERM] and not life.draining
    assert life.retire_unsent(5.1) == []


@pytest.mark.parametrize("why", ["broker down", "not registered", "not a worker"])
def test_without_a_drain_stop_name_signals_at_once(why: str) -> None:
    if why == "not registered":
        life = worker()
        life.spawned(0.0, 100)
    else:
        life = running(front() if why == "not a worker" else worker())
    assert acts(life.stop_requested(5.0, 10.0, broker_fresh=why != "broker down")) == [TERM]
    assert life.state is State.STOPPING


def test_stop_name_of_a_child_in_backoff_only_cancels_the_restart() -> None:
    life = running(worker())
    life.exited(5.0, 1)
    assert acts(life.stop_requested(5.1, 10.0, broker_fresh=True)) == []
    assert life.state is State.EXITED and life.tick(100.0) == []


def test_a_worker_that_dies_while_draining_for_a_stop_stays_down() -> None:
    life = running(worker())
    life.stop_requested(5.0, 10.0, broker_fresh=True)
    life.exited(6.0, -11)
    assert life.state is State.EXITED and not life.draining and life.tick(100.0) == []


# ---- operator restarts ---------------------------------------------------------------------


def test_restart_name_drains_stops_and_starts_afresh_then_answers_with_the_new_pid() -> None:
    life = running(worker())
    assert acts(life.restart_requested(5.0, 10.0, broker_fresh=True)) == [Retire(100, 10.0, "worker_restarting")]
    assert acts(life.retired(6.0, 100, 1, 0)) == [TERM]
    actions = life.exited(6.5, 0)
    assert acts(actions) == [TellGone(100, "worker chat-0 (pid 100) exited with code 0"), Spawn()]
    assert life.spawned(6.5, 200) == [Answer(control.Done(message="chat-0 restarted", pid=200))]
    assert life.state is State.STARTING and life.policy.restarts == 1


def test_restart_of_a_fatal_child_gives_it_a_fresh_set_of_retries_now() -> None:
    life = worker(startretries=1)
    life.spawned(0.0, 100)
    life.exited(0.1, 1)
    assert life.state is State.FATAL
    assert acts(life.restart_requested(50.0, 10.0, broker_fresh=True)) == [Spawn()]
    assert life.policy.fast_failures == 0
    assert life.spawned(50.0, 101) == [Answer(control.Done(message="chat-0 restarted", pid=101))]


def test_a_restart_whose_spawn_fails_is_answered_with_the_reason() -> None:
    life = running(front())
    life.restart_requested(5.0, 10.0, broker_fresh=True)
    life.exited(5.1, 0)
    actions = life.spawn_failed(5.1, "boom")
    assert acts(actions) == [Answer(control.Failed(message="wsfront: exited with code 127; retry in 0.5s"))]


def test_a_worker_that_dies_while_draining_for_a_restart_is_started_afresh() -> None:
    life = running(worker())
    life.restart_requested(5.0, 10.0, broker_fresh=True)
    actions = life.exited(6.0, -9)
    assert acts(actions)[-1] == Spawn() and not life.draining


def test_a_restart_asked_during_a_stop_waits_for_the_exit() -> None:
    life = running(front())
    life.stop(5.0)
    assert acts(life.restart_requested(5.1, 10.0, broker_fresh=True)) == []
    assert acts(life.exited(5.2, 0)) == [Spawn()]


# ---- hangs ---------------------------------------------------------------------------------


def test_a_registered_worker_silent_past_hang_timeout_is_sigkilled_once() -> None:
    life = running(worker())
    assert life.silent(None) == [] and life.silent(10.0) == []
    actions = life.silent(10.5)
    assert acts(actions) == [KILL]
    assert lines(actions) == [(logging.ERROR, "chat-0: the broker has not heard from pid 100 for 10.5s "
                                              "(hang_timeout_s 10); SIGKILL")]
    assert life.silent(20.0) == []  # not again until it was reaped and restarted
    life.exited(20.0, -9)
    life.tick(20.5)
    running(life, 20.5, 101)
    assert acts(life.silent(10.5)) == [KILL]


@pytest.mark.parametrize("case", ["disabled", "not registered", "draining", "not a worker"])
def test_silence_is_no_hang_when_it_cannot_mean_one(case: str) -> None:
    life = worker(hang_timeout_s=0.0) if case == "disabled" else front() if case == "not a worker" else worker()
    if case == "not registered":
        life.spawned(0.0, 100)
    else:
        running(life)
    if case == "draining":
        life.stop_requested(1.0, 10.0, broker_fresh=True)
    assert life.silent(1e6) == []


# ---- detach, shutdown, a second signal -----------------------------------------------------


def test_detach_drains_like_stop_and_refuses_a_pending_restart() -> None:
    life = running(worker())
    life.stop(5.0)
    life.restart_requested(5.0, 10.0, broker_fresh=True)  # waits for the exit
    actions = life.detach_requested(5.1, 10.0, broker_fresh=True)
    assert acts(actions) == [Answer(control.Failed(message="chat-0 was detached"))]
    assert life.detached and life.alive
    assert acts(life.exited(5.5, 0))[-1:] != [Spawn()]
    assert life.state is State.EXITED


def test_detach_of_a_live_worker_retires_it_and_of_one_in_backoff_ends_it() -> None:
    life = running(worker())
    assert acts(life.detach_requested(5.0, 3.0, broker_fresh=True)) == [Retire(100, 3.0, "worker_lost")]
    crashed = running(worker())
    crashed.exited(5.0, 1)
    assert acts(crashed.detach_requested(5.1, 3.0, broker_fresh=True)) == []
    assert crashed.detached and not crashed.alive and crashed.tick(100.0) == []


def test_a_shutdown_answers_pending_restarts_and_restarts_nothing_any_more() -> None:
    waiting = running(worker())
    waiting.restart_requested(5.0, 10.0, broker_fresh=True)
    assert waiting.shutdown() == [Answer(control.Failed(message="supervisor is stopping"))]
    backoff = running(front())
    backoff.exited(5.0, 1)
    assert backoff.shutdown() == [] and backoff.state is State.EXITED
    crash = running(worker())
    crash.shutdown()
    crash.exited(6.0, 1)  # died before its phase came
    assert crash.state is State.BACKOFF and acts(crash.tick(100.0)) == []


def test_a_second_signal_kills_what_is_alive() -> None:
    life = running(worker())
    life.stop(5.0)
    assert life.kill_now() == [KILL]
    assert life.state is State.STOPPING
    life.exited(5.1, -9)
    assert life.kill_now() == []
