"""The restart policy with a fake clock: plain floats, no sleeps."""

from __future__ import annotations

import pytest

from supervisor.policy import RestartPolicy, State


def policy(startretries: int = 3) -> RestartPolicy:
    return RestartPolicy(startsecs=1.0, startretries=startretries, backoff_initial_s=0.5, backoff_max_s=4.0)


def test_a_new_child_is_starting_then_running_after_startsecs() -> None:
    p = policy()
    assert p.state is State.STOPPED
    p.on_spawn(100.0)
    assert p.state is State.STARTING
    assert p.tick(100.9) is False and p.state is State.STARTING
    assert p.tick(101.0) is False and p.state is State.RUNNING
    assert p.uptime(103.5) == 3.5
    assert p.restarts == 0


def test_fast_failures_back_off_exponentially_up_to_the_max() -> None:
    p = policy(startretries=10)
    now = 0.0
    delays = []
    for _ in range(6):
        p.on_spawn(now)
        restart_at = p.on_exit(now + 0.1, 1)
        assert restart_at is not None and p.state is State.BACKOFF
        delays.append(round(restart_at - (now + 0.1), 6))
        now = restart_at
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_restart_is_due_only_when_the_backoff_has_passed() -> None:
    p = policy()
    p.on_spawn(0.0)
    restart_at = p.on_exit(0.2, 1)
    assert restart_at == pytest.approx(0.7)
    assert p.tick(0.69) is False
    assert p.tick(0.7) is True
    p.on_spawn(0.7)
    assert p.state is State.STARTING and p.restarts == 1
    assert p.tick(0.8) is False


def test_startretries_fast_failures_in_a_row_are_fatal() -> None:
    p = policy(startretries=3)
    now = 0.0
    for attempt in range(3):
        p.on_spawn(now)
        restart_at = p.on_exit(now + 0.1, 2)
        if attempt < 2:
            assert restart_at is not None
            now = restart_at
    assert restart_at is None
    assert p.state is State.FATAL
    assert p.tick(1e9) is False  # FATAL never restarts by itself
    assert "gave up after 3 fast failures" in p.describe(now)


def test_a_crash_after_running_restarts_quickly_and_clears_the_fast_failure_count() -> None:
    p = policy(startretries=3)
    p.on_spawn(0.0)
    p.on_exit(0.1, 1)  # one fast failure
    p.on_spawn(0.6)
    p.on_exit(0.7, 1)  # two
    p.on_spawn(1.7)
    p.tick(3.0)  # RUNNING: the count starts over
    assert p.state is State.RUNNING and p.fast_failures == 0
    restart_at = p.on_exit(50.0, -9)
    assert restart_at == 50.5 and p.state is State.BACKOFF
    assert p.describe(50.0) == "killed by SIGKILL; retry in 0.5s"
    for t in (51.0, 52.0):  # two more fast failures are not fatal yet
        p.on_spawn(t)
        assert p.on_exit(t + 0.1, 1) is not None


def test_short_runs_after_startsecs_back_off_too_but_are_never_fatal() -> None:
    p = policy(startretries=1)
    now, delays = 0.0, []
    for _ in range(5):
        p.on_spawn(now)
        p.tick(now + 1.0)  # RUNNING
        restart_at = p.on_exit(now + 2.0, 1)  # a model that fails to load after 2 s
        assert restart_at is not None
        delays.append(restart_at - (now + 2.0))
        now = restart_at
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    p.on_spawn(now)
    assert p.on_exit(now + 4.0, 1) == now + 4.5  # a run as long as backoff_max_s resets the backoff


def test_a_child_that_lived_startsecs_is_not_a_fast_failure_even_without_a_tick() -> None:
    p = policy(startretries=1)
    p.on_spawn(0.0)
    assert p.on_exit(5.0, 1) == 5.5  # with startretries=1 a fast failure would be FATAL
    assert p.state is State.BACKOFF


def test_a_requested_stop_ends_exited_and_never_restarts() -> None:
    p = policy()
    p.on_spawn(0.0)
    p.tick(2.0)
    assert p.on_stop() is True and p.state is State.STOPPING
    assert p.on_exit(2.5, 0) is None
    assert p.state is State.EXITED
    assert p.tick(100.0) is False
    assert p.uptime(100.0) == 0.0


def test_stopping_a_child_in_backoff_cancels_its_restart_without_a_signal() -> None:
    p = policy()
    p.on_spawn(0.0)
    p.on_exit(0.1, 1)
    assert p.on_stop() is False
    assert p.state is State.EXITED and p.tick(100.0) is False


def test_an_operator_restart_gives_a_fatal_child_a_fresh_set_of_retries() -> None:
    p = policy(startretries=1)
    p.on_spawn(0.0)
    p.on_exit(0.1, 1)
    assert p.state is State.FATAL
    p.reset()
    assert p.state is State.STOPPED and p.fast_failures == 0
    p.on_spawn(10.0)
    assert p.state is State.STARTING and p.restarts == 1


def test_a_worker_is_running_only_once_registered_with_the_broker() -> None:
    p = RestartPolicy(startsecs=1.0, startretries=3, backoff_initial_s=0.5, backoff_max_s=4.0,
                      await_registration=True)
    p.on_spawn(0.0)
    p.tick(30.0)
    assert p.state is State.STARTING  # alive long enough, but the broker has no Ready yet
    p.on_registered()
    p.tick(30.1)
    assert p.state is State.RUNNING
    p.on_exit(40.0, -9)
    p.on_spawn(41.0)
    assert p.registered is False  # a new process registers anew
