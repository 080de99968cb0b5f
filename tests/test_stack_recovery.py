"""Breaking the stack on purpose: kill -9 and SIGSTOP of workers, kill -9 of the broker, drained
restarts and stops through the CLI. Real supervisor, broker, workers and WebSocket clients.

One stack (two chat workers, one tool worker) serves every test; each begins by starting what
an earlier test left stopped and waiting until every process is RUNNING again, so the tests
pass in any order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor import control
from supervisor.rundir import RunDir
from tests.stack import Stack, default_config, open_client, recv_json, run_turn, wait_for

pytestmark = pytest.mark.integration

HANG_TIMEOUT_S = 3.0
CONFIG = default_config(chat_workers=2).replace(
    "[supervisor]\n", f"[supervisor]\nhang_timeout_s = {HANG_TIMEOUT_S}\n", 1) + """
[broker]
queue_timeout_s = 90.0
"""


@pytest.fixture(scope="module")
def stack():
    # Replies of 300 tokens: long enough (seconds on these CPUs) to act on a turn mid-stream.
    s = Stack(config_text=CONFIG, env={"CHAT_MAX_OUT": "300"})
    s.start()
    yield s
    result = s.stop()
    assert result.returncode == 0, result.stderr


def run(coro):
    return asyncio.run(coro)


def processes(stack: Stack) -> dict[str, control.ProcessInfo]:
    """The supervisor's status straight from its control socket (no CLI process: fast to poll)."""
    reply = control.call(RunDir(Path(stack.run_dir)).control_endpoint, control.StatusRequest())
    assert isinstance(reply, control.StatusReply)
    return {p.name: p for p in reply.processes}


def all_running(stack: Stack) -> bool:
    return (all(p.state == "RUNNING" for p in processes(stack).values())
            and stack.health()[0] == 200)


def wait_all_running(stack: Stack, timeout: float = 120) -> None:
    """Every process RUNNING and, as the broker reports it, no turn left in flight (so that a
    report showing one busy worker is about the turn the test starts next). A worker that an
    earlier test stopped, and did not start again because it failed, is started first."""
    for name, info in processes(stack).items():
        if info.state == "EXITED":
            result = stack.cli("restart", name)
            assert result.returncode == 0, result.stderr
    wait_for(lambda: all_running(stack) and processes(stack)["broker"].in_flight == 0,
             timeout, 0.2, "every process RUNNING, /healthz 200, nothing in flight")


async def poll(predicate, timeout: float, what: str):
    return await asyncio.to_thread(wait_for, predicate, timeout, 0.05, what)


async def start_streaming(ws, session_id: str, request_id: str) -> None:
    """Start a turn and return at its first token (patient: these CPUs are shared)."""
    await ws.send(json.dumps({"type": "start", "session_id": session_id,
                              "request_id": request_id, "user_utterance": "tell me a long story"}))
    while (await recv_json(ws, timeout=60))["type"] != "token":
        pass


async def collect(ws, timeout: float = 60) -> list[tuple[float, dict[str, Any]]]:
    """Frames up to the turn's done/error, each with the time it arrived."""
    got = []
    while True:
        frame = await recv_json(ws, timeout)
        got.append((time.monotonic(), frame))
        if frame["type"] in ("done", "error"):
            return got


def busy_chat_worker(stack: Stack) -> str:
    """The one chat worker that has a turn in flight."""
    [name] = wait_for(lambda: [p.name for p in processes(stack).values()
                               if p.kind == "chat" and p.in_flight == 1] or None,
                      10, 0.05, "one chat worker busy")
    return name


def comeback(stack: Stack, name: str, old_pid: int, timeout: float = 120) -> list[tuple[str, str]]:
    """(state, detail) of the process that replaces ``old_pid``, as seen until it is RUNNING."""
    seen: list[tuple[str, str]] = []

    def running() -> bool:
        p = processes(stack)[name]
        if p.pid not in (None, old_pid):
            seen.append((p.state, p.detail))
        return bool(seen) and seen[-1][0] == "RUNNING"
    wait_for(running, timeout, 0.05, f"{name} replaced and RUNNING")
    return seen


def test_status_shows_in_flight_rss_and_device_per_process(stack):
    wait_all_running(stack)
    cli_rows = stack.status()
    assert {"in_flight", "rss_bytes", "device", "pid", "state", "uptime_s"} <= set(cli_rows[0])

    async def scenario():
        async with await open_client(stack.url) as ws:
            await start_streaming(ws, "st", "st-1")
            name = await asyncio.to_thread(busy_chat_worker, stack)
            procs = processes(stack)
            table = (await asyncio.to_thread(stack.cli, "status")).stdout.splitlines()
            await ws.send(json.dumps({"type": "cancel"}))
            while (await recv_json(ws))["type"] != "done":
                pass
            return name, procs, table
    name, procs, table = run(scenario())
    assert procs["broker"].in_flight == 1
    assert procs["wsfront"].in_flight is None
    assert all(p.rss_bytes and p.rss_bytes > 10 << 20 for p in procs.values())
    assert {p.device for p in procs.values() if p.kind in ("chat", "tool")} == {"cpu"}
    assert procs["tool-0"].in_flight == 0
    assert table[1].split()[7:9] == ["INFLIGHT", "RSS"]
    [row] = [line.split() for line in table[2:] if line.split()[0] == name]
    assert row[2] == "RUNNING" and row[7] == "1" and row[8].endswith("M"), row


