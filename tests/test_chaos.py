"""Chaos: N WebSocket sessions and M OpenAI HTTP streams run turns without pause while the stack
is broken on purpose,
one fault after another: kill -9 of a chat worker, of the tool worker and of the broker, a hung
(SIGSTOPped) chat worker, a drained restart through the CLI, kill -9 of the front.

What must hold throughout (DESIGN.md, issue 4): every turn a client started ends with exactly
one ``done`` or one ``error`` frame, and nothing arrives for it afterwards; no connection drops
except those on the killed front (whose clients reconnect and go on); every session completes
turns again after each fault; ``stop`` leaves no process of the stack behind. The counts are
printed as a table (shown by ``pytest -s``, ``-rA``, and in a plain run's log).

A Responses socket (``/v1/responses``) ends every response with exactly one terminal event
(a killed worker's with ``response.failed``) and serves the next ``response.create``.
An HTTP stream (``POST /v1/chat/completions``, ``stream: true``) ends with its finish chunk
(or an error event) and ``data: [DONE]``, or with an HTTP error status before it began;
nothing comes after ``[DONE]``, and only the front kill may cut a stream short.

``CHAOS_SESSIONS`` (default 6), ``CHAOS_HTTP_SESSIONS`` (default 3),
``CHAOS_RESPONSES_SESSIONS`` (default 2) and ``CHAOS_ROUNDS`` (default 1: each fault once)
scale it up.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from supervisor import control
from supervisor.rundir import RunDir
from tests.stack import API_KEY, Stack, default_config, open_client

# About two minutes here; the limit leaves room for a slower machine, and every wait inside
# has its own deadline, so a stuck stack fails the test rather than hanging it.
pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(480)]

SESSIONS = int(os.environ.get("CHAOS_SESSIONS", "6"))
HTTP_SESSIONS = int(os.environ.get("CHAOS_HTTP_SESSIONS", "3"))
RESPONSES_SESSIONS = int(os.environ.get("CHAOS_RESPONSES_SESSIONS", "2"))
RESPONSE_TERMINALS = ("response.completed", "response.incomplete", "response.failed")
ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "1"))
HANG_TIMEOUT_S = 3.0
QUEUE_TIMEOUT_S = 30.0
# No frame for this long within a turn is a hung turn (a failure), not a stuck test. Longer
# than the broker queue's timeout: a turn may wait there, silently, for a restarting worker.
FRAME_TIMEOUT_S = QUEUE_TIMEOUT_S + 20
RECOVERY_TIMEOUT_S = 90.0  # a fault until every session has completed a turn again
RECONNECT_TIMEOUT_S = 60.0
# Error codes a fault may cause (README "When things break"); anything else is a failure.
EXPECTED_ERRORS = {"worker_lost", "worker_restarting", "queue_timeout"}

# One torch thread per worker: three workers share two cores here; more threads only contend.
CONFIG = default_config(chat_workers=2, tool_workers=1).replace(
    'model = "builtin:', 'torch_threads = 1\nmodel = "builtin:').replace(
    "[supervisor]\n",
    f"[supervisor]\nhang_timeout_s = {HANG_TIMEOUT_S}\nbackoff_max_s = 2\ndrain_grace_s = 10\n",
    1) + f"""
[broker]
queue_timeout_s = {QUEUE_TIMEOUT_S}
"""

UTTERANCES = ["take a screenshot of this page", "tell me a story about the sea",
              "what is on my screen right now", "say something nice"]


# ------------------------------------------------------------------ bookkeeping


@dataclass
class TurnRecord:
    request_id: str
    session: int
    phase: str  # the fault under way when the turn started ...
    started: float
    ended_phase: str = ""  # ... and when it ended
    ended: float = 0.0
    terminals: list[str] = field(default_factory=list)  # "done" or "error:CODE", in order
    outcome: str = "running"  # done | error | dropped | hung | running


@dataclass
class Tally:
    turns: dict[str, TurnRecord] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    drops: list[tuple[int, str]] = field(default_factory=list)  # (session, phase)
    reconnects: int = 0
    recovery: dict[str, float] = field(default_factory=dict)  # fault -> seconds
    phase: str = "warm-up"

    def note_frame(self, session: int, current: TurnRecord | None, frame: dict[str, Any]) -> None:
        """Book one frame from a session's connection; anything out of order is a violation."""
        kind, rid = frame.get("type"), frame.get("request_id")
        if rid is None:
            if kind in ("done", "error"):
                self.violations.append(f"session {session}: {kind} without a request_id: {frame}")
            return
        turn = self.turns.get(rid)
        if turn is None or turn.session != session:
            self.violations.append(f"session {session}: frame for unknown request {rid}: {frame}")
            return
        if turn.terminals:
            self.violations.append(f"{rid}: {kind} frame after its {turn.terminals[0]}: {frame}")
        elif turn is not current:
            self.violations.append(f"{rid}: {kind} frame after the session moved on: {frame}")
        if kind == "done":
            turn.terminals.append("done")
        elif kind == "error":
            turn.terminals.append(f"error:{frame.get('error_code')}")

    def done_since(self, session: int, since: float) -> bool:
        # Called from a waiting thread while the client loop adds turns: iterate a copy
        # (list() of a dict view is taken whole, under the GIL).
        return any(t.session == session and t.started >= since and t.outcome == "done"
                   for t in list(self.turns.values()))


