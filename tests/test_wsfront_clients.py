"""The test clients (``python -m wsfront.clients ...``) run as real subprocesses against the
whole stack started by the supervisor; a few pure checks of their URL, settings and timings
need no stack."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import pytest

from tests.stack import API_KEY, ROOT, Stack, free_port
from workers.builtin_models import TOOL_EXAMPLES
from wsfront.clients import ClientFailure, TurnRecorder, percentile
from wsfront.clients.connection import add_connection_arguments, settings_from, ws_url

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


# ------------------------------------------------------------------ against the stack


@integration
def test_warmup_prints_ack_toolcall_reply_and_metrics(stack):
    out = ok(client(stack.port, "warmup", "--json", "--gender", "man", "--personality", "nerdy",
                    "who was Columbus?"))
    assert re.search(r"^ack \+[\d.]+ ms .*persona_style=nerdy gender=man", out, re.M), out
    assert re.search(r"^toolcall status=(yes|no) ", out, re.M), out
    assert re.search(r"^reply: .+", out, re.M), out
    metrics = re.search(r"^metrics (.*)$", out, re.M)
    assert metrics, out
    for name in ("ack_ms", "toolcall_ms", "ttft_ms", "first_sentence_ms", "total_ms", "tokens"):
        assert re.search(rf"\b{name}=[\d.]+", metrics.group(1)), metrics.group(1)
    line = json.loads(out.strip().splitlines()[-1])
    assert line["type"] == "metrics" and line["completion_tokens"] > 0


@integration
def test_warmup_double_ttfb_tags_both_phases_on_one_connection(stack):
    out = ok(client(stack.port, "warmup", "--double-ttfb", "hello there"))
    for phase in ("first", "second"):
        assert f"phase={phase} toolcall status=" in out, out
        assert re.search(rf"^phase={phase} metrics .*ttft_ms=[\d.]+", out, re.M), out
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
@pytest.mark.parametrize("args", [["warmup"], ["bench", "-n", "2", "-c", "2"], ["live"],
                                  ["conversation"], ["tool"]], ids=lambda a: a[0])
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