def test_kill_9_of_a_chat_worker_fails_its_turn_at_once_and_spares_the_other_session(stack):
    wait_all_running(stack)

    async def scenario():
        async with await open_client(stack.url) as a, await open_client(stack.url) as b:
            await start_streaming(a, "ka", "ka-1")
            await start_streaming(b, "kb", "kb-1")
            await poll(lambda: all(p.in_flight == 1 for p in processes(stack).values()
                                   if p.kind == "chat"), 10, "a turn on each chat worker")
            victim = processes(stack)["chat-0"].pid
            turns = [asyncio.create_task(collect(a)), asyncio.create_task(collect(b))]
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            back = asyncio.create_task(asyncio.to_thread(comeback, stack, "chat-0", victim))
            results = await asyncio.gather(*turns)
            return victim, killed, results, await back
    victim, killed, results, seen = run(scenario())
    ends = [frames[-1] for frames in results]
    [(lost_at, lost)] = [end for end in ends if end[1]["type"] == "error"]
    [(_, done)] = [end for end in ends if end[1]["type"] == "done"]
    latency = lost_at - killed
    print(f"\nkill -9 of a chat worker -> worker_lost error frame at the client: {latency * 1000:.0f} ms")
    assert lost["error_code"] == "worker_lost" and lost["request_id"] in ("ka-1", "kb-1"), lost
    assert latency < 0.5
    assert done["usage"]["completion_tokens"] > 0  # the other session never noticed

    # The supervisor brings chat-0 back: STARTING until the broker has its Ready.
    assert seen[0] == ("STARTING", "waiting to register with the broker"), seen
    wait_all_running(stack)

    async def both_serve():  # two sessions at once: the new chat-0 takes one of them
        async with await open_client(stack.url) as a, await open_client(stack.url) as b:
            await start_streaming(a, "kc", "kc-1")
            await start_streaming(b, "kd", "kd-1")
            await poll(lambda: processes(stack)["chat-0"].in_flight == 1, 10, "chat-0 serving")
            return [(await collect(ws))[-1][1]["type"] for ws in (a, b)]
    assert run(both_serve()) == ["done", "done"]


def test_a_hung_worker_is_killed_and_replaced_and_its_turn_ends_with_worker_lost(stack):
    wait_all_running(stack)
    hung_pid = None

    async def scenario():
        nonlocal hung_pid
        async with await open_client(stack.url) as ws:
            await start_streaming(ws, "h", "h-1")
            name = await asyncio.to_thread(busy_chat_worker, stack)
            hung_pid = processes(stack)[name].pid
            os.kill(hung_pid, signal.SIGSTOP)
            stopped = time.monotonic()
            frames = await collect(ws, timeout=15)
            error_at, error = frames[-1]
            await poll(lambda: not psutil.pid_exists(hung_pid)
                       or psutil.Process(hung_pid).status() == psutil.STATUS_ZOMBIE,
                       HANG_TIMEOUT_S + 15, "the hung worker killed")
            return name, error, error_at - stopped, time.monotonic() - stopped
    try:
        name, error, error_after, killed_after = run(scenario())
    finally:
        if hung_pid is not None and psutil.pid_exists(hung_pid):
            os.kill(hung_pid, signal.SIGCONT)
    print(f"\nSIGSTOP of {name}: error frame after {error_after:.2f}s, killed after {killed_after:.2f}s")
    assert error["type"] == "error" and error["error_code"] == "worker_lost" and error["request_id"] == "h-1"
    assert killed_after >= HANG_TIMEOUT_S
    comeback(stack, name, hung_pid)
    wait_all_running(stack)
    log = (RunDir(Path(stack.run_dir)).log("supervisor")).read_text()
    assert f"{name}: the broker has not heard from pid {hung_pid}" in log

    async def again():
        async with await open_client(stack.url) as ws:
            return await run_turn(ws, "hello again", session_id="h2", timeout=60)
    assert run(again())[-1]["type"] == "done"


