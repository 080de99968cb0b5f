"""supervisor.toml decoding, the env overrides and endpoint resolution (pure, no processes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from supervisor.children import child_specs, stop_phases
from supervisor.config import (
    ConfigError,
    StackConfig,
    apply_env,
    load_config,
    load_stack,
    resolve,
    run_dir_of,
)
from workers.config import WorkerConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV = {"TEXT_API_KEY": "secret"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack.toml"
    path.write_text(text)
    return path


TWO_WORKERS = """
[[workers]]
name = "chat-0"
kind = "chat"
model = "builtin:tiny-chat"
[[workers]]
name = "tool-0"
kind = "tool"
model = "builtin:tiny-tool"
"""


def stack(tmp_path: Path, text: str = TWO_WORKERS) -> StackConfig:
    return load_config(write(tmp_path, text))


def test_default_file_runs_broker_chat_tool_and_front_on_port_8000(tmp_path: Path) -> None:
    cfg = load_stack(REPO_ROOT / "supervisor.toml", {**ENV, "RUN_DIR": str(tmp_path)})
    assert cfg.wsfront.port == 8000
    assert cfg.wsfront.deploy_mode == "both"
    assert [(w.name, w.kind, w.resolved_engine(), w.model, w.device) for w in cfg.workers] == [
        ("chat-0", "chat", "hf", "builtin:smollm2", "cpu"),
        ("tool-0", "tool", "classifier", "builtin:screenshot-intent", "cpu"),
    ]
    assert [(s.name, s.kind) for s in child_specs(cfg)] == [
        ("broker", "broker"), ("chat-0", "chat"), ("tool-0", "tool"), ("wsfront", "wsfront"),
    ]


def test_default_run_dir_is_relative_to_the_config_file_not_the_cwd(tmp_path: Path) -> None:
    cfg = load_config(REPO_ROOT / "supervisor.toml")
    assert cfg.supervisor.run_dir == str(REPO_ROOT / "run")
    nested = tmp_path / "etc"
    nested.mkdir()
    cfg = load_config(write(nested, '[supervisor]\nrun_dir = "state"\n' + TWO_WORKERS))
    assert cfg.supervisor.run_dir == str(nested / "state")


def test_unknown_key_is_one_line_naming_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[wsfront]\nprot = 8000\n" + TWO_WORKERS)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert "\n" not in message
    assert str(path) in message and "wsfront.prot" in message


def test_unknown_section_and_wrong_type_and_missing_field_name_the_key(tmp_path: Path) -> None:
    cases = {
        "[supervisr]\nrun_dir = 'x'\n": "supervisr",
        "[wsfront]\nport = 'eighty'\n": "wsfront.port",
        "[[workers]]\nkind = 'chat'\n": "workers[0].name",
        "[[workers]]\nname = 'a'\nkind = 'chef'\n": "workers[0].kind",
        "[supervisor]\nstartretries = 1.5\n": "supervisor.startretries",
    }
    for text, key in cases.items():
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_config(write(tmp_path, text))


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[broker\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_text_api_key_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^TEXT_API_KEY is required$"):
        apply_env(stack(tmp_path), {})
    with pytest.raises(ConfigError, match="TEXT_API_KEY is required"):
        apply_env(stack(tmp_path), {"TEXT_API_KEY": ""})
    assert apply_env(stack(tmp_path), ENV).wsfront.api_key == "secret"


def test_env_vars_override_the_file(tmp_path: Path) -> None:
    cfg = apply_env(
        stack(tmp_path),
        {
            **ENV,
            "WS_PORT": "9001",
            "CHAT_MODEL": "org/chat-7b",
            "TOOL_MODEL": "/models/intent",
            "CHAT_MAX_OUT": "150",
            "HISTORY_MAX_TOKENS": "2000",
            "USER_UTT_MAX_TOKENS": "100",
            "CONCURRENT_MODEL_CALL": "1",
            "WS_CANCEL_SENTINEL": "!!cancel",
            "WS_END_SENTINEL": "!!end",
            "INFERENCE_ENGINE": "vllm",
        },
    )
    front = cfg.wsfront
    assert (front.port, front.chat_max_out, front.concurrent_model_call) == (9001, 150, True)
    assert (front.cancel_sentinel, front.end_sentinel) == ("!!cancel", "!!end")
    chat, tool = cfg.workers
    assert (chat.model, chat.engine, chat.history_max_tokens, chat.user_utt_max_tokens) == (
        "org/chat-7b", "vllm", 2000, 100,
    )
    assert (tool.model, tool.engine, tool.history_max_tokens) == ("/models/intent", "", 3000)


def test_apply_env_does_not_change_its_input(tmp_path: Path) -> None:
    cfg = stack(tmp_path)
    apply_env(cfg, {**ENV, "WS_PORT": "9001", "CHAT_MODEL": "x", "DEPLOY_MODE": "chat"})
    assert cfg.wsfront.port == 8000 and cfg.wsfront.api_key == ""
    assert [w.model for w in cfg.workers] == ["builtin:tiny-chat", "builtin:tiny-tool"]


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("ON", True), ("0", False), ("false", False)])
def test_concurrent_model_call_accepts_the_usual_booleans(tmp_path: Path, value: str, expected: bool) -> None:
    cfg = apply_env(stack(tmp_path), {**ENV, "CONCURRENT_MODEL_CALL": value})
    assert cfg.wsfront.concurrent_model_call is expected


@pytest.mark.parametrize(
    "var, value",
    [
        ("WS_PORT", "eighty"),
        ("WS_PORT", "70000"),
        ("CHAT_MAX_OUT", "0"),
        ("HISTORY_MAX_TOKENS", "-3"),
        ("USER_UTT_MAX_TOKENS", "1.5"),
        ("CONCURRENT_MODEL_CALL", "maybe"),
        ("INFERENCE_ENGINE", "llamacpp"),
        ("DEPLOY_MODE", "all"),
        ("WS_END_SENTINEL", ""),
        ("MAX_CONCURRENT_CONNECTIONS", "0"),
        ("WS_IDLE_TIMEOUT_S", "soon"),
        ("WS_MAX_MESSAGES_PER_WINDOW", "-1"),
        ("WS_MAX_SEND_QUEUE_BYTES", "100"),
        ("WS_SOCKET_SEND_BUFFER_BYTES", "lots"),
    ],
)
def test_a_bad_env_value_is_an_error_naming_the_variable(tmp_path: Path, var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        apply_env(stack(tmp_path), {**ENV, var: value})


def test_connection_guard_env_vars_reach_the_front_and_zero_disables(tmp_path: Path) -> None:
    cfg = apply_env(stack(tmp_path), {
        **ENV, "MAX_CONCURRENT_CONNECTIONS": "3", "WS_HANDSHAKE_ACQUIRE_TIMEOUT_S": "0.2",
        "WS_IDLE_TIMEOUT_S": "0", "WS_MAX_MESSAGES_PER_WINDOW": "0", "WS_MESSAGE_WINDOW_SECONDS": "5",
        "WS_MAX_CANCELS_PER_WINDOW": "7", "WS_CANCEL_WINDOW_SECONDS": "2.5",
        "CHAT_PROMPT_UPDATE_MAX_PER_WINDOW": "4", "CHAT_PROMPT_UPDATE_WINDOW_SECONDS": "30"})
    front = cfg.wsfront
    assert (front.max_connections, front.handshake_acquire_timeout_s, front.idle_timeout_s) == (3, 0.2, 0)
    assert (front.max_messages_per_window, front.message_window_s) == (0, 5.0)
    assert (front.max_cancels_per_window, front.cancel_window_s) == (7, 2.5)
    assert (front.persona_updates_per_window, front.persona_update_window_s) == (4, 30.0)


def test_persona_budget_idle_close_code_and_sampling_bounds_come_from_the_env(tmp_path: Path) -> None:
    cfg = apply_env(stack(tmp_path), {**ENV, "CHAT_PROMPT_MAX_TOKENS": "1500",
                                      "WS_CLOSE_IDLE_CODE": "4100",
                                      "CHAT_TEMPERATURE_MIN": "0.1", "CHAT_TEMPERATURE_MAX": "0.9",
                                      "TOOL_HISTORY_TOKENS": "300", "EXACT_TOKEN_TRIM": "0"})
    assert {w.chat_prompt_max_tokens for w in cfg.workers if w.kind == "chat"} == {1500}
    assert {w.tool_history_tokens for w in cfg.workers if w.kind == "tool"} == {300}
    assert {w.exact_token_trim for w in cfg.workers if w.kind == "chat"} == {False}
    assert cfg.wsfront.idle_close_code == 4100
    bounds = cfg.wsfront.sampling_bounds()
    assert (bounds.temperature.low, bounds.temperature.high) == (0.1, 0.9)
    assert (bounds.top_p.low, bounds.top_p.high) == (0.6, 1.0)  # the Yap server's range
    defaults = apply_env(stack(tmp_path), ENV)
    assert {w.chat_prompt_max_tokens for w in defaults.workers if w.kind == "chat"} == {2000}
    assert defaults.wsfront.idle_close_code == 4000
    with pytest.raises(ConfigError, match="CHAT_TOP_K_MIN=9 is above _MAX=3"):
        apply_env(stack(tmp_path), {**ENV, "CHAT_TOP_K_MIN": "9", "CHAT_TOP_K_MAX": "3"})


def test_the_older_hub_token_name_is_mirrored_for_children() -> None:
    from supervisor.process import child_env
    assert child_env({"HUGGINGFACE_HUB_TOKEN": "t"})["HF_TOKEN"] == "t"
    assert child_env({"HUGGINGFACE_HUB_TOKEN": "t", "HF_TOKEN": "mine"})["HF_TOKEN"] == "mine"
    assert "HF_TOKEN" not in child_env({})


def test_send_buffer_env_vars_reach_the_front(tmp_path: Path) -> None:
    front = apply_env(stack(tmp_path), {**ENV, "WS_MAX_SEND_QUEUE_BYTES": "65536",
                                        "WS_SOCKET_SEND_BUFFER_BYTES": "16384"}).wsfront
    assert (front.max_send_queue_bytes, front.socket_send_buffer_bytes) == (65536, 16384)
    assert apply_env(stack(tmp_path), ENV).wsfront.max_send_queue_bytes == 1 << 20


def test_equal_sentinels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must differ"):
        apply_env(stack(tmp_path), {**ENV, "WS_CANCEL_SENTINEL": "x", "WS_END_SENTINEL": "x"})


@pytest.mark.parametrize("mode, names", [("chat", ["chat-0"]), ("tool", ["tool-0"]), ("both", ["chat-0", "tool-0"])])
def test_deploy_mode_keeps_only_the_deployed_kinds_and_the_front_follows(
    tmp_path: Path, mode: str, names: list[str]
) -> None:
    cfg = resolve(apply_env(stack(tmp_path), {**ENV, "DEPLOY_MODE": mode}))
    assert [w.name for w in cfg.workers] == names
    assert cfg.wsfront.deploy_mode == mode


def test_deploy_mode_needing_a_kind_that_has_no_worker_is_an_error(tmp_path: Path) -> None:
    only_chat = '[[workers]]\nname = "c"\nkind = "chat"\nmodel = "m"\n'
    with pytest.raises(ConfigError, match="DEPLOY_MODE=tool.*'tool'"):
        apply_env(stack(tmp_path, only_chat), {**ENV, "DEPLOY_MODE": "tool"})
    cfg = resolve(apply_env(stack(tmp_path, only_chat), ENV))
    assert cfg.wsfront.deploy_mode == "chat"


def test_resolve_puts_every_endpoint_in_the_run_dir(tmp_path: Path) -> None:
    cfg = resolve(apply_env(stack(tmp_path), {**ENV, "RUN_DIR": "/tmp/ts-x"}))
    assert cfg.supervisor.run_dir == "/tmp/ts-x"
    assert cfg.broker.frontend == "ipc:///tmp/ts-x/front.ipc"
    assert cfg.broker.backend == "ipc:///tmp/ts-x/workers.ipc"
    assert cfg.wsfront.broker == cfg.broker.frontend
    assert {w.connect for w in cfg.workers} == {cfg.broker.backend}


def test_explicit_tcp_endpoints_are_kept_and_wildcards_become_loopback_for_connecting(tmp_path: Path) -> None:
    text = '[broker]\nfrontend = "tcp://127.0.0.1:5555"\nbackend = "tcp://0.0.0.0:5556"\n' + TWO_WORKERS
    cfg = resolve(apply_env(stack(tmp_path, text), ENV))
    assert cfg.broker.backend == "tcp://0.0.0.0:5556"
    assert cfg.wsfront.broker == "tcp://127.0.0.1:5555"
    assert {w.connect for w in cfg.workers} == {"tcp://127.0.0.1:5556"}


def test_relative_run_dir_from_env_is_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = resolve(apply_env(stack(tmp_path), {**ENV, "RUN_DIR": "r"}))
    assert cfg.supervisor.run_dir == str(tmp_path / "r")
    assert run_dir_of(stack(tmp_path), {"RUN_DIR": "r"}) == tmp_path / "r"


def test_run_dir_too_long_for_a_unix_socket_is_a_clear_error(tmp_path: Path) -> None:
    long_dir = "/tmp/" + "d" * 100
    with pytest.raises(ConfigError, match="too long for unix sockets.*RUN_DIR"):
        resolve(apply_env(stack(tmp_path), {**ENV, "RUN_DIR": long_dir}))


def test_every_worker_and_the_front_keep_the_brokers_heartbeat(tmp_path: Path) -> None:
    import msgspec

    from wsfront.config import FrontConfig

    cfg = resolve(apply_env(stack(tmp_path, '[broker]\nheartbeat_interval_s = 0.5\nliveness = 6\n' + TWO_WORKERS),
                            ENV))
    beats = {(c.heartbeat_interval_s, c.heartbeat_liveness) for c in [cfg.wsfront, *cfg.workers]}
    assert beats == {(0.5, 6)}
    # as the children read them: their config files
    for spec in child_specs(cfg)[1:]:
        kind = FrontConfig if spec.kind == "wsfront" else WorkerConfig
        child = msgspec.json.decode(spec.config_json(), type=kind)
        assert (child.heartbeat_interval_s, child.heartbeat_liveness) == (0.5, 6), spec.name
    default = resolve(apply_env(stack(tmp_path), ENV))
    beats = {(c.heartbeat_interval_s, c.heartbeat_liveness) for c in [default.wsfront, *default.workers]}
    assert beats == {(default.broker.heartbeat_interval_s, default.broker.liveness)}


@pytest.mark.parametrize("table, key", [
    ("[wsfront]\nheartbeat_interval_s = 1.0\n", "wsfront.heartbeat_interval_s"),
    ("[wsfront]\nheartbeat_liveness = 4\n", "wsfront.heartbeat_liveness"),
    (TWO_WORKERS + "heartbeat_liveness = 4\n", "workers[1].heartbeat_liveness"),
])
def test_a_heartbeat_of_a_workers_or_the_fronts_own_is_refused_naming_the_key(
    tmp_path: Path, table: str, key: str
) -> None:
    text = table if table.startswith(TWO_WORKERS) else table + TWO_WORKERS
    with pytest.raises(ConfigError, match=f"stack.toml: {re.escape(key)}: the heartbeat is set once, in \\[broker\\]"):
        stack(tmp_path, text)


@pytest.mark.parametrize("setting", ["heartbeat_interval_s = 0", "liveness = 0"])
def test_a_broker_heartbeat_that_cannot_work_is_refused(tmp_path: Path, setting: str) -> None:
    with pytest.raises(ConfigError, match="\\[broker\\] needs heartbeat_interval_s > 0 and liveness >= 1"):
        resolve(apply_env(stack(tmp_path, f"[broker]\n{setting}\n" + TWO_WORKERS), ENV))


def test_the_stack_model_cache_reaches_every_worker_unless_one_sets_its_own(tmp_path: Path) -> None:
    text = (
        '[supervisor]\nmodel_cache = "/cache/models"\n' + TWO_WORKERS + 'model_cache = "/other"\n'
    )
    chat, tool = resolve(apply_env(stack(tmp_path, text), ENV)).workers
    assert (chat.model_cache, tool.model_cache) == ("/cache/models", "/other")


@pytest.mark.parametrize(
    "workers, message",
    [
        ([], "no \\[\\[workers\\]\\]"),
        ([WorkerConfig(name="a", kind="chat", model="m"), WorkerConfig(name="a", kind="tool", model="m")], "used twice"),
        ([WorkerConfig(name="broker", kind="chat", model="m")], "'broker'"),
        ([WorkerConfig(name="a/b", kind="chat", model="m")], "'a/b'"),
        ([WorkerConfig(name="a", kind="tool", engine="vllm", model="m")], "not a tool engine"),
        ([WorkerConfig(name="a", kind="chat", engine="classifier", model="m")], "not a chat engine"),
        ([WorkerConfig(name="a", kind="chat", model="m", device="gpu0")], "device 'gpu0'"),
        ([WorkerConfig(name="a", kind="chat", model="")], "model is empty"),
    ],
)
def test_resolve_refuses_workers_that_cannot_run(workers: list[WorkerConfig], message: str) -> None:
    cfg = StackConfig(workers=workers)
    with pytest.raises(ConfigError, match=message):
        resolve(apply_env(cfg, ENV))


def test_stop_order_is_front_then_workers_then_broker(tmp_path: Path) -> None:
    cfg = resolve(apply_env(stack(tmp_path), ENV))
    assert stop_phases(child_specs(cfg)) == [["wsfront"], ["chat-0", "tool-0"], ["broker"]]


def test_several_fronts_are_children_of_their_own_on_one_port(tmp_path: Path) -> None:
    cfg = resolve(apply_env(stack(tmp_path), {**ENV, "WS_FRONT_PROCESSES": "3"}))
    fronts = [s for s in child_specs(cfg) if s.kind == "wsfront"]
    assert [s.name for s in fronts] == ["wsfront-0", "wsfront-1", "wsfront-2"]
    assert {s.config.port for s in fronts} == {cfg.wsfront.port}
    assert stop_phases(child_specs(cfg))[0] == ["wsfront-0", "wsfront-1", "wsfront-2"]
    with pytest.raises(ConfigError, match="WS_FRONT_PROCESSES='0'"):
        apply_env(stack(tmp_path), {**ENV, "WS_FRONT_PROCESSES": "0"})


def test_child_config_is_the_struct_as_json_with_the_api_key(tmp_path: Path) -> None:
    import msgspec

    from wsfront.config import FrontConfig

    cfg = resolve(apply_env(stack(tmp_path), ENV))
    front = next(s for s in child_specs(cfg) if s.kind == "wsfront")
    decoded = msgspec.json.decode(front.config_json(), type=FrontConfig)
    assert decoded == cfg.wsfront and decoded.api_key == "secret"
    assert front.argv(Path("/r/conf/wsfront.json"))[1:] == ["-m", "wsfront", "--config", "/r/conf/wsfront.json"]


def test_python_m_wsfront_applies_the_env_as_the_supervisor_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import msgspec

    from wsfront.__main__ import parse_config
    from wsfront.config import FrontConfig
    conf = tmp_path / "front.json"
    conf.write_bytes(msgspec.json.encode(FrontConfig(broker="ipc:///x", port=9000)))
    env = {**ENV, "WS_PORT": "9100", "WS_IDLE_TIMEOUT_S": "7"}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    alone = parse_config(["--config", str(conf)])
    flagged = parse_config(["--config", str(conf), "--port", "9200"])
    supervised = apply_env(stack(tmp_path), env).wsfront
    # env over the file, flags over the env; the same fields as the supervisor's front gets
    assert (alone.port, alone.idle_timeout_s, alone.api_key) == (9100, 7.0, "secret")
    assert (supervised.port, supervised.idle_timeout_s) == (alone.port, alone.idle_timeout_s)
    assert flagged.port == 9200
