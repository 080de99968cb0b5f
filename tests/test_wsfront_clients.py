"""The test clients (``python -m wsfront.clients ...``) run as real subprocesses: against the
whole stack started by the supervisor, and against a small scripted WebSocket server on a real
port that answers in the frame shapes the stack is moving to (``toolcall.raw`` as an array,
``final.normalized_text``) or the older ones, and records what each client sent. The pure
parts (flags, settings, sampling, persona cycles, history, case selection, the live client's
state) need neither."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from tests.stack import API_KEY, ROOT, Stack, free_port
from workers.builtin_models import TOOL_EXAMPLES
from wsfront.clients import ClientFailure, TurnRecorder, percentile
from wsfront.clients.__main__ import ALIASES, CLIENTS, build_parser
from wsfront.clients.connection import add_connection_arguments, settings_from, ws_url
from wsfront.clients.live_state import LiveState
from wsfront.clients.personas import (
    BUILTIN_PRESETS, PersonaPreset, gender_cycle, load_persona_file, personality_cycle,
)
from wsfront.clients.sampling import sampling_from
from wsfront.clients.screen import order_problem
from wsfront.clients.switch import ack_mismatch
from wsfront.clients.tool_cases import BUILTIN_CASES, Case, Step, load_cases, select_cases
from wsfront.clients.turn import describe_toolcall, tool_calls, tool_status, with_exchange
from wsfront.clients.warmup import result_lines

integration = pytest.mark.integration


@pytest.fixture(scope="module")
def stack():
    # Short replies keep every client quick on a CPU.
    s = Stack(env={"CHAT_MAX_OUT": "24"})
    s.start()
    yield s
    s.stop()


def client(port: int, *args: str, stdin: str = "", key: str = API_KEY,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GENDER", "ASSISTANT_GENDER", "PERSONALITY", "PERSONA_STYLE")}
    env.update(SERVER_WS_URL=f"ws://127.0.0.1:{port}", TEXT_API_KEY=key, RECV_TIMEOUT_SEC="30")
    return subprocess.run([sys.executable, "-m", "wsfront.clients", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


# ------------------------------------------------------------------ a scripted server


class ScriptedServer:
    """A WebSocket server on a real port that plays each turn from a script: an ack echoing the
    persona asked for, a toolcall (yes when the utterance mentions the screen), three tokens,
    final, done. ``shape``: "new" (raw as an array; final with ``normalized_text``, its
    ``text`` deliberately different), "old" (raw a label; final ``text`` only), "chat_first"
    (a token before the toolcall), "chat_only" (no toolcall), "stuck_persona" (acks the
    default persona whatever was asked). Every frame it got is in ``received``."""

    def __init__(self, shape: str = "new") -> None:
        self.shape = shape
        self.received: list[dict[str, Any]] = []
        self.refuse_next_switch = False  # answer one persona change with a rate-limit error
        self._persona: dict[str, str] | None = None
        self._server = serve(self._handle, "127.0.0.1", 0, compression=None)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def starts(self) -> list[dict[str, Any]]:
        return [f for f in self.received if f.get("type") == "start"]

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def _handle(self, ws: ServerConnection) -> None:
        if ws.request.path != f"/ws?api_key={API_KEY}":
            ws.send(json.dumps({"type": "error", "error_code": "authentication_failed",
                                "message": "bad key"}))
            ws.close(1008)
            return
        try:
            for raw in ws:
                frame = json.loads(raw)
                self.received.append(frame)
                for out in self._answer(frame):
                    ws.send(json.dumps(out))
                if frame.get("type") == "end":
                    ws.close(1000)
        except ConnectionClosed:
            pass

    def _answer(self, frame: dict[str, Any]) -> list[dict[str, Any]]:
        kind = frame.get("type")
        if kind == "ping":
            return [{"type": "pong"}]
        if kind == "end":
            return [{"type": "connection_closed", "reason": "client_request"}]
        if kind == "cancel":
            return [{"type": "done", "cancelled": True, "request_id": frame.get("request_id")}]
        return self._turn(frame)

    def _turn(self, start: dict[str, Any]) -> list[dict[str, Any]]:
        rid, utterance = start["request_id"], start["user_utterance"]
        persona = {k: start[k] for k in ("persona_text", "persona_style", "gender") if k in start}
        if self.refuse_next_switch and self._persona is not None and persona != self._persona:
            self.refuse_next_switch = False
            return [{"type": "error", "error_code": "chat_prompt_update_rate_limited",
                     "message": "persona changed too often", "retry_after_s": 0.05,
                     "request_id": rid}]
        self._persona = persona
        ack: dict[str, Any] = {"type": "ack", "session_id": start["session_id"]}
        if "persona_text" in persona:
            ack["persona"] = "custom"
        elif self.shape == "stuck_persona":
            ack.update(persona_style="wholesome", gender="woman")
        else:
            ack.update(persona_style=persona.get("persona_style", "wholesome"),
                       gender=persona.get("gender", "woman"))
        yes = "screen" in utterance.lower()
        if self.shape == "old":
            toolcall = {"type": "toolcall", "status": "yes" if yes else "no",
                        "raw": "yes" if yes else "no"}
            final = {"type": "final", "text": f"Reply {len(self.starts())} here."}
        else:
            toolcall = {"type": "toolcall", "status": "yes" if yes else "no",
                        "raw": [{"name": "take_screenshot"}] if yes else []}
            final = {"type": "final", "normalized_text": f"Reply {len(self.starts())} here.",
                     "text": "not the normalized text"}
        tokens = [{"type": "token", "text": t} for t in ("Reply", f" {len(self.starts())}", " here.")]
        middle = {"chat_only": tokens, "chat_first": tokens[:1] + [toolcall] + tokens[1:]
                  }.get(self.shape, [toolcall, *tokens])
        usage = {"prompt_tokens": len(start.get("history_text", "")) + len(utterance),
                 "completion_tokens": 3}
        return [{**f, "request_id": rid}
                for f in (ack, *middle, final, {"type": "done", "usage": usage})]


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(shape: str = "new") -> ScriptedServer:
        servers.append(ScriptedServer(shape))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_warmup_prints_the_metrics_and_final_text_lines_from_the_new_shapes(scripted):
    server = scripted("new")
    out = ok(client(server.port, "warmup", "--temperature", "0.7", "--top_p", "0.9",
                    "--top-k", "40", "--repetition-penalty", "1.1", "--no-sanitize", "hi"))
    assert re.search(r"^toolcall status=no calls=none raw=\[\] \+[\d.]+ ms$", out, re.M), out
    metrics, final = json_lines(out)
    assert list(metrics) == ["type", "ttfb_ms", "total_ms", "stream_ms", "chunks", "chars"]
    assert metrics["type"] == "metrics" and metrics["chunks"] == 3
    assert metrics["stream_ms"] == pytest.approx(metrics["total_ms"] - metrics["ttfb_ms"], abs=0.2)
    # normalized_text wins over text
    assert final == {"type": "final_text", "text": "Reply 1 here."}
    assert metrics["chars"] == len("Reply 1 here.")
    [start] = server.starts()
    assert start["sampling"] == {"temperature": 0.7, "top_p": 0.9, "top_k": 40,
                                 "repetition_penalty": 1.1, "sanitize_output": False}


def test_warmup_reads_the_older_shapes_too(scripted):
    server = scripted("old")
    out = ok(client(server.port, "warmup", "look at my screen"))
    assert re.search(r'^toolcall status=yes raw="yes" \+', out, re.M), out
    assert json_lines(out)[1] == {"type": "final_text", "text": "Reply 1 here."}
    assert "sampling" not in server.starts()[0]  # no flag, no sampling object


def test_warmup_double_ttfb_tags_its_json_lines_with_the_phase(scripted):
    server = scripted("new")
    out = ok(client(server.port, "warmup", "--double-ttfb"))
    lines = json_lines(out)
    assert [(line["type"], line["phase"]) for line in lines] == [
        ("metrics", "first"), ("final_text", "first"), ("metrics", "second"),
        ("final_text", "second")]
    assert len({s["session_id"] for s in server.starts()}) == 1


def test_personality_cycles_styles_alternates_genders_and_keeps_the_history(scripted):
    server = scripted("new")
    out = ok(client(server.port, "personality", "--switches", "5", "--delay", "0",
                    "--min-p", "0.05"))
    starts = server.starts()
    assert [s["persona_style"] for s in starts] == [
        "flirty", "savage", "religious", "delulu", "spiritual", "flirty"]
    assert [s["gender"] for s in starts] == ["woman", "man"] * 3
    assert len({s["session_id"] for s in starts}) == 1
    assert "history_text" not in starts[0]
    for number, later in enumerate(starts[1:], 1):
        history = later["history_text"]
        assert history.count("User: ") == number and history.count("Assistant: ") == number
        assert f"Assistant: Reply {number} here." in history
    assert all(s["sampling"] == {"min_p": 0.05} for s in starts)
    assert "personality done: 6 turns, 5 switches, every ack matched" in out, out


def test_gender_alternates_the_assistant_gender_in_one_personality(scripted):
    server = scripted("new")
    out = ok(client(server.port, "gender", "--switches", "3", "--delay", "0",
                    "--personality", "nerdy"))
    starts = server.starts()
    assert [(s["persona_style"], s["gender"]) for s in starts] == [
        ("nerdy", "woman"), ("nerdy", "man"), ("nerdy", "woman"), ("nerdy", "man")]
    assert starts[-1]["history_text"].count("User: ") == 3
    assert "gender done: 4 turns, 3 switches" in out, out


def test_switch_waits_out_a_persona_rate_limit_and_tries_again(scripted):
    server = scripted("new")
    server.refuse_next_switch = True
    out = ok(client(server.port, "personality", "--switches", "2", "--delay", "0"))
    assert "(rate limited: chat_prompt_update_rate_limited, waiting 0.05s)" in out, out
    styles = [s["persona_style"] for s in server.starts()]
    assert styles == ["flirty", "savage", "savage", "religious"]  # the refused one, resent


def test_switch_fails_when_the_ack_echoes_another_persona(scripted):
    server = scripted("stuck_persona")
    result = client(server.port, "personality", "--switches", "1", "--delay", "0")
    assert result.returncode == 1
    assert result.stderr == "personality: start: the server acked personality=wholesome (asked flirty)\n"


def test_switch_clients_refuse_a_tool_only_run(scripted):
    server = scripted("new")
    result = client(server.port, "gender", "--no-chat-prompt", "--delay", "0")
    assert result.returncode == 1 and "needs a chat model" in result.stderr
    assert server.starts() == []


def test_screen_analysis_shows_the_decision_then_the_reply(scripted):
    server = scripted("new")
    out = ok(client(server.port, "screen_analysis", "--require-yes", "--top-p", "0.8"))
    assert out.count("toolcall status=yes calls=take_screenshot") == 3, out
    assert out.count("reply: Reply") == 3, out
    # the decision is printed before the reply it precedes
    assert out.index("toolcall status=yes") < out.index("reply: Reply 1")
    assert "screen_analysis done: toolcall first in 3/3, yes 3/3" in out
    assert all(s["sampling"] == {"top_p": 0.8} for s in server.starts())


@pytest.mark.parametrize("shape, problem", [
    ("chat_first", "1 chat tokens came before the toolcall"),
    ("chat_only", "no toolcall (is a tool model deployed?)"),
])
def test_screen_analysis_fails_when_the_toolcall_is_not_first(scripted, shape, problem):
    server = scripted(shape)
    result = client(server.port, "vision", "what is on my screen")
    assert result.returncode == 1, result.stdout
    assert f"turn 1: {problem}" in result.stderr


def test_screen_analysis_require_yes_fails_on_a_no(scripted):
    server = scripted("new")
    result = client(server.port, "screen_analysis", "--require-yes", "tell me a joke")
    assert result.returncode == 1 and "the tool said no" in result.stderr


def test_tool_plays_steps_with_history_and_skips_cases_over_max_steps(scripted, tmp_path):
    server = scripted("new")
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join(json.dumps(c) for c in (
        {"text": "check my screen", "label": "yes"},
        {"steps": [{"text": "i'm shopping", "label": "no"},
                   {"text": "what about this one on screen", "label": "yes"}]},
        {"steps": [{"text": "a", "label": "no"}, {"text": "b", "label": "no"},
                   {"text": "c", "label": "no"}]},
    )) + "\n")
    out = ok(client(server.port, "tool", "--file", str(cases), "--max-steps", "2", "-c", "1",
                    "--temperature", "0.2"))
    assert "skipping 1 cases with more than 2 steps" in out, out
    assert re.search(r"^accuracy 100\.0% \(3/3\)", out, re.M), out
    assert "[2/2] what about this one on screen" in out
    starts = {s["user_utterance"]: s for s in server.starts()}
    assert set(starts) == {"check my screen", "i'm shopping", "what about this one on screen"}
    assert starts["what about this one on screen"]["history_text"] == "User: i'm shopping\n"
    assert starts["what about this one on screen"]["session_id"] == starts["i'm shopping"]["session_id"]
    assert starts["check my screen"]["session_id"] != starts["i'm shopping"]["session_id"]
    assert all(s["sampling"] == {"temperature": 0.2} for s in starts.values())


def test_live_switches_presets_from_a_persona_file_and_keeps_the_history(scripted, tmp_path):
    server = scripted("new")
    personas = tmp_path / "personas.toml"
    personas.write_text('[nova]\npersonality = "nerdy"\ngender = "man"\n')
    script = "hello\n/personas\n/persona nova\nhi again\n/persona captain_jo\n/reload\nahoy\n/quit\n"
    out = ok(client(server.port, "live", "--persona", "anna_flirty", "--persona-file",
                    str(personas), "--frequency-penalty", "0.3", stdin=script))
    first, second, third = server.starts()
    assert (first["persona_style"], first["gender"]) == ("flirty", "woman")
    assert (second["persona_style"], second["gender"]) == ("nerdy", "man")
    assert "persona_style" not in third and third["persona_text"].startswith("You are Captain Jo")
    assert second["history_text"] == "User: hello\nAssistant: Reply 1 here.\n"
    assert third["history_text"].count("User: ") == 2
    assert all(s["sampling"] == {"frequency_penalty": 0.3} for s in (first, second, third))
    assert "nova" in re.search(r"\(personas: (.*); current: anna_flirty\)", out).group(1)
    assert "(now persona nova (persona_style=nerdy gender=man); the history carries on)" in out
    assert f"(reloaded {personas}: " in out, out


def test_live_refuses_an_unknown_persona_at_start(scripted):
    server = scripted("new")
    result = client(server.port, "live", "--persona", "nobody", stdin="hello\n")
    assert result.returncode == 1
    assert result.stderr.startswith("live: unknown persona 'nobody'; known: anna_flirty")


# ------------------------------------------------------------------ against the stack


@integration
def test_warmup_prints_ack_toolcall_reply_and_metrics(stack):
    out = ok(client(stack.port, "warmup", "--gender", "man", "--personality", "nerdy",
                    "--temperature", "0.7", "--top-p", "0.9", "--top_k", "40",
                    "who was Columbus?"))
    assert re.search(r"^ack \+[\d.]+ ms .*persona_style=nerdy gender=man", out, re.M), out
    assert re.search(r"^toolcall status=(yes|no) ", out, re.M), out
    assert re.search(r"^reply: .+", out, re.M), out
    timings = re.search(r"^timings (.*)$", out, re.M)
    assert timings, out
    for name in ("ack_ms", "toolcall_ms", "ttft_ms", "first_sentence_ms", "total_ms", "tokens"):
        assert re.search(rf"\b{name}=[\d.]+", timings.group(1)), timings.group(1)
    metrics, final = json_lines(out)
    assert list(metrics) == ["type", "ttfb_ms", "total_ms", "stream_ms", "chunks", "chars"]
    assert metrics["chunks"] > 0 and metrics["ttfb_ms"] <= metrics["total_ms"]
    assert final["type"] == "final_text" and len(final["text"]) == metrics["chars"] > 0
    assert final["text"] in out.split("reply: ", 1)[1]  # the reply as streamed


@integration
def test_warmup_double_ttfb_tags_both_phases_on_one_connection(stack):
    out = ok(client(stack.port, "warmup", "--double-ttfb", "hello there"))
    for phase in ("first", "second"):
        assert f"phase={phase} toolcall status=" in out, out
        assert re.search(rf"^phase={phase} timings .*ttft_ms=[\d.]+", out, re.M), out
    assert [line["phase"] for line in json_lines(out)] == ["first"] * 2 + ["second"] * 2
    sessions = set(re.findall(r"session=(\S+)", out))
    assert len(sessions) == 1, sessions


@integration
def test_warmup_without_chat_prompt_sends_no_persona(stack):
    out = ok(client(stack.port, "warmup", "--no-chat-prompt", "--personality", "savage",
                    "take a screenshot"))
    # The server's defaults, not the flag: no persona field went out.
    assert "persona_style=wholesome" in out, out
    assert re.search(r"^toolcall status=(yes|no)", out, re.M), out


@integration
def test_bench_reports_percentiles_and_no_errors(stack):
    out = ok(client(stack.port, "bench", "-n", "4", "-c", "2", "--timeout", "40"))
    assert "4 turns ok, errors=0" in out, out
    for metric in ("toolcall_ms", "chat_ttft_ms", "first_sentence_ms"):
        assert re.search(rf"^{metric}\s+4\s+[\d.]+\s+[\d.]+$", out, re.M), out


@integration
def test_live_streams_turns_keeps_history_and_cancels(stack):
    script = "hello there\nhello there\nwho was columbus\n/cancel\n/quit\nnever sent\n"
    out = ok(client(stack.port, "live", stdin=script))
    assert out.count("assistant> ") >= 2, out
    prompts = [int(p) for p in re.findall(r"prompt (\d+) tokens", out)]
    # The same utterance twice: the second prompt also carries the first exchange.
    assert len(prompts) >= 2 and prompts[1] > prompts[0], out
    assert "(cancelling)" in out and "(cancelled" in out, out
    assert "never sent" not in out


@integration
def test_conversation_sends_growing_history(stack):
    out = ok(client(stack.port, "conversation", "--turns", "3"))
    assert len(re.findall(r"^assistant: ", out, re.M)) == 3, out
    histories = [int(h) for h in re.findall(r"history=(\d+) chars", out)]
    prompts = [int(p) for p in re.findall(r"prompt_tokens=(\d+)", out)]
    assert histories[0] == 0 and histories == sorted(histories) and histories[2] > 0, out
    assert prompts == sorted(prompts) and prompts[2] > prompts[0], out
    assert "conversation done: 3 turns" in out


@integration
def test_tool_reports_accuracy_on_the_examples_the_model_learned(stack, tmp_path):
    cases = tmp_path / "cases.jsonl"
    cases.write_text("".join(json.dumps({"text": text, "label": "yes" if label else "no"}) + "\n"
                             for text, label in TOOL_EXAMPLES))
    out = ok(client(stack.port, "tool", "--file", str(cases), "--min-accuracy", "0.9"))
    accuracy = re.search(rf"^accuracy ([\d.]+)% \((\d+)/{len(TOOL_EXAMPLES)}\)", out, re.M)
    assert accuracy and float(accuracy.group(1)) >= 90.0, out
    assert re.search(r"^toolcall latency p50 [\d.]+ ms p95 [\d.]+ ms", out, re.M), out


@integration
def test_tool_replays_its_builtin_cases(stack):
    out = ok(client(stack.port, "tool", "--limit", "6", "-c", "2"))
    assert re.search(r"^accuracy [\d.]+% \(\d+/6\)", out, re.M), out


@integration
def test_personality_switches_on_the_stack_and_every_ack_matches(stack):
    out = ok(client(stack.port, "personality", "--switches", "2", "--delay", "0",
                    "--temperature", "0.7"))
    assert re.search(r"^--- switch 2/2: persona_style=religious gender=woman history=\d+", out,
                     re.M), out
    assert len(re.findall(r"^assistant: ", out, re.M)) == 3, out
    prompts = [int(p) for p in re.findall(r"prompt_tokens=(\d+)", out)]
    assert prompts == sorted(prompts) and prompts[2] > prompts[0], out  # the history grows
    assert "personality done: 3 turns, 2 switches, every ack matched" in out


@integration
def test_gender_switches_on_the_stack(stack):
    out = ok(client(stack.port, "gender", "--switches", "1", "--delay", "0",
                    "--personality", "savage"))
    assert "--- switch 1/1: persona_style=savage gender=man" in out, out
    assert "gender done: 2 turns, 1 switches, every ack matched" in out


@integration
def test_screen_analysis_gets_the_toolcall_before_the_chat_stream(stack):
    out = ok(client(stack.port, "screen_analysis"))
    assert len(re.findall(r"^toolcall status=(yes|no) ", out, re.M)) == 3, out
    assert out.count("reply: ") == 3, out
    assert re.search(r"^screen_analysis done: toolcall first in 3/3, yes \d/3$", out, re.M), out


@integration
def test_tool_max_steps_skips_the_longer_builtin_cases(stack):
    out = ok(client(stack.port, "tool", "--max-steps", "2", "-c", "2"))
    assert "skipping 1 cases with more than 2 steps" in out, out
    assert re.search(r"^ok  |^MISS", out, re.M) and "[2/2] " in out, out
    assert re.search(r"^accuracy [\d.]+% \(\d+/20\)", out, re.M), out


@integration
def test_live_switches_persona_mid_session(stack, tmp_path):
    personas = tmp_path / "personas.toml"
    # nova differs from anna_flirty in gender only, so the second prompt grows by the history
    personas.write_text('[nova]\npersonality = "flirty"\ngender = "man"\n')
    out = ok(client(stack.port, "live", "--persona", "anna_flirty", "--persona-file",
                    str(personas), stdin="hello there\n/persona nova\nhello there\n/quit\n"))
    assert "persona anna_flirty (persona_style=flirty gender=woman)" in out, out
    assert "(now persona nova (persona_style=flirty gender=man)" in out, out
    assert out.count("assistant> ") == 2, out
    prompts = [int(p) for p in re.findall(r"prompt (\d+) tokens", out)]
    assert len(prompts) == 2 and prompts[1] > prompts[0], out


@integration
@pytest.mark.parametrize("args", [["warmup"], ["bench", "-n", "2", "-c", "2"], ["live"],
                                  ["conversation"], ["tool"], ["personality", "--delay", "0"],
                                  ["gender", "--delay", "0"], ["screen_analysis"]],
                         ids=lambda a: a[0])
def test_wrong_api_key_exits_nonzero_with_one_line(stack, args):
    result = client(stack.port, *args, stdin="hello\n", key="wrong-key", timeout=30)
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "authentication_failed" in lines[0], result.stderr
    assert lines[0].startswith(f"{args[0]}: ")


@integration
def test_unreachable_server_exits_nonzero_with_one_line():
    result = client(free_port(), "warmup", timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith("warmup: cannot connect to ws://127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ pure


def test_ws_url_appends_ws_path_and_api_key():
    assert ws_url("ws://127.0.0.1:8000", "k") == "ws://127.0.0.1:8000/ws?api_key=k"
    assert ws_url("ws://h:1/ws/", "") == "ws://h:1/ws"
    assert ws_url("http://h:1", "") == "ws://h:1/ws"
    assert ws_url("h:1") == "ws://h:1/ws"
    assert ws_url("wss://h/ws?api_key=a", "b") == "wss://h/ws?api_key=a"
    with pytest.raises(ClientFailure):
        ws_url("ftp://h")


def test_flags_override_env():
    parser = argparse.ArgumentParser()
    add_connection_arguments(parser)
    env = {"SERVER_WS_URL": "ws://env:1", "TEXT_API_KEY": "env-key", "RECV_TIMEOUT_SEC": "7",
           "GENDER": "woman", "PERSONALITY": "flirty"}
    from_env = settings_from(parser.parse_args([]), env)
    assert from_env.url == "ws://env:1/ws?api_key=env-key"
    assert from_env.recv_timeout_s == 7.0
    assert from_env.persona_fields() == {"gender": "woman", "persona_style": "flirty"}
    flags = settings_from(parser.parse_args(["--url", "ws://flag:2", "--api-key", "f",
                                             "--recv-timeout", "3", "--style", "nerdy",
                                             "--no-chat-prompt"]), env)
    assert flags.url == "ws://flag:2/ws?api_key=f" and flags.recv_timeout_s == 3.0
    assert flags.persona_fields() == {}
    assert flags.shown_url == "ws://flag:2/ws?api_key=***"
    with pytest.raises(ClientFailure):
        settings_from(parser.parse_args([]), {"RECV_TIMEOUT_SEC": "soon"})


def test_turn_recorder_times_each_stage_and_raises_on_error():
    rec = TurnRecorder("r1", "hi")
    assert not rec.feed({"type": "ack"}, 0.001)
    rec.feed({"type": "toolcall", "status": "no"}, 0.010)
    rec.feed({"type": "token", "text": "Hello"}, 0.020)
    rec.feed({"type": "token", "text": " there."}, 0.030)
    rec.feed({"type": "token", "text": " Bye"}, 0.040)
    rec.feed({"type": "final", "text": "Hello there. Bye"}, 0.050)
    assert rec.feed({"type": "done", "usage": {"completion_tokens": 3}}, 0.060)
    r = rec.result
    assert (r.ack_ms, r.toolcall_ms, r.first_token_ms, r.first_sentence_ms, r.total_ms) == \
        pytest.approx((1, 10, 20, 40, 60))
    assert r.tool_status == "no" and r.text == "Hello there. Bye" and not r.cancelled
    with pytest.raises(ClientFailure, match="queue_timeout: busy"):
        TurnRecorder("r2", "hi").feed({"type": "error", "error_code": "queue_timeout",
                                       "message": "busy"}, 0.1)


def test_percentile_interpolates():
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)


@pytest.mark.parametrize("name", sorted([*CLIENTS, *ALIASES]))
def test_every_client_takes_the_sampling_flags_in_both_spellings(name):
    args = build_parser().parse_args([name, "--temperature", "0.5", "--top_p", "0.9",
                                      "--top-k", "20", "--min_p", "0.1", "--repetition_penalty",
                                      "1.05", "--presence-penalty", "0.2",
                                      "--frequency_penalty", "0.3"])
    assert sampling_from(args) == {"temperature": 0.5, "top_p": 0.9, "top_k": 20, "min_p": 0.1,
                                   "repetition_penalty": 1.05, "presence_penalty": 0.2,
                                   "frequency_penalty": 0.3}
    assert sampling_from(build_parser().parse_args([name])) == {}


def test_sampling_reaches_the_settings_and_no_sanitize_turns_cleanup_off():
    args = build_parser().parse_args(["warmup", "--top-k", "5", "--no-sanitize"])
    assert settings_from(args, {}).sampling == {"top_k": 5, "sanitize_output": False}
    with pytest.raises(SystemExit):  # argparse refuses a top_k that is not an integer
        build_parser().parse_args(["warmup", "--top-k", "0.5"])


def test_personality_cycle_keeps_the_single_process_clients_order_alternating_genders():
    cycle = personality_cycle(7)
    assert [p.personality for p in cycle] == ["flirty", "savage", "religious", "delulu",
                                              "spiritual", "flirty", "savage"]
    assert [p.gender for p in cycle] == ["woman", "man", "woman", "man", "woman", "man", "woman"]
    assert {p.gender for p in personality_cycle(4, "Male")} == {"man"}
    assert personality_cycle(1)[0].fields() == {"persona_style": "flirty", "gender": "woman"}


def test_gender_cycle_alternates_in_one_personality():
    assert [(p.personality, p.gender) for p in gender_cycle(3, "savage")] == [
        ("savage", "woman"), ("savage", "man"), ("savage", "woman")]
    assert gender_cycle(2)[1].fields() == {"gender": "man"}  # the server's default style


def test_ack_mismatch_names_what_the_server_changed():
    asked = PersonaPreset(personality="savage", gender="man")
    assert ack_mismatch(asked, {"persona_style": "savage", "gender": "man"}) is None
    assert ack_mismatch(asked, {"personality": "Savage", "assistant_gender": "man"}) is None
    assert ack_mismatch(asked, None) is None and ack_mismatch(asked, {}) is None
    assert ack_mismatch(asked, {"persona_style": "wholesome", "gender": "woman"}) == \
        "personality=wholesome (asked savage), gender=woman (asked man)"


def test_history_gets_one_line_per_speaker():
    history = with_exchange("", "hi", "Hello!\nUser: not the user\n")
    assert history == "User: hi\nAssistant: Hello! User: not the user\n"
    assert with_exchange(history, "  two\n lines ", "") == history + "User: two lines\n"


def test_toolcall_is_read_in_both_shapes():
    new_yes = {"type": "toolcall", "status": "yes", "raw": [{"name": "take_screenshot"}]}
    assert tool_calls(new_yes["raw"]) == ["take_screenshot"] and tool_calls([]) == []
    assert tool_calls("yes") is None
    assert describe_toolcall(new_yes) == \
        'status=yes calls=take_screenshot raw=[{"name": "take_screenshot"}]'
    assert describe_toolcall({"status": "no", "raw": "no"}) == 'status=no raw="no"'
    # no status: the raw decides, in either shape
    assert tool_status({"raw": [{"name": "take_screenshot"}]}) == "yes"
    assert tool_status({"raw": []}) == "no" and tool_status({"raw": "Yes"}) == "yes"


def test_final_text_prefers_normalized_text_and_toolcall_order_is_recorded():
    rec = TurnRecorder("r", "hi")
    rec.feed({"type": "token", "text": "Hi"}, 0.01)
    rec.feed({"type": "toolcall", "status": "no", "raw": []}, 0.02)
    rec.feed({"type": "final", "normalized_text": "Hi.", "text": "Hi!!!"}, 0.03)
    assert rec.result.text == "Hi." and rec.result.tokens_at_toolcall == 1
    assert order_problem(rec.result) == "1 chat tokens came before the toolcall"
    old = TurnRecorder("r", "hi")
    old.feed({"type": "toolcall", "status": "yes", "raw": "yes"}, 0.01)
    old.feed({"type": "final", "text": "Sure."}, 0.02)
    assert old.result.text == "Sure." and order_problem(old.result) is None
    assert order_problem(TurnRecorder("r", "hi").result) == "no toolcall (is a tool model deployed?)"


def test_warmup_result_lines_keep_the_single_process_clients_keys():
    rec = TurnRecorder("r", "hi")
    rec.feed({"type": "token", "text": "Hey"}, 0.010)
    rec.feed({"type": "token", "text": " you."}, 0.015)
    rec.feed({"type": "done", "usage": {}}, 0.040)
    metrics, final = result_lines(rec.result, "second")
    assert metrics == {"type": "metrics", "phase": "second", "ttfb_ms": 10.0, "total_ms": 40.0,
                       "stream_ms": 30.0, "chunks": 2, "chars": 8}
    assert final == {"type": "final_text", "phase": "second", "text": "Hey you."}
    tool_only, _ = result_lines(TurnRecorder("r", "hi").result)
    assert tool_only["ttfb_ms"] is None and tool_only["stream_ms"] is None


def test_tool_cases_take_steps_and_max_steps_skips_longer_cases(tmp_path):
    path = tmp_path / "cases.jsonl"
    path.write_text('{"text": "look", "label": true}\n\n'
                    '{"steps": [{"text": "a", "label": "no"}, {"text": "b", "label": "1"}]}\n')
    cases = load_cases(path)
    assert cases == [Case((Step("look", "yes"),)), Case((Step("a", "no"), Step("b", "yes")))]
    assert select_cases(cases, None, 1) == ([cases[0]], 1)
    assert select_cases(cases, 1, 1) == ([cases[0]], 0)  # --limit applies first
    assert select_cases(cases, None, 0) == (cases, 0)  # 0: no cap
    assert any(len(c.steps) > 1 for c in BUILTIN_CASES)
    path.write_text('{"steps": []}\n')
    with pytest.raises(ClientFailure, match=r"cases.jsonl:1: expected"):
        load_cases(path)


def test_persona_file_reads_toml_and_json_and_names_a_bad_entry(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text('[nova]\npersonality = "nerdy"\n\n[bob]\ntext = "You are Bob."\n')
    presets = load_persona_file(toml)
    assert presets["nova"].fields() == {"persona_style": "nerdy"}
    assert presets["bob"].fields() == {"persona_text": "You are Bob."}
    js = tmp_path / "p.json"
    js.write_text('{"ada": {"gender": "woman", "personality": "nerdy"}}')
    assert load_persona_file(js)["ada"] == PersonaPreset(personality="nerdy", gender="woman")
    toml.write_text('[nova]\npersonality = "nerdy"\nvoice = "deep"\n')
    with pytest.raises(ClientFailure, match="persona 'nova': Object contains unknown field `voice`"):
        load_persona_file(toml)
    with pytest.raises(ClientFailure, match="cannot read persona file"):
        load_persona_file(tmp_path / "missing.toml")


def test_live_state_switches_presets_and_keeps_the_history():
    state = LiveState("anna_flirty")
    assert state.persona_fields() == BUILTIN_PRESETS["anna_flirty"].fields()
    state.record("hi", "Hello.")
    assert state.command("/persona leo_nerdy").startswith("(now persona leo_nerdy")
    assert state.persona_fields() == {"persona_style": "nerdy", "gender": "man"}
    assert state.history == "User: hi\nAssistant: Hello.\n"
    assert state.command("/persona nobody").startswith("(unknown persona 'nobody'")
    assert state.persona_fields() == {"persona_style": "nerdy", "gender": "man"}
    assert state.command("how are you") is None and state.command("/quit") is None
    assert state.command("/reset") == "(history cleared)" and state.history == ""
    assert state.command("/reload") == "(no --persona-file to reload)"
    assert LiveState().persona_fields() is None  # the flags' persona
    off = LiveState("anna_flirty", switching=False)
    assert off.persona_fields() is None
    assert off.command("/persona leo_nerdy") == "(persona switches are off with --no-chat-prompt)"
    with pytest.raises(ClientFailure, match="unknown persona 'nobody'"):
        LiveState("nobody")


def test_live_state_reloads_the_persona_file_when_it_changes(tmp_path):
    path = tmp_path / "personas.toml"
    path.write_text('[nova]\npersonality = "nerdy"\n')
    state = LiveState("nova", path)
    assert state.reload() is None  # unchanged on disk: nothing to do
    path.write_text('[nova]\npersonality = "savage"\ngender = "man"\n\n[ada]\ngender = "woman"\n')
    assert state.reload() == f"(reloaded {path}: {len(BUILTIN_PRESETS) + 2} personas; nova changed)"
    assert state.persona_fields() == {"persona_style": "savage", "gender": "man"}
    path.write_text("[nova\n")
    assert state.reload().startswith("(reload failed, keeping the personas I had: ")
    assert state.persona_fields() == {"persona_style": "savage", "gender": "man"}
    assert state.reload() is None  # a broken file is reported once, not before every turn
    path.write_text('[zed]\ngender = "man"\n')
    assert state.command("/persona zed").startswith("(now persona zed")  # found by re-reading
