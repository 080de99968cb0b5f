"""The broker's routing table, pure: no sockets, the clock is a number."""

from __future__ import annotations

from broker import frames
from broker.frames import Cancel, ChatJob, Ready, Submit, ToolJob
from broker.table import Refused, ToFront, ToSupervisor, ToWorker, WorkerTable

FRONT = b"front-1"


def ready(name: str, kind: str = "chat", capacity: int = 2, pid: int = 100) -> Ready:
    return Ready(name, kind, "hf", "tiny", capacity, pid, "cpu", frames.PROTOCOL_VERSION)


def submit(rid: str, kind: str = "chat", session: str = "s1") -> tuple[Submit, bytes]:
    job = ChatJob("p", "", "hi", 10) if kind == "chat" else ToolJob("hi")
    msg = Submit(rid, session, job)
    return msg, frames.encode(msg)


def decoded(action: ToFront):
    return frames.to_front_decoder.decode(action.payload)


def table_with(*workers: Ready, **kw) -> WorkerTable:
    table = WorkerTable(heartbeat_interval_s=0.25, liveness=4, **kw)
    for r in workers:
        table.on_ready(r.name.encode(), r, now=0.0)
    table.on_front_heartbeat(FRONT, now=0.0)
    return table


def test_submit_goes_to_least_loaded_worker_of_its_kind():
    table = table_with(ready("chat-0"), ready("chat-1"), ready("tool-0", "tool"))
    first = table.on_submit(FRONT, *submit("r1", session="s1"), now=0.1)
    second = table.on_submit(FRONT, *submit("r2", session="s2"), now=0.1)
    tool = table.on_submit(FRONT, *submit("r3", "tool"), now=0.1)
    assert {first[0].identity, second[0].identity} == {b"chat-0", b"chat-1"}
    assert tool[0].identity == b"tool-0"
    # The payload is forwarded as received, with the front's identity as envelope.
    assert first[0].parts == (FRONT, submit("r1", session="s1")[1])


def test_full_workers_queue_and_a_finished_request_frees_the_slot():
    table = table_with(ready("chat-0", capacity=1))
    assert isinstance(table.on_submit(FRONT, *submit("r1"), now=0.0)[0], ToWorker)
    assert table.on_submit(FRONT, *submit("r2"), now=0.0) == []
    assert table.status().queued == 1
    actions = table.on_done(b"chat-0", "r1", now=0.1)
    assert len(actions) == 1 and actions[0].identity == b"chat-0"
    assert table.front_of("r2") == FRONT


def test_queue_over_its_bound_is_overloaded():
    table = table_with(ready("chat-0", capacity=1), queue_max=1)
    table.on_submit(FRONT, *submit("r1"), now=0.0)
    table.on_submit(FRONT, *submit("r2"), now=0.0)
    [failed] = table.on_submit(FRONT, *submit("r3"), now=0.0)
    assert decoded(failed).code == "overloaded"


def test_queued_turn_times_out_with_queue_timeout_or_no_worker():
    table = table_with(ready("chat-0", capacity=1), queue_timeout_s=2.0)
    table.on_submit(FRONT, *submit("r1"), now=0.0)
    table.on_submit(FRONT, *submit("r2"), now=0.0)
    table.on_submit(FRONT, *submit("t1", "tool"), now=0.0)
    for t in (0.25, 0.5, 0.75):  # keep the worker alive
        table.on_heartbeat(b"chat-0", 1, now=t)
    assert table.expire(1.0) == []
    table.on_heartbeat(b"chat-0", 1, now=1.9)
    table.on_front_heartbeat(FRONT, now=1.9)
    fails = {decoded(a).request_id: decoded(a).code for a in table.expire(2.1)}
    assert fails == {"r2": "queue_timeout", "t1": "no_worker"}