def processes(stack: Stack) -> dict[str, control.ProcessInfo]:
    reply = control.call(RunDir(Path(stack.run_dir)).control_endpoint, control.StatusRequest())
    assert isinstance(reply, control.StatusReply)
    return {p.name: p for p in reply.processes}


def supervisor_pid(stack: Stack) -> int:
    reply = control.call(RunDir(Path(stack.run_dir)).control_endpoint, control.StatusRequest())
    assert isinstance(reply, control.StatusReply)
    return reply.supervisor_pid


async def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll a blocking predicate off the event loop (the clients keep streaming) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await asyncio.to_thread(predicate)
        except control.ControlUnavailable:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s")
        await asyncio.sleep(interval)


# ------------------------------------------------------------------ the clients


class ChaosClient:
    """One session: turn after turn on one connection, reconnecting when the front dies."""

    def __init__(self, index: int, stack: Stack, tally: Tally, stop: asyncio.Event) -> None:
        self.index = index
        self.stack = stack
        self.tally = tally
        self.stop = stop
        self.session_id = f"chaos-{index}"
        self.ws: Any = None
        self.count = 0
        self.failure: str | None = None  # why the client gave up (a failure of the test)

    async def open(self) -> Any:
        return await open_client(self.stack.url)

    async def connect(self) -> None:
        deadline = time.monotonic() + RECONNECT_TIMEOUT_S
        while True:
            try:
                self.ws = await asyncio.wait_for(self.open(), 10)
                return
            except (OSError, InvalidHandshake, InvalidStatus, asyncio.TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise AssertionError(f"session {self.index}: cannot reconnect: {exc!r}")
                await asyncio.sleep(0.2)

    async def run(self) -> None:
        try:
            await self.connect()
            while not self.stop.is_set():
                if self.ws is None:
                    self.tally.reconnects += 1
                    await self.connect()
                await self.turn()
            await self.barrier()
        except AssertionError as exc:
            self.failure = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported, and fails the test
            self.failure = f"session {self.index}: {exc!r}"
        finally:
            if self.ws is not None:
                await self.ws.close()

    async def turn(self) -> None:
        self.count += 1
        rid = f"{self.session_id}-{self.count}"
        turn = TurnRecord(rid, self.index, self.tally.phase, time.monotonic())
        self.tally.turns[rid] = turn
        try:
            await self.ws.send(json.dumps({
                "type": "start", "session_id": self.session_id, "request_id": rid,
                "user_utterance": UTTERANCES[self.count % len(UTTERANCES)]}))
            while not turn.terminals:
                raw = await asyncio.wait_for(self.ws.recv(), FRAME_TIMEOUT_S)
                self.tally.note_frame(self.index, turn, json.loads(raw))
            turn.outcome = turn.terminals[0].split(":")[0]
        except ConnectionClosed:
            turn.outcome = "dropped"
            self.tally.drops.append((self.index, self.tally.phase))
            self.ws = None
        except asyncio.TimeoutError:
            turn.outcome = "hung"
            await self.ws.close()
            self.ws = None
        finally:
            turn.ended_phase, turn.ended = self.tally.phase, time.monotonic()

    async def barrier(self) -> None:
        """ping -> pong: whatever the server still sends before the pong is booked (a second
        terminal, a late token)."""
        if self.ws is None:
            await self.connect()
        await self.ws.send(json.dumps({"type": "ping"}))
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), FRAME_TIMEOUT_S))
            if frame.get("type") == "pong":
                return
            self.tally.note_frame(self.index, None, frame)


