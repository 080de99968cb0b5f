"""Several front processes on one port (``[wsfront] processes``, SO_REUSEPORT): the kernel
spreads connections over them, each is supervised like any child, and a killed front costs
only its own clients: the others stream on, and it comes back on the same port."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from websockets.exceptions import ConnectionClosed

from tests.stack import Stack, open_client, run_turn, wait_for

pytestmark = pytest.mark.integration

CONNECTIONS = 16  # all on one front by chance: 2 in 65536


@pytest.fixture(scope="module")
def stack():
    s = Stack(env={"WS_FRONT_PROCESSES": "2", "CHAT_MAX_OUT": "24", "DEPLOY_MODE": "chat"})
    s.start()
    yield s
    s.stop()


def front_pids(stack: Stack) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in stack.status() if p["kind"] == "wsfront"}


def test_two_fronts_share_the_port_and_a_killed_one_costs_only_its_clients(stack):
    pids = front_pids(stack)
    assert sorted(pids) == ["wsfront-0", "wsfront-1"]

    async def scenario() -> tuple[int, int, list]:
        clients = [await open_client(stack.url) for _ in range(CONNECTIONS)]
        for i, ws in enumerate(clients):  # every connection is served
            frames = await run_turn(ws, "hello", session_id=f"s{i}")
            assert frames[-1]["type"] == "done", frames[-1]
        os.kill(pids["wsfront-0"], signal.SIGKILL)
        dropped = served = 0
        for i, ws in enumerate(clients):
            try:
                frames = await run_turn(ws, "hello again", session_id=f"s{i}")
                assert frames[-1]["type"] == "done", frames[-1]
                served += 1
            except ConnectionClosed:
                dropped += 1
        for ws in clients:
            await ws.close()
        # New connections all land on a live front (the kernel forgets the dead socket).
        fresh = [await open_client(stack.url) for _ in range(4)]
        ends = [(await run_turn(ws, "hi", session_id=f"new{i}"))[-1]["type"]
                for i, ws in enumerate(fresh)]
        for ws in fresh:
            await ws.close()
        return dropped, served, ends

    dropped, served, ends = asyncio.run(scenario())
    assert 0 < dropped < CONNECTIONS and dropped + served == CONNECTIONS
    assert ends == ["done"] * 4
    wait_for(lambda: (p := front_pids(stack)).get("wsfront-0") not in (None, pids["wsfront-0"])
             and stack.status() and all(s["state"] == "RUNNING" for s in stack.status()),
             60, what="wsfront-0 restarted")
    assert front_pids(stack)["wsfront-1"] == pids["wsfront-1"]  # the other one never noticed
