"""Which processes get CurveZMQ keys: tcp:// endpoints only, from [broker] curve_dir or
RUN_DIR/keys, off with "none" (pure config resolution)."""

from __future__ import annotations

from pathlib import Path

from supervisor.config import apply_env, curve_dir_of, load_config, resolve

ENV = {"TEXT_API_KEY": "k"}
WORKERS = """
[[workers]]
name = "chat-0"
kind = "chat"
model = "m"
[[workers]]
name = "tool-0"
kind = "tool"
model = "m"
connect = "ipc:///elsewhere/workers.ipc"
"""


def resolved(tmp_path: Path, broker: str):
    path = tmp_path / "s.toml"
    path.write_text(f"[broker]\n{broker}\n{WORKERS}")
    return resolve(apply_env(load_config(path), {**ENV, "RUN_DIR": str(tmp_path / "run")}))


def test_ipc_endpoints_get_no_keys(tmp_path: Path) -> None:
    cfg = resolved(tmp_path, "")
    assert cfg.broker.curve_dir == "" and cfg.wsfront.curve_dir == ""
    assert {w.curve_dir for w in cfg.workers} == {""}


def test_a_tcp_backend_makes_the_broker_a_curve_server_and_its_workers_clients(tmp_path: Path) -> None:
    cfg = resolved(tmp_path, 'backend = "tcp://0.0.0.0:5556"')
    keys = str(tmp_path / "run" / "keys")
    assert cfg.broker.curve_dir == keys
    chat, tool = cfg.workers
    assert (chat.connect, chat.curve_dir) == ("tcp://127.0.0.1:5556", f"{keys}/local")
    assert tool.curve_dir == ""  # it connects over ipc elsewhere
    assert cfg.wsfront.curve_dir == ""  # the front still talks ipc


def test_curve_dir_is_relative_to_the_config_file_and_none_turns_curve_off(tmp_path: Path) -> None:
    cfg = resolved(tmp_path, 'frontend = "tcp://127.0.0.1:5555"\ncurve_dir = "keys"')
    assert cfg.broker.curve_dir == str(tmp_path / "keys")
    assert cfg.wsfront.curve_dir == str(tmp_path / "keys" / "local")
    assert curve_dir_of(load_config(tmp_path / "s.toml"), {}) == tmp_path / "keys"
    off = resolved(tmp_path, 'backend = "tcp://127.0.0.1:5556"\ncurve_dir = "none"')
    assert off.broker.curve_dir == "" and off.workers[0].curve_dir == ""


def test_the_keys_command_defaults_to_the_run_dir(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(WORKERS)
    assert curve_dir_of(load_config(path), {"RUN_DIR": str(tmp_path / "r")}) == tmp_path / "r" / "keys"