class HttpChaosClient:
    """One OpenAI client: streamed chat completions back to back, as Pipecat sends them (the
    screenshot tool declared, usage asked for). Sessions are numbered after the WebSocket ones."""

    def __init__(self, index: int, stack: Stack, tally: Tally, stop: asyncio.Event) -> None:
        self.index = index
        self.stack = stack
        self.tally = tally
        self.stop = stop
        self.base = stack.url.replace("ws://", "http://").rsplit("/", 1)[0]
        self.count = 0
        self.failure: str | None = None

    async def run(self) -> None:
        try:
            async with httpx.AsyncClient(base_url=self.base, timeout=FRAME_TIMEOUT_S,
                                         headers={"authorization": f"Bearer {API_KEY}"}) as client:
                while not self.stop.is_set():
                    await self.turn(client)
        except Exception as exc:  # noqa: BLE001 - reported, and fails the test
            self.failure = f"http session {self.index}: {exc!r}"

    async def turn(self, client: httpx.AsyncClient) -> None:
        self.count += 1
        rid = f"http-{self.index}-{self.count}"
        turn = TurnRecord(rid, self.index, self.tally.phase, time.monotonic())
        body = {"messages": [{"role": "system", "content": "You are brief."},
                             {"role": "user", "content": UTTERANCES[self.count % len(UTTERANCES)]}],
                "stream": True, "stream_options": {"include_usage": True}, "user": rid,
                "tools": [{"type": "function", "function": {"name": "take_screenshot"}}]}
        try:
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                self.tally.turns[rid] = turn
                if response.status_code != 200:
                    error = json.loads(await response.aread())["error"]
                    turn.terminals.append(f"error:{error['code']}")
                    if retry := response.headers.get("retry-after"):
                        await asyncio.sleep(float(retry))  # as a client of the API would
                else:
                    await self.read_stream(turn, response)
            turn.outcome = turn.terminals[0].split(":")[0] if turn.terminals else "dropped"
            if not turn.terminals:
                self.tally.drops.append((self.index, self.tally.phase))
        except httpx.ConnectError:  # the front is down: nothing was started
            self.tally.turns.pop(rid, None)
            await asyncio.sleep(0.2)
            return
        except (httpx.RemoteProtocolError, httpx.ReadError):  # cut short: the front died
            turn.outcome = "dropped"
            self.tally.drops.append((self.index, self.tally.phase))
        except httpx.TimeoutException:
            turn.outcome = "hung"
        finally:
            turn.ended_phase, turn.ended = self.tally.phase, time.monotonic()

    async def read_stream(self, turn: TurnRecord, response: httpx.Response) -> None:
        rid, finished, error = turn.request_id, False, None
        async for line in response.aiter_lines():
            if not line:
                continue
            if turn.terminals:
                self.tally.violations.append(f"{rid}: {line!r} after [DONE]")
                continue
            if not line.startswith("data: "):
                self.tally.violations.append(f"{rid}: not an SSE data line: {line!r}")
                continue
            if line == "data: [DONE]":
                if error is not None:
                    turn.terminals.append(f"error:{error}")
                elif finished:
                    turn.terminals.append("done")
                else:
                    self.tally.violations.append(f"{rid}: [DONE] with no finish chunk or error")
                    turn.terminals.append("done")
                continue
            event = json.loads(line[6:])
            if "error" in event:
                error = event["error"]["code"]
            elif finished and event["choices"]:
                self.tally.violations.append(f"{rid}: a chunk after the finish chunk: {line!r}")
            elif event["choices"] and event["choices"][0]["finish_reason"] is not None:
                finished = True


