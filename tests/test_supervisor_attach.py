"""``attach``: the WorkerConfig a runtime request becomes, and what it refuses (pure)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from supervisor.attach import attached_worker, next_worker_name
from supervisor.config import ConfigError, StackConfig, apply_env, load_config, resolve
from supervisor.control import AttachRequest

ENV = {"TEXT_API_KEY": "k", "RUN_DIR": "/tmp/ts-attach"}
STACK = """
[supervisor]
model_cache = "/cache"
[[workers]]
name = "chat-0"
kind = "chat"
engine = "hf"
model = "builtin:tiny-chat"
capacity = 8
history_max_tokens = 1000
[[workers]]
name = "tool-0"
kind = "tool"
model = "builtin:tiny-tool"
"""


def stack(tmp_path: Path, text: str = STACK) -> StackConfig:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return resolve(apply_env(load_config(path), ENV))


def attach(cfg: StackConfig, **fields):
    names = {w.name for w in cfg.workers} | {"broker", "wsfront"}
    return attached_worker(cfg, cfg.workers, AttachRequest(**fields), taken=names)


def test_names_are_kind_and_the_lowest_free_number() -> None:
    assert next_worker_name("chat", {"chat-0", "tool-0"}) == "chat-1"
    assert next_worker_name("chat", {"chat-1"}) == "chat-0"
    assert next_worker_name("tool", {"tool-0", "tool-1", "tool-3"}) == "tool-2"


def test_an_attached_worker_copies_the_first_of_its_kind_and_connects_to_the_stack(tmp_path: Path) -> None:
    cfg = stack(tmp_path)
    w = attach(cfg, kind="chat")
    chat0 = cfg.workers[0]
    assert w.name == "chat-1"
    assert (w.engine, w.model, w.capacity, w.history_max_tokens) == ("hf", "builtin:tiny-chat", 8, 1000)
    assert w.connect == cfg.broker.backend == chat0.connect
    assert w.model_cache == "/cache"
    assert msgspec.structs.replace(w, name="chat-0") == chat0


def test_request_fields_win_over_the_copied_ones(tmp_path: Path) -> None:
    w = attach(stack(tmp_path), kind="tool", name="tool-b", model="/models/intent", capacity=4)
    assert (w.name, w.kind, w.engine, w.model, w.capacity) == ("tool-b", "tool", "", "/models/intent", 4)
    assert w.resolved_engine() == "classifier"


def test_a_kind_with_no_worker_left_needs_a_model(tmp_path: Path) -> None:
    cfg = stack(tmp_path)
    chat_only = [w for w in cfg.workers if w.kind == "chat"]  # tool-0 was detached
    taken = {"chat-0", "broker", "wsfront"}
    with pytest.raises(ConfigError, match="no tool worker to copy from; name a --model"):
        attached_worker(cfg, chat_only, AttachRequest(kind="tool"), taken)
    w = attached_worker(cfg, chat_only, AttachRequest(kind="tool", model="builtin:tiny-tool"), taken)
    assert (w.name, w.resolved_engine(), w.connect) == ("tool-0", "classifier", cfg.broker.backend)


def test_an_attached_worker_keeps_the_brokers_heartbeat_with_or_without_a_template(tmp_path: Path) -> None:
    cfg = stack(tmp_path, "[broker]\nheartbeat_interval_s = 0.5\nliveness = 6\n" + STACK)
    copied = attach(cfg, kind="chat")
    fresh = attached_worker(cfg, [cfg.workers[0]], AttachRequest(kind="tool", model="builtin:tiny-tool"),
                            taken={"chat-0", "broker", "wsfront"})
    assert {(w.heartbeat_interval_s, w.heartbeat_liveness) for w in (copied, fresh)} == {(0.5, 6)}


def test_a_kind_the_front_does_not_serve_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(STACK)
    cfg = resolve(apply_env(load_config(path), {**ENV, "DEPLOY_MODE": "chat"}))
    with pytest.raises(ConfigError, match="the front serves chat turns only.*a tool worker would get none"):
        attach(cfg, kind="tool", model="builtin:tiny-tool")


@pytest.mark.parametrize("fields, message", [
    ({"kind": "chat", "name": "chat-0"}, "a process named 'chat-0' already runs"),
    ({"kind": "chat", "name": "broker"}, "a process named 'broker' already runs"),
    ({"kind": "chat", "name": "supervisor"}, "attach: name 'supervisor'"),
    ({"kind": "chat", "name": "../x"}, "attach: name '../x'"),
    ({"kind": "chat", "engine": "classifier"}, "attach: chat-1: engine 'classifier' is not a chat engine"),
    ({"kind": "tool", "engine": "vllm"}, "not a tool engine"),
    ({"kind": "chat", "device": "gpu0"}, "device 'gpu0'"),
    ({"kind": "chat", "device": "cuda:auto"}, "is for \\[\\[workers\\]\\] tables"),
    ({"kind": "chat", "capacity": -1}, "capacity must be >= 1"),
    ({"kind": "chat", "python": "/nonexistent/python"}, "is not an executable"),
    ({"kind": "chat", "gpu_frac": 1.5}, "gpu_frac 1.5"),
])
def test_a_request_that_cannot_run_is_refused_in_one_line(tmp_path: Path, fields, message) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        attach(stack(tmp_path), **fields)
    assert "\n" not in str(err.value) and str(err.value).startswith("attach: ")


def test_gpu_memory_already_held_by_running_workers_is_respected(tmp_path: Path) -> None:
    cfg = stack(tmp_path, STACK.replace('engine = "hf"', 'engine = "hf"\ndevice = "cuda:0"'))
    assert cfg.workers[0].gpu_frac == pytest.approx(0.90)  # alone on GPU 0
    with pytest.raises(ConfigError, match="GPU 0: gpu_frac of chat-0, chat-1 adds up to 1.60.*--gpu-frac"):
        attach(cfg, kind="chat")  # the copy would share GPU 0 at the default 0.70
    assert attach(cfg, kind="chat", gpu_frac=0.1).gpu_frac == pytest.approx(0.1)
    other = attach(cfg, kind="chat", device="cuda:1")
    assert (other.device, other.gpu_frac) == ("cuda:1", pytest.approx(0.90))


def test_another_engine_does_not_inherit_the_copied_workers_interpreter(tmp_path: Path) -> None:
    cfg = stack(tmp_path, STACK.replace('engine = "hf"', 'engine = "hf"\npython = "/usr/bin/env"'))
    assert attach(cfg, kind="chat").python == "/usr/bin/env"
    assert attach(cfg, kind="chat", engine="vllm").python == ""


def test_cpus_are_the_requests_not_the_copied_workers_and_must_exist_here(tmp_path: Path) -> None:
    cfg = stack(tmp_path, STACK.replace('engine = "hf"', 'engine = "hf"\ncpus = "1"'))
    names = {"chat-0", "tool-0", "broker", "wsfront"}
    request = AttachRequest(kind="chat")
    assert attached_worker(cfg, cfg.workers, request, names, host_cpus=(0, 1)).cpus == ""  # the plan's
    request = AttachRequest(kind="chat", cpus="0")
    assert attached_worker(cfg, cfg.workers, request, names, host_cpus=(0, 1)).cpus == "0"
    with pytest.raises(ConfigError, match="attach: chat-1: cpus '2-3': this host lets us use 0-1"):
        attached_worker(cfg, cfg.workers, AttachRequest(kind="chat", cpus="2-3"), names, host_cpus=(0, 1))