def test_restart_drains_a_worker_its_turn_finishes_and_new_turns_go_to_the_other(stack):
    wait_all_running(stack)

    async def scenario():
        async with await open_client(stack.url) as a, await open_client(stack.url) as b:
            await start_streaming(a, "ra", "ra-1")
            name = await asyncio.to_thread(busy_chat_worker, stack)
            other = "chat-1" if name == "chat-0" else "chat-0"
            old_pid = processes(stack)[name].pid
            restart = stack.cli_background("restart", name, "--grace", "120")
            first = asyncio.create_task(collect(a, timeout=120))
            await poll(lambda: processes(stack)[name].detail.startswith("draining"), 10, "draining")
            await start_streaming(b, "rb", "rb-1")
            during = await poll(lambda: (procs := processes(stack))[other].in_flight == 1 and procs,
                                10, f"the new turn on {other}")
            second = await collect(b, timeout=120)
            out, err = await asyncio.to_thread(restart.communicate, timeout=240)
            return name, other, old_pid, during, await first, second, restart.returncode, out + err
    name, other, old_pid, during, first, second, code, output = run(scenario())
    assert first[-1][1]["type"] == "done", first[-1]  # the drained turn finished normally
    assert first[-1][1]["usage"]["completion_tokens"] > 0
    assert during[name].in_flight == 1 and during[name].detail.startswith("draining")
    assert second[-1][1]["type"] == "done"
    assert code == 0, output
    after = processes(stack)[name]
    assert after.state == "RUNNING" and after.pid != old_pid


def test_restart_of_a_kind_keeps_one_worker_serving_throughout(stack):
    wait_all_running(stack)
    before = {n: p.pid for n, p in processes(stack).items() if p.kind == "chat"}
    restart = stack.cli_background("restart", "chat")
    ready_counts = []
    while restart.poll() is None:
        ready_counts.append(stack.health()[1].get("ready", {}).get("chat", 0))
        time.sleep(0.1)
    out, err = restart.communicate()
    assert restart.returncode == 0, out + err
    assert out.splitlines()[0].startswith("chat-0 restarted") and out.splitlines()[1].startswith("chat-1")
    after = {n: p.pid for n, p in processes(stack).items() if p.kind == "chat"}
    assert all(after[n] != before[n] for n in before)
    assert min(ready_counts) >= 1, ready_counts


def test_stop_one_worker_then_a_turn_during_the_only_workers_restart_waits_for_the_replacement(stack):
    wait_all_running(stack)
    result = stack.cli("stop", "chat-1")
    assert result.returncode == 0, result.stderr
    assert processes(stack)["chat-1"].state == "EXITED"
    assert stack.health()[1]["ready"]["chat"] == 1

    async def scenario():
        async with await open_client(stack.url) as a, await open_client(stack.url) as b:
            await start_streaming(a, "oa", "oa-1")
            old_pid = processes(stack)["chat-0"].pid
            restart = stack.cli_background("restart", "chat-0", "--grace", "0")
            cut = await collect(a, timeout=30)  # no grace: the running turn is cancelled
            await b.send(json.dumps({"type": "start", "session_id": "ob", "request_id": "ob-1",
                                     "user_utterance": "are you back?"}))
            sent = time.monotonic()
            waited = await collect(b, timeout=120)
            out, err = await asyncio.to_thread(restart.communicate, timeout=240)
            return old_pid, cut, sent, waited, restart.returncode, out + err
    old_pid, cut, sent, waited, code, output = run(scenario())
    assert cut[-1][1]["type"] == "error" and cut[-1][1]["error_code"] == "worker_restarting", cut[-1]
    assert cut[-1][1]["request_id"] == "oa-1"
    types = [f["type"] for _, f in waited]
    assert types[-2:] == ["final", "done"], waited[-1]
    print(f"\na turn started during the only chat worker's restart waited {waited[-1][0] - sent:.1f}s")
    assert code == 0, output
    assert processes(stack)["chat-0"].pid != old_pid

    result = stack.cli("restart", "chat-1")  # a stopped worker starts again
    assert result.returncode == 0, result.stderr
    wait_all_running(stack)


def test_kill_9_of_the_broker_fails_the_turn_in_flight_and_the_same_connection_goes_on(stack):
    wait_all_running(stack)
    before = {n: p.pid for n, p in processes(stack).items()}

    async def scenario():
        async with await open_client(stack.url) as ws:
            await start_streaming(ws, "b", "b-1")
            os.kill(before["broker"], signal.SIGKILL)
            killed = time.monotonic()
            frames = await collect(ws, timeout=15)
            error_after = frames[-1][0] - killed
            await poll(lambda: all_running(stack), 60, "stack back after the broker restart")
            again = await run_turn(ws, "still there?", session_id="b", request_id="b-2", timeout=60)
            return frames[-1][1], error_after, again
    error, error_after, again = run(scenario())
    print(f"\nkill -9 of the broker: error frame after {error_after:.2f}s")
    assert error["type"] == "error" and error["error_code"] == "worker_lost" and error["request_id"] == "b-1"
    assert error_after < 5
    assert [f["type"] for f in again][-2:] == ["final", "done"], again[-1]
    after = {n: p.pid for n, p in processes(stack).items()}
    assert after["broker"] != before["broker"]
    # The workers and the front were not restarted: they found the new broker on their own.
    assert {n: after[n] for n in after if n != "broker"} == {n: before[n] for n in before if n != "broker"}