def test_silent_worker_is_expired_and_its_requests_fail_with_worker_lost():
    table = table_with(ready("chat-0"), ready("chat-1"))
    table.on_submit(FRONT, *submit("r1", session="s1"), now=0.0)
    table.on_submit(FRONT, *submit("r2", session="s2"), now=0.0)
    table.on_heartbeat(b"chat-1", 1, now=0.9)
    table.on_front_heartbeat(FRONT, now=0.9)
    lost = table.expire(1.05)
    assert len(lost) == 1
    failed = decoded(lost[0])
    assert failed.code == "worker_lost" and table.front_of(failed.request_id) is None
    assert [w.name for w in table.status().workers] == ["chat-1"]


def test_restarted_worker_with_same_name_fails_the_old_process_requests():
    table = table_with(ready("chat-0", pid=1))
    table.on_submit(FRONT, *submit("r1"), now=0.0)
    actions = table.on_ready(b"chat-0", ready("chat-0", pid=2), now=0.5)
    assert decoded(actions[0]).code == "worker_lost"
    assert table.status().workers[0].pid == 2 and table.status().workers[0].load == 0


def test_unknown_worker_heartbeat_is_asked_to_reregister():
    table = table_with()
    [action] = table.on_heartbeat(b"chat-9", 0, now=0.0)
    assert frames.worker_decoder.decode(action.parts[0]) == frames.Reregister()


def test_cancel_reaches_every_worker_holding_the_turn_and_drops_queued():
    table = table_with(ready("chat-0", capacity=1), ready("tool-0", "tool", capacity=1))
    table.on_submit(FRONT, *submit("c1", "chat", "s1"), now=0.0)
    table.on_submit(FRONT, *submit("t1", "tool", "s1"), now=0.0)
    table.on_submit(FRONT, *submit("c2", "chat", "s1"), now=0.0)  # queued
    table.on_submit(FRONT, *submit("t2", "tool", "s2"), now=0.0)  # queued, other session
    actions = table.on_cancel(FRONT, Cancel(["c1", "t1", "c2"]), now=0.1)
    got = {a.identity: frames.worker_decoder.decode(a.parts[0]) for a in actions}
    assert got[b"chat-0"].request_ids == ["c1"] and got[b"tool-0"].request_ids == ["t1"]
    assert table.status().queued == 1  # s2's tool request still waits


def test_cancel_by_request_id_only_touches_that_request():
    table = table_with(ready("chat-0"))
    table.on_submit(FRONT, *submit("r1", session="s1"), now=0.0)
    table.on_submit(FRONT, *submit("r2", session="s2"), now=0.0)
    [action] = table.on_cancel(FRONT, Cancel(request_ids=["r2"]), now=0.1)
    assert frames.worker_decoder.decode(action.parts[0]).request_ids == ["r2"]
    assert table.on_cancel(b"other-front", Cancel(request_ids=["r1"]), now=0.1) == []


def test_silent_front_has_its_work_cancelled():
    table = table_with(ready("chat-0"))
    table.on_submit(FRONT, *submit("r1"), now=0.0)
    table.on_heartbeat(b"chat-0", 1, now=0.9)
    [action] = table.expire(1.05)
    assert action.identity == b"chat-0"
    assert frames.worker_decoder.decode(action.parts[0]).request_ids == ["r1"]


def test_duplicate_request_id_is_refused():
    table = table_with(ready("chat-0"))
    table.on_submit(FRONT, *submit("r1"), now=0.0)
    [failed] = table.on_submit(FRONT, *submit("r1"), now=0.0)
    assert decoded(failed).code == "bad_request"


def test_draining_worker_gets_no_new_work():
    table = table_with(ready("chat-0"), ready("chat-1"))
    table.on_drain("chat-0")
    for i in range(2):
        [action] = table.on_submit(FRONT, *submit(f"r{i}"), now=0.0)
        assert action.identity == b"chat-1"


