"""The front's shell where it holds rules of its own: the broker link answering a send it
cannot make, and the idle watch of a connection (real sockets and a real event loop)."""

from __future__ import annotations

import asyncio

from broker import frames
from wsfront.backend import BrokerLink
from wsfront.config import FrontConfig
from wsfront.server import Front
from wsfront.yap import CloseClient, YapSession


class Recorder:
    def __init__(self) -> None:
        self.got: list[object] = []

    def deliver(self, frame: object) -> None:
        self.got.append(frame)


def test_a_submit_the_link_cannot_send_fails_later_never_inside_send(tmp_path):
    async def body() -> tuple[list[object], list[object]]:
        # Nothing listens there and the pipe holds one frame: the second send cannot go.
        link = BrokerLink(f"ipc://{tmp_path}/nobody.ipc", send_hwm=1)
        owner = Recorder()
        try:
            link.send(frames.Cancel(["filler"]), owner)
            link.send(frames.Submit("r1", "s1", frames.ToolJob("hi")), owner)
            during = list(owner.got)
            await asyncio.sleep(0)
            return during, owner.got
        finally:
            await link.close()

    during, after = asyncio.run(body())
    assert during == []  # the owner is never re-entered while it is sending
    assert after == [frames.Failed("r1", "no_worker", "the broker is unreachable")]


class IdleConnection:
    """What the idle watch needs of a connection: the session, and carrying out its actions."""

    def __init__(self, session: YapSession) -> None:
        self.session = session
        self.closes: list[CloseClient] = []

    def apply(self, actions: list[object]) -> None:
        self.closes += [a for a in actions if isinstance(a, CloseClient)]


def test_the_idle_watch_outlives_a_deadline_that_fell_during_a_turn():
    async def body() -> list[CloseClient]:
        loop = asyncio.get_running_loop()
        config = FrontConfig(api_key="k", idle_timeout_s=0.05, deploy_mode="chat")
        session = YapSession(config, "c1", now=loop.time())
        session.on_client('{"type": "start", "session_id": "s", "user_utterance": "hi"}',
                          loop.time())
        conn = IdleConnection(session)
        watch = asyncio.create_task(Front._watch_idle(conn))
        await asyncio.sleep(0.12)  # a deadline passes while the turn runs: no close
        assert conn.closes == [] and not watch.done()
        [chat] = session.core.turns[session.turn].requests
        session.on_broker(frames.Finished(chat, "stop", 3, 1))  # the turn ends
        await asyncio.wait_for(watch, 1.0)  # and the connection idles out after all
        return conn.closes

    assert asyncio.run(body()) == [CloseClient(4000, "idle timeout")]
