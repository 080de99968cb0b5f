"""A stack whose broker listens on tcp:// with CurveZMQ: the supervisor makes the keys and hands
its own workers and front theirs; a worker started by hand with a bundle from ``keys --client``
registers and serves; one with a key the broker does not know never registers, and the broker's
log names the refusal."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.curve import load_client
from supervisor import control
from supervisor.keys import make_keys
from supervisor.rundir import RunDir
from tests.stack import (
    MODEL_CACHE, ROOT, Stack, default_config, free_port, open_client, run_turn, wait_for,
)

pytestmark = pytest.mark.integration

BACKEND_PORT, FRONTEND_PORT = free_port(), free_port()
CONFIG = default_config() + f"""
[broker]
frontend = "tcp://127.0.0.1:{FRONTEND_PORT}"
backend = "tcp://127.0.0.1:{BACKEND_PORT}"
"""


@pytest.fixture(scope="module")
def stack():
    s = Stack(config_text=CONFIG, env={"CHAT_MAX_OUT": "16"})
    s.start()
    yield s
    result = s.stop()
    assert result.returncode == 0, result.stderr


def run(coro):
    return asyncio.run(coro)


def ready_workers(stack: Stack) -> set[str]:
    """Names the broker reports as registered and ready (the front's /healthz shows its status)."""
    return {w["name"] for w in stack.health()[1].get("workers", []) if w["state"] == "ready"}


def hand_worker(stack: Stack, name: str, curve_dir: Path | None, log: Path) -> subprocess.Popen:
    """``python -m workers`` as an operator on another host would run it."""
    argv = [sys.executable, "-m", "workers", "--kind", "chat", "--name", name, "--model", "builtin:tiny-chat",
            "--model-cache", MODEL_CACHE, "--connect", f"tcp://127.0.0.1:{BACKEND_PORT}"]
    if curve_dir is not None:
        argv += ["--curve-dir", str(curve_dir)]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def test_the_stack_runs_its_own_workers_and_front_over_curve_with_keys_it_made(stack):
    keys = Path(stack.run_dir, "keys")
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "broker.key_secret").stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(stack.run_dir).stat().st_mode) == 0o700  # what guards ipc:// sockets
    reply = control.call(RunDir(Path(stack.run_dir)).control_endpoint, control.StatusRequest())
    assert all(p.state == "RUNNING" for p in reply.processes)
    broker_log = RunDir(Path(stack.run_dir)).log("broker").read_text()
    assert f"CurveZMQ on tcp://127.0.0.1:{FRONTEND_PORT}, tcp://127.0.0.1:{BACKEND_PORT}" in broker_log

    async def turn():
        async with await open_client(stack.url) as ws:
            return await run_turn(ws, "hello over curve", session_id="c1", timeout=60)
    assert run(turn())[-1]["type"] == "done"


def test_a_worker_from_another_host_with_a_bundle_registers_and_one_with_a_wrong_key_is_refused(stack):
    keys = Path(stack.run_dir, "keys")
    made = stack.cli("keys", "--client", "host-b")
    assert made.returncode == 0 and "made: host-b" in made.stdout, made.stdout + made.stderr
    stranger = Path(stack.run_dir, "stranger-keys")
    make_keys(stranger, ["host-x"])
    bundle = Path(stack.run_dir, "stranger-bundle")  # the right broker key, an unknown client key
    bundle.mkdir(mode=0o700)
    for f in ("client.key", "client.key_secret"):
        (bundle / f).write_bytes((stranger / "host-x" / f).read_bytes())
    (bundle / "broker.key").write_bytes((keys / "broker.key").read_bytes())
    logs = Path(stack.run_dir, "logs")
    good = hand_worker(stack, "remote-0", keys / "host-b", logs / "remote-0.log")
    bad = hand_worker(stack, "intruder-0", bundle, logs / "intruder-0.log")
    try:
        wait_for(lambda: "remote-0" in ready_workers(stack), 120, 0.2, "remote-0 registered")
        wait_for(lambda: "ready:" in (logs / "intruder-0.log").read_text(), 120, 0.2, "intruder-0 tried")
        broker_log = RunDir(Path(stack.run_dir)).log("broker")
        key = load_client(bundle).public.decode()
        wait_for(lambda: f"its public key {key} is not among the allowed keys" in broker_log.read_text(),
                 10, 0.1, "the broker logs the refusal")
        # The worker says so in its own log, naming its key, rather than only hearing nothing.
        wait_for(lambda: f"refused this client's CurveZMQ key {key}" in
                 (logs / "intruder-0.log").read_text(), 10, 0.1, "the worker logs its refusal")
        time.sleep(1.0)  # it keeps knocking; it never gets in
        assert "intruder-0" not in ready_workers(stack) and bad.poll() is None

        # Only remote-0 is left to serve chat: stop the stack's own chat worker.
        assert stack.cli("stop", "chat-0").returncode == 0

        async def turn():
            async with await open_client(stack.url) as ws:
                return await run_turn(ws, "who serves this?", session_id="c2", timeout=60)
        assert run(turn())[-1]["type"] == "done"
        assert "remote-0" in ready_workers(stack)
    finally:
        for proc in (good, bad):
            proc.terminate()
            proc.wait(30)
        stack.cli("restart", "chat-0")
        # Leave the stack as the other test expects it: served by its own workers only (a turn
        # routed to the stopped remote-0 would fail with worker_lost).
        wait_for(lambda: ready_workers(stack) == {"chat-0", "tool-0"}, 30, 0.2,
                 "only the stack's own workers registered")