def test_a_session_sticks_to_its_chat_worker_while_it_is_not_much_busier():
    table = table_with(ready("chat-0", capacity=16), ready("chat-1", capacity=16))
    [first] = table.on_submit(FRONT, *submit("r0", session="s1"), now=0.0)
    home = first.identity
    table.on_done(home, "r0", now=0.1)
    for i in range(4):  # other sessions load the same worker a little
        table._assign(table.workers[home], FRONT, *submit(f"x{i}", session=f"o{i}"))
    [again] = table.on_submit(FRONT, *submit("r1", session="s1"), now=0.2)
    assert again.identity == home
    table._assign(table.workers[home], FRONT, *submit("x9", session="o9"))  # now 6 vs 0
    [moved] = table.on_submit(FRONT, *submit("r2", session="s1"), now=0.3)
    assert moved.identity != home


def test_affinity_survives_nothing_but_a_healthy_worker():
    table = table_with(ready("chat-0"), ready("chat-1"))
    [first] = table.on_submit(FRONT, *submit("r0", session="s1"), now=0.0)
    table.on_done(first.identity, "r0", now=0.1)
    table.on_drain(first.identity.decode())
    [second] = table.on_submit(FRONT, *submit("r1", session="s1"), now=0.2)
    assert second.identity != first.identity


# ---------------------------------------------------------------- the supervisor's word

SUPERVISOR = b"supervisor"


def sent_to_supervisor(actions) -> list:
    return [frames.to_supervisor_decoder.decode(a.payload) for a in actions
            if isinstance(a, ToSupervisor)]


def test_worker_gone_fails_its_turns_at_once_and_ignores_another_pid():
    table = table_with(ready("chat-0", pid=7), ready("chat-1", pid=8))
    table.on_submit(FRONT, *submit("r1", session="s1"), now=0.0)
    table.on_submit(FRONT, *submit("r2", session="s2"), now=0.0)
    home = table.inflight["r1"].worker.decode()
    pid = 7 if home == "chat-0" else 8
    assert table.on_worker_gone(frames.WorkerGone(home, pid + 100, "old news"), now=0.1) == []
    [failed] = table.on_worker_gone(frames.WorkerGone(home, pid, f"{home} died: signal 9"), now=0.1)
    assert decoded(failed) == frames.Failed("r1", "worker_lost", f"{home} died: signal 9")
    assert [w.name for w in table.status().workers] == [{"chat-0": "chat-1", "chat-1": "chat-0"}[home]]
    assert table.front_of("r2") == FRONT  # the other worker's turn goes on


def test_retire_drains_then_reports_retired_when_the_last_turn_finishes():
    table = table_with(ready("chat-0", pid=7), ready("chat-1", pid=8))
    table.on_submit(FRONT, *submit("r1", session="s1"), now=0.0)
    home = table.inflight["r1"].worker
    actions = table.on_retire(SUPERVISOR, frames.Retire(home.decode(), 0, grace_s=5.0), now=0.1)
    assert [frames.worker_decoder.decode(a.parts[0]) for a in actions] == [frames.Drain()]
    [routed] = table.on_submit(FRONT, *submit("r2", session="s1"), now=0.2)
    assert routed.identity != home  # new turns go elsewhere, affinity or not
    done = table.on_done(home, "r1", now=0.3)
    assert sent_to_supervisor(done) == [frames.Retired(home.decode(), table.workers[home].ready.pid, 1, 0)]
    assert table.status(0.3).workers[0 if home == b"chat-0" else 1].state == "draining"


def test_retire_of_an_idle_or_unknown_worker_is_answered_at_once():
    table = table_with(ready("chat-0", pid=7))
    actions = table.on_retire(SUPERVISOR, frames.Retire("chat-0", 7, grace_s=5.0), now=0.0)
    assert sent_to_supervisor(actions) == [frames.Retired("chat-0", 7)]
    assert sent_to_supervisor(table.on_retire(SUPERVISOR, frames.Retire("chat-9", 3, 1.0), now=0.0)) == [
        frames.Retired("chat-9", 3)]


