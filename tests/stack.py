"""Integration-test helpers over ``supervisor.sandbox`` (the throwaway stack): waiting on a
condition with a deadline, and a small WebSocket client for Yap protocol turns."""

from __future__ import annotations

import json
import time
from typing import Any

from websockets.asyncio.client import ClientConnection

from supervisor.sandbox import (  # noqa: F401  (re-exported for the tests)
    API_KEY, MODEL_CACHE, ROOT, Stack, build_models, default_config, free_port, open_client,
)


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s")


def replacement_registered(stack: Stack, old_pid: int, kind: str = "chat") -> bool:
    """The front's view (it lags the broker by a heartbeat) has a worker of ``kind`` that is
    not the killed one."""
    status, body = stack.health()
    return status == 200 and any(w["kind"] == kind and w["pid"] != old_pid
                                 for w in body.get("workers", []))


# ------------------------------------------------------------------ client side


async def recv_json(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    import asyncio
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def run_turn(ws: ClientConnection, utterance: str, *, session_id: str = "s1",
                   request_id: str | None = None, timeout: float = 20.0,
                   **fields: Any) -> list[dict[str, Any]]:
    """Send one ``start`` and collect frames up to its ``done`` or ``error``."""
    msg = {"type": "start", "session_id": session_id, "user_utterance": utterance, **fields}
    if request_id is not None:
        msg["request_id"] = request_id
    await ws.send(json.dumps(msg))
    got: list[dict[str, Any]] = []
    while True:
        frame = await recv_json(ws, timeout)
        got.append(frame)
        if frame["type"] in ("done", "error"):
            return got


async def start_streaming(ws: ClientConnection, session_id: str, request_id: str,
                          utterance: str = "tell me a long story") -> None:
    """Start a turn and return once its first token has arrived (the turn is mid-stream)."""
    await ws.send(json.dumps({"type": "start", "session_id": session_id,
                              "request_id": request_id, "user_utterance": utterance}))
    while (await recv_json(ws))["type"] != "token":
        pass
