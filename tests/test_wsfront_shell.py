"""The front's shell where it holds rules of its own: the broker link answering a send it
cannot make, and the idle watch of a connection (real sockets and a real event loop)."""

from __future__ import annotations

import asyncio

from broker import frames
from wsfront.backend import BrokerLink
from wsfront.config import FrontConfig
from wsfront.server import YAP, Front, SessionShell
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


class RecordingWebSocket:
    """The WebSocket side of a Yap shell, recording what the shell does to it."""

    def __init__(self) -> None:
        self.outbox = type("Outbox", (), {"observe": None})()
        self.closes: list[CloseClient] = []

    def send_text(self, data: bytes, event: object = None) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        self.closes.append(CloseClient(code, reason))


def test_the_idle_watch_outlives_a_deadline_that_fell_during_a_turn(tmp_path):
    async def body() -> list[CloseClient]:
        loop = asyncio.get_running_loop()
        config = FrontConfig(api_key="k", idle_timeout_s=0.05, deploy_mode="chat",
                             broker=f"ipc://{tmp_path}/nobody.ipc")
        front = Front(config)
        session = YapSession(config, "c1", now=loop.time())
        ws = RecordingWebSocket()
        shell = SessionShell(front, ws, session, YAP)  # type: ignore[arg-type]
        shell.on_text('{"type": "start", "session_id": "s", "user_utterance": "hi"}')
        await asyncio.sleep(0.12)  # a deadline passes while the turn runs: no close
        assert ws.closes == []
        [chat] = session.core.turns[session.turn].requests
        shell.deliver(frames.Finished(chat, "stop", 3, 1))  # the turn ends
        for _ in range(100):  # and the connection idles out after all
            if ws.closes:
                break
            await asyncio.sleep(0.01)
        await front.link.close()
        return ws.closes

    assert asyncio.run(body()) == [CloseClient(4000, "idle timeout")]