def test_turns_left_when_the_grace_runs_out_fail_with_the_retire_code_and_are_aborted():
    table = table_with(ready("chat-0", pid=7))
    table.on_submit(FRONT, *submit("r1"), now=0.0)
    table.on_retire(SUPERVISOR, frames.Retire("chat-0", 7, grace_s=0.5), now=0.0)
    table.on_heartbeat(b"chat-0", 1, now=0.4)
    table.on_front_heartbeat(FRONT, now=0.4)
    assert table.expire(0.45) == []
    actions = table.expire(0.6)
    [failed] = [decoded(a) for a in actions if isinstance(a, ToFront)]
    assert failed.request_id == "r1" and failed.code == "worker_restarting"
    [cancel] = [frames.worker_decoder.decode(a.parts[0]) for a in actions if isinstance(a, ToWorker)]
    assert cancel.request_ids == ["r1"]
    assert sent_to_supervisor(actions) == [frames.Retired("chat-0", 7, 0, 1)]
    assert table.on_done(b"chat-0", "r1", now=0.7) == []  # its late Finished(cancelled) goes nowhere


def test_a_drained_worker_that_registers_again_stays_drained():
    table = table_with(ready("chat-0", pid=7))
    table.on_retire(SUPERVISOR, frames.Retire("chat-0", 7, grace_s=5.0), now=0.0)
    table.on_ready(b"chat-0", ready("chat-0", pid=7), now=0.1)
    assert table.status(0.1).workers[0].state == "draining"
    table.on_ready(b"chat-0", ready("chat-0", pid=9), now=0.2)  # the replacement
    assert table.status(0.2).workers[0].state == "ready"


def test_a_queued_turn_waits_through_a_restart_and_goes_to_the_replacement():
    table = table_with(ready("chat-0", pid=7), queue_timeout_s=30.0)
    table.on_retire(SUPERVISOR, frames.Retire("chat-0", 7, grace_s=5.0), now=0.0)
    assert table.on_submit(FRONT, *submit("r1"), now=0.1) == []  # queued
    table.on_worker_gone(frames.WorkerGone("chat-0", 7), now=0.2)
    table.on_front_heartbeat(FRONT, now=0.9)
    assert table.expire(1.0) == []
    [routed] = table.on_ready(b"chat-0", ready("chat-0", pid=9), now=1.0)
    assert routed.identity == b"chat-0" and table.front_of("r1") == FRONT


def test_a_turn_that_waited_out_a_restart_times_out_with_queue_timeout():
    table = table_with(ready("chat-0", pid=7), queue_timeout_s=1.0)
    table.on_worker_gone(frames.WorkerGone("chat-0", 7), now=0.0)
    table.on_submit(FRONT, *submit("r1"), now=0.0)
    table.on_front_heartbeat(FRONT, now=0.9)
    [failed] = table.expire(1.1)
    assert decoded(failed).code == "queue_timeout"


def test_status_tells_how_long_each_worker_has_been_silent():
    table = table_with(ready("chat-0"))
    table.on_heartbeat(b"chat-0", 0, now=0.5)
    [status] = sent_to_supervisor(table.on_watch(SUPERVISOR, now=0.75))
    assert status.workers[0].silent_s == 0.25


def test_a_worker_of_another_frame_protocol_is_refused_and_gets_no_turns():
    table = WorkerTable()
    old = Ready("chat-9", "chat", "hf", "tiny", 2, 100, "cpu", frames.PROTOCOL_VERSION - 1)
    [refusal] = table.on_ready(b"chat-9", old, now=0.0)
    v = frames.PROTOCOL_VERSION
    assert isinstance(refusal, Refused) and f"protocol {v - 1}, this broker {v}" in refusal.reason
    assert table.status().workers == []
    assert table.on_submit(FRONT, *submit("r1"), now=0.0) == []  # queued, not routed to it