class ResponsesChaosClient(ChaosClient):
    """One OpenAI Responses socket (``/v1/responses``): ``response.create`` after
    ``response.create`` on one connection, each chained to the last; a response ends with
    exactly one of completed / incomplete / failed, nothing of it comes after, and the same
    socket serves the next create (a new one only after the front kill)."""

    def __init__(self, index: int, stack: Stack, tally: Tally, stop: asyncio.Event) -> None:
        super().__init__(index, stack, tally, stop)
        self.url = stack.url.rsplit("/", 1)[0] + "/v1/responses"
        self.previous: str | None = None

    async def open(self) -> Any:
        from websockets.asyncio.client import connect
        self.previous = None  # a new socket knows no earlier response
        return await connect(self.url, additional_headers={"Authorization": f"Bearer {API_KEY}"},
                             open_timeout=10, max_size=None)

    async def barrier(self) -> None:
        """Nothing to flush: every event of a response was read up to its terminal one."""

    async def turn(self) -> None:
        self.count += 1
        rid = f"resp-{self.index}-{self.count}"
        turn = TurnRecord(rid, self.index, self.tally.phase, time.monotonic())
        self.tally.turns[rid] = turn
        create = {"type": "response.create", "input": UTTERANCES[self.count % len(UTTERANCES)],
                  "instructions": "You are brief.", "tools": [
                      {"type": "function", "name": "take_screenshot",
                       "parameters": {"type": "object", "properties": {}}}]}
        if self.previous is not None:
            create["previous_response_id"] = self.previous
        try:
            await self.ws.send(json.dumps(create))
            response_id = None
            while not turn.terminals:
                event = json.loads(await asyncio.wait_for(self.ws.recv(), FRAME_TIMEOUT_S))
                kind = event.get("type", "")
                if kind == "error":
                    turn.terminals.append(f"error:{event.get('code')}")
                elif kind == "response.created":
                    if response_id is not None:
                        self.tally.violations.append(f"{rid}: a second response.created")
                    response_id = event["response"]["id"]
                elif response_id is None:
                    self.tally.violations.append(f"{rid}: {kind} before response.created")
                elif kind in RESPONSE_TERMINALS:
                    response = event["response"]
                    if response["id"] != response_id:
                        self.tally.violations.append(f"{rid}: {kind} of another response")
                    if kind == "response.failed":
                        # "message (our code)": the code a fault may cause, as on /ws
                        message = response["error"]["message"]
                        turn.terminals.append(f"error:{message.rsplit('(', 1)[-1].rstrip(')')}")
                        self.previous = None
                    else:
                        turn.terminals.append("done")
                        self.previous = response_id
            turn.outcome = turn.terminals[0].split(":")[0]
        except ConnectionClosed:
            turn.outcome = "dropped"
            self.tally.drops.append((self.index, self.tally.phase))
            self.ws = None
        except asyncio.TimeoutError:
            turn.outcome = "hung"
            await self.ws.close()
            self.ws = None
        finally:
            turn.ended_phase, turn.ended = self.tally.phase, time.monotonic()


# ------------------------------------------------------------------ the faults


@dataclass
class Fault:
    name: str
    target: str  # the process that must come back with a new pid
    inject: Callable[[Stack, dict[str, control.ProcessInfo]], Awaitable[None]]
    drops_allowed: bool = False


async def kill_9(stack: Stack, procs: dict[str, control.ProcessInfo], name: str) -> None:
    os.kill(procs[name].pid, signal.SIGKILL)


async def hang(stack: Stack, procs: dict[str, control.ProcessInfo], name: str) -> None:
    """SIGSTOP: alive but silent; the supervisor must SIGKILL it after hang_timeout_s."""
    pid = procs[name].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await poll(lambda: not psutil.pid_exists(pid)
                   or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                   HANG_TIMEOUT_S + 30, f"the hung {name} killed by the supervisor")
    finally:
        if psutil.pid_exists(pid):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


async def cli_restart(stack: Stack, procs: dict[str, control.ProcessInfo], name: str) -> None:
    result = await asyncio.to_thread(stack.cli, "restart", name, timeout=120)
    assert result.returncode == 0, f"restart {name}: {result.stdout}{result.stderr}"


FAULTS = [
    Fault("kill -9 chat-0", "chat-0", lambda s, p: kill_9(s, p, "chat-0")),
    Fault("kill -9 tool-0", "tool-0", lambda s, p: kill_9(s, p, "tool-0")),
    Fault("kill -9 broker", "broker", lambda s, p: kill_9(s, p, "broker")),
    Fault("SIGSTOP chat-1", "chat-1", lambda s, p: hang(s, p, "chat-1")),
    Fault("restart chat-0", "chat-0", lambda s, p: cli_restart(s, p, "chat-0")),
    Fault("kill -9 wsfront", "wsfront", lambda s, p: kill_9(s, p, "wsfront"), drops_allowed=True),
]


