"""``attach`` and ``detach`` on a running stack: real supervisor, broker, workers and clients.

One stack (one chat worker, one tool worker) serves the tests; each leaves it as it found it
(what one attaches it detaches again), so they pass in any order."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil
import pytest

from supervisor import control
from supervisor.rundir import RunDir
from tests.stack import Stack, open_client, recv_json, start_streaming, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack():
    s = Stack(env={"CHAT_MAX_OUT": "300"})  # replies long enough to act on one mid-stream
    s.start()
    yield s
    result = s.stop()
    assert result.returncode == 0, result.stderr


def processes(stack: Stack) -> dict[str, control.ProcessInfo]:
    reply = control.call(RunDir(Path(stack.run_dir)).control_endpoint, control.StatusRequest())
    assert isinstance(reply, control.StatusReply)
    return {p.name: p for p in reply.processes}


async def finish(ws, timeout: float = 120) -> dict:
    while True:
        frame = await recv_json(ws, timeout)
        if frame["type"] in ("done", "error"):
            return frame


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (a worker's engine threads' helpers, say)."""
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    return out


def test_attach_adds_a_chat_worker_that_registers_and_takes_turns_and_detach_removes_it(stack):
    result = stack.cli("attach", "--kind", "chat", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr + stack.logs()
    assert result.stdout.splitlines()[-1].startswith("chat-1 running (pid ")
    procs = processes(stack)
    assert list(procs) == ["broker", "chat-0", "tool-0", "chat-1", "wsfront"]  # before the front
    assert procs["chat-1"].state == "RUNNING" and procs["chat-1"].device == "cpu"
    assert stack.health()[1]["ready"]["chat"] == 2
    cli_rows = {row["name"]: row for row in stack.status()}
    assert cli_rows["chat-1"]["state"] == "RUNNING"

    async def two_sessions():  # the second turn goes to the idle worker, whichever that is
        async with await open_client(stack.url) as a, await open_client(stack.url) as b:
            await start_streaming(a, "at-a", "at-a-1")
            await start_streaming(b, "at-b", "at-b-1")
            busy = await asyncio.to_thread(wait_for, lambda: all(
                p.in_flight == 1 for n, p in processes(stack).items() if p.kind == "chat"),
                20, 0.05, "a turn on each chat worker")
            return busy, await finish(a), await finish(b)
    busy, end_a, end_b = asyncio.run(two_sessions())
    assert busy and end_a["type"] == end_b["type"] == "done", (end_a, end_b)

    pid = procs["chat-1"].pid

    async def detach_mid_turn():  # the drain lets chat-1's turn finish
        async with await open_client(stack.url) as a, await open_client(stack.url) as b:
            await start_streaming(a, "dt-a", "dt-a-1")
            await start_streaming(b, "dt-b", "dt-b-1")
            await asyncio.to_thread(wait_for, lambda: processes(stack)["chat-1"].in_flight == 1,
                                    20, 0.05, "chat-1 serving")
            detach = stack.cli_background("detach", "chat-1", "--grace", "120")
            await asyncio.to_thread(wait_for, lambda: processes(stack)["chat-1"].detail.startswith(
                "draining"), 20, 0.05, "chat-1 draining")
            ends = await asyncio.gather(finish(a), finish(b))
            out, err = await asyncio.to_thread(detach.communicate, timeout=240)
            return ends, detach.returncode, out + err
    ends, code, output = asyncio.run(detach_mid_turn())
    assert [e["type"] for e in ends] == ["done", "done"], ends
    assert code == 0 and "chat-1 detached" in output, output
    assert "chat-1" not in processes(stack)
    assert "chat-1" not in {row["name"] for row in stack.status()}
    wait_for(lambda: not group_members(pid), 10, 0.05, "chat-1's processes gone")
    wait_for(lambda: stack.health()[1]["ready"]["chat"] == 1, 10, 0.1, "the broker dropped chat-1")
    assert not Path(stack.run_dir, "conf", "chat-1.json").exists()
    assert "chat-1: detached" in RunDir(Path(stack.run_dir)).log("supervisor").read_text()

    async def one_more():  # the stack goes on with chat-0
        async with await open_client(stack.url) as ws:
            await start_streaming(ws, "after", "after-1")
            return await finish(ws)
    assert asyncio.run(one_more())["type"] == "done"


@pytest.mark.parametrize("args, code, message", [
    (["attach", "--kind", "chat", "--engine", "classifier"], 2, "not a chat engine"),
    (["attach", "--kind", "tool", "--name", "chat-0"], 2, "a process named 'chat-0' already runs"),
    (["attach", "--kind", "chat", "--device", "gpu"], 2, "device 'gpu'"),
    (["attach", "--kind", "chat", "--capacity", "0"], 2, "expected a whole number >= 1"),
    (["detach", "broker"], 2, "only workers can be detached"),
    (["detach", "chat-9"], 1, "no process named 'chat-9'"),
])
def test_bad_attach_and_detach_requests_exit_with_a_reason(stack, args, code, message):
    before = set(processes(stack))  # whatever earlier tests attached and detached
    result = stack.cli(*args, timeout=60)
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr
    assert set(processes(stack)) == before


def test_an_attached_worker_that_cannot_start_is_detached_again(stack):
    result = stack.cli("attach", "--kind", "tool", "--model", "/nonexistent/model", timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tool-1 did not come up" in result.stderr
    assert "--- last" in result.stderr  # the worker's log tells why
    wait_for(lambda: "tool-1" not in processes(stack), 30, 0.1, "tool-1 dropped")
    assert stack.health()[0] == 200