def all_running(stack: Stack) -> bool:
    return (all(p.state == "RUNNING" for p in processes(stack).values())
            and stack.health()[0] == 200)


# ------------------------------------------------------------------ leftovers


class ProcessWatch:
    """Every process of the stack seen while it ran (by pid and start time, so a reused pid is
    not mistaken for ours), for the check that ``stop`` leaves none behind."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.seen: dict[int, psutil.Process] = {}
        self.groups: set[int] = set()

    def note(self, pid: int | None) -> None:
        if pid is None or pid in self.seen:
            return
        try:
            proc = psutil.Process(pid)
            self.seen[pid] = proc
            if (group := os.getpgid(pid)) != os.getpgid(0):  # never the test's own group
                self.groups.add(group)
            for child in proc.children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass

    def note_stack(self, stack: Stack) -> None:
        try:
            self.note(supervisor_pid(stack))
            for p in processes(stack).values():
                self.note(p.pid)
        except control.ControlUnavailable:
            pass

    def left(self) -> list[str]:
        """Live processes that were ours: seen ones, members of their process groups, and any
        whose command line names the run directory."""
        me = os.getpid()
        out = {}
        for pid, proc in self.seen.items():
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out[pid] = " ".join(proc.cmdline())
        for proc in psutil.process_iter(["pid", "cmdline", "status"]):
            pid = proc.info["pid"]
            if pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                in_group = os.getpgid(pid) in self.groups
            except ProcessLookupError:
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            if in_group or self.run_dir in cmdline:
                out[pid] = cmdline
        return [f"pid {pid}: {cmd[:120]}" for pid, cmd in sorted(out.items())]


# ------------------------------------------------------------------ the test


def report(tally: Tally, clients: list[Any], left: list[str] | None, elapsed: float) -> str:
    outcomes = Counter(t.outcome for t in tally.turns.values())
    errors = Counter(t.terminals[0].split(":", 1)[1] for t in tally.turns.values()
                     if t.terminals and t.terminals[0].startswith("error"))
    per_phase: dict[str, Counter[str]] = {}
    for t in tally.turns.values():
        per_phase.setdefault(t.ended_phase or t.phase, Counter())[t.outcome] += 1
    durations = sorted(t.ended - t.started for t in tally.turns.values() if t.outcome == "done")
    http_turns = sum(1 for rid in tally.turns if rid.startswith("http-"))
    responses = sum(1 for rid in tally.turns if rid.startswith("resp-"))
    rows = [("sessions (Yap + HTTP + Responses)",
             f"{SESSIONS} + {HTTP_SESSIONS} + {RESPONSES_SESSIONS}"),
            ("seconds", f"{elapsed:.0f}"),
            ("turns started", str(len(tally.turns))),
            ("  of them HTTP streams", str(http_turns)),
            ("  of them Responses", str(responses)),
            ("  ended with one done", str(outcomes["done"])),
            ("  ended with one error", str(outcomes["error"]))]
    rows += [(f"    error {code}", str(n)) for code, n in sorted(errors.items())]
    rows += [("  lost with a dropped connection", str(outcomes["dropped"])),
             ("  hung (no frame in time)", str(outcomes["hung"])),
             ("  still running at the end", str(outcomes["running"])),
             ("protocol violations", str(len(tally.violations))),
             ("connections dropped", str(len(tally.drops))),
             ("reconnects", str(tally.reconnects)),
             ("processes left after stop", "?" if left is None else str(len(left))),
             ("done turn seconds p50", f"{durations[len(durations) // 2]:.1f}" if durations else "-")]
    width = max(len(k) for k, _ in rows)
    lines = ["", "chaos: counts", *(f"  {k:<{width}}  {v:>6}" for k, v in rows), "",
             "  turns by the fault under way when they ended; recovered: from the fault until"
             " every", "  session had completed a turn started after the process came back",
             f"  {'fault':<18} {'turns':>5} {'done':>5} {'error':>5} {'drop':>5} {'recovered':>10}"]
    for phase, c in per_phase.items():
        rec = tally.recovery.get(phase)
        lines.append(f"  {phase:<18} {sum(c.values()):>5} {c['done']:>5} {c['error']:>5} "
                     f"{c['dropped']:>5} {'' if rec is None else f'{rec:.1f}s':>10}")
    return "\n".join(lines)


@pytest.fixture
def stack():
    # Short replies: many turns, so that every fault lands on turns in flight and a session
    # proves quickly that it is served again.
    # No message rate limit: the HTTP clients run short turns back to back on one connection.
    s = Stack(config_text=CONFIG, env={"CHAT_MAX_OUT": "16", "WS_MAX_MESSAGES_PER_WINDOW": "0"})
    s.start()
    yield s
    if Path(s.run_dir, "supervisor.pid").exists():  # the test failed before its own stop
        s.stop()


def test_every_turn_ends_once_and_the_stack_recovers_from_each_fault(stack, capsys, request):
    watch = ProcessWatch(stack.run_dir)
    tally = Tally()
    began = time.monotonic()

    async def scenario() -> list[Any]:
        stop = asyncio.Event()
        clients: list[Any] = [ChaosClient(i, stack, tally, stop) for i in range(SESSIONS)]
        clients += [HttpChaosClient(SESSIONS + i, stack, tally, stop)
                    for i in range(HTTP_SESSIONS)]
        clients += [ResponsesChaosClient(SESSIONS + HTTP_SESSIONS + i, stack, tally, stop)
                    for i in range(RESPONSES_SESSIONS)]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        try:
            await poll(lambda: all(tally.done_since(c.index, began) for c in clients),
                       RECOVERY_TIMEOUT_S, "every session served before any fault")
            for _ in range(ROUNDS):
                for fault in FAULTS:
                    await poll(lambda: all_running(stack), RECOVERY_TIMEOUT_S,
                               f"every process RUNNING before {fault.name}")
                    await asyncio.to_thread(watch.note_stack, stack)
                    procs = await asyncio.to_thread(processes, stack)
                    old_pid = procs[fault.target].pid
                    tally.phase = fault.name
                    injected = time.monotonic()
                    await fault.inject(stack, procs)
                    await poll(lambda: (p := processes(stack)[fault.target]).pid not in (None, old_pid)
                               and p.state == "RUNNING", RECOVERY_TIMEOUT_S,
                               f"{fault.target} back after {fault.name}")
                    await asyncio.to_thread(watch.note_stack, stack)
                    back = time.monotonic()
                    await poll(lambda: all(tally.done_since(c.index, back) for c in clients)
                               or any(c.failure for c in clients),
                               RECOVERY_TIMEOUT_S, f"every session served again after {fault.name}")
                    tally.recovery[fault.name] = time.monotonic() - injected
                    if any(c.failure for c in clients):
                        break
            tally.phase = "cool-down"
        finally:
            stop.set()
            await asyncio.wait(tasks, timeout=FRAME_TIMEOUT_S + 10)
            for task in tasks:
                task.cancel()
        return clients

    clients: list[Any] = []
    left: list[str] | None = None
    try:
        clients = asyncio.run(scenario())
        watch.note_stack(stack)
        result = stack.stop()
        assert result.returncode == 0, result.stdout + result.stderr
        deadline = time.monotonic() + 15  # SIGKILLed groups are reaped a moment after stop returns
        while (left := watch.left()) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        table = report(tally, clients, left, time.monotonic() - began)
        print(table)  # captured: shown by -rA and on failure
        if request.config.getoption("capture") != "no":
            with capsys.disabled():  # and in a plain run's log (CI)
                print(table)

    failures = [c.failure for c in clients if c.failure]
    assert not failures, failures
    assert not tally.violations, tally.violations[:10]
    unended = [t.request_id for t in tally.turns.values()
               if len(t.terminals) != 1 and t.outcome != "dropped"]
    assert not unended, f"turns without exactly one terminal frame: {unended[:10]}"
    front_kills = {f.name for f in FAULTS if f.drops_allowed}
    bad_drops = [d for d in tally.drops if d[1] not in front_kills]
    assert not bad_drops, f"connections dropped outside the front kill: {bad_drops}"
    unexpected = {t.terminals[0] for t in tally.turns.values() if t.terminals
                  and t.terminals[0].startswith("error")
                  and t.terminals[0].split(":", 1)[1] not in EXPECTED_ERRORS}
    assert not unexpected, unexpected
    assert set(tally.recovery) == {f.name for f in FAULTS}, tally.recovery
    assert any(d[1] in front_kills for d in tally.drops)  # the front kill was felt
    assert len(watch.seen) >= 6 + len(FAULTS) - 1  # sanity: the watch saw the stack's processes
    assert left == [], f"processes left after stop: {left}"
