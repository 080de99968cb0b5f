"""Where workers run: cuda:auto expansion, GPU detection parsing, the CPU plan (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import ConfigError, apply_env, load_config, resolve
from supervisor.placement import (
    Host,
    PlacementError,
    expand_gpu_workers,
    format_cpus,
    parse_cpus,
    parse_nvidia_smi,
    parse_visible_devices,
    plan_cpus,
)
from workers.config import WorkerConfig

ENV = {"TEXT_API_KEY": "k", "RUN_DIR": "/tmp/ts-place"}


def chat(name: str = "chat-0", **kw) -> WorkerConfig:
    return WorkerConfig(name=name, kind="chat", model="m", **kw)


def tool(name: str = "tool-0", **kw) -> WorkerConfig:
    return WorkerConfig(name=name, kind="tool", model="m", **kw)


def cores(n: int) -> tuple[int, ...]:
    return tuple(range(n))


# ---- GPUs -----------------------------------------------------------------------------------


def test_cuda_auto_declares_one_worker_per_gpu_named_from_the_table() -> None:
    workers = [chat("chat", device="cuda:auto"), tool("tool", device="cuda:auto"), chat("cpu-chat")]
    out = expand_gpu_workers(workers, ("0", "1", "2"))
    assert [(w.name, w.device) for w in out] == [
        ("chat-0", "cuda:0"), ("chat-1", "cuda:1"), ("chat-2", "cuda:2"),
        ("tool-0", "cuda:0"), ("tool-1", "cuda:1"), ("tool-2", "cuda:2"),
        ("cpu-chat", "cpu"),
    ]


def test_cuda_auto_keeps_the_ids_cuda_visible_devices_allows() -> None:
    [w0, w1] = expand_gpu_workers([chat("chat", device="cuda:auto")], ("2", "5"))
    assert (w0.name, w0.device, w1.name, w1.device) == ("chat-0", "cuda:2", "chat-1", "cuda:5")


def test_cuda_auto_without_a_gpu_or_with_uuids_is_refused() -> None:
    with pytest.raises(PlacementError, match="no GPU found"):
        expand_gpu_workers([chat("chat", device="cuda:auto")], ())
    with pytest.raises(PlacementError, match="needs GPU indices.*'GPU-1a2b'"):
        expand_gpu_workers([chat("chat", device="cuda:auto")], ("GPU-1a2b",))
    assert expand_gpu_workers([chat()], ()) == [chat()]  # nothing to expand: no GPU needed


def test_gpu_ids_come_from_cuda_visible_devices_or_nvidia_smi() -> None:
    assert parse_visible_devices("0,1") == ("0", "1")
    assert parse_visible_devices("") == ()
    assert parse_visible_devices("3,-1,4") == ("3",)  # CUDA stops at the first invalid id
    listing = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)\n"
               "  MIG 3g.40gb     Device  0: (UUID: MIG-bbbb)\n"
               "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)\n")
    assert parse_nvidia_smi(listing) == ("0", "1")
    assert parse_nvidia_smi("") == ()


def test_expansion_runs_before_the_gpu_memory_split(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[workers]]\nname = "chat"\nkind = "chat"\nmodel = "m"\ndevice = "cuda:auto"\n'
                    '[[workers]]\nname = "tool"\nkind = "tool"\nmodel = "m"\ndevice = "cuda:auto"\n')
    cfg = resolve(apply_env(load_config(path), ENV), Host(cpus=cores(8), gpus=("0", "1")))
    assert [(w.name, w.device, w.gpu_frac) for w in cfg.workers] == [
        ("chat-0", "cuda:0", pytest.approx(0.70)), ("chat-1", "cuda:1", pytest.approx(0.70)),
        ("tool-0", "cuda:0", pytest.approx(0.20)), ("tool-1", "cuda:1", pytest.approx(0.20)),
    ]
    with pytest.raises(ConfigError, match="chat: device 'cuda:auto' but no GPU found"):
        resolve(apply_env(load_config(path), ENV), Host(cpus=cores(8)))


# ---- CPUs -----------------------------------------------------------------------------------


def test_cpu_lists_parse_and_print_like_taskset() -> None:
    assert parse_cpus("") == parse_cpus("auto") == "auto"
    assert parse_cpus("none") is None
    assert parse_cpus("0-1") == (0, 1)
    assert parse_cpus("6,0-2") == (0, 1, 2, 6)
    assert format_cpus((0, 1, 2, 6, 8, 9)) == "0-2,6,8-9"
    assert format_cpus(None) == format_cpus(()) == ""
    for bad in ("x", "1-", "3-1", "-1"):
        with pytest.raises(PlacementError):
            parse_cpus(bad)


@pytest.mark.parametrize("n, workers, expected", [
    # 2 cores: tool + front + broker on core 0, chat on core 1
    (2, [chat(), tool()], {"chat-0": (1,), "tool-0": (0,)}),
    (2, [chat()], {"chat-0": (1,)}),
    (2, [tool()], {"tool-0": (1,)}),
    # fewer cores than chat workers + 1: a core each, round robin from the top; tools on core 0
    (2, [chat("a"), chat("b"), tool()], {"a": (1,), "b": (0,), "tool-0": (0,)}),
    # 3 cores: a tool core of its own would leave chat one core; it shares the front's instead
    (3, [chat(), tool()], {"chat-0": (1, 2), "tool-0": (0,)}),
    # enough cores: front core 0, a core per tool worker, chat splits the rest
    (4, [chat(), tool()], {"chat-0": (2, 3), "tool-0": (1,)}),
    (16, [chat("a"), chat("b"), tool("t1"), tool("t2")],
     {"t1": (1,), "t2": (2,), "a": tuple(range(3, 10)), "b": tuple(range(10, 16))}),
    (4, [chat("a"), chat("b"), tool()], {"a": (1, 2), "b": (3,), "tool-0": (0,)}),
    # one core: nothing to split
    (1, [chat(), tool()], {"chat-0": None, "tool-0": None}),
])
def test_cpu_plan_gives_chat_the_larger_share_and_leaves_a_core_to_front_and_broker(n, workers, expected):
    assert plan_cpus(workers, cores(n)) == expected


def test_explicit_cpus_win_none_opts_out_and_gpu_and_vllm_workers_float() -> None:
    workers = [chat(cpus="0-1"), chat("c2", cpus="none"), chat("g", device="cuda:0"),
               chat("v", engine="vllm"), chat("v2", engine="vllm", cpus="5"), tool(), chat("c3")]
    plan = plan_cpus(workers, cores(7))
    assert plan["chat-0"] == (0, 1) and plan["c2"] is None and plan["g"] is None
    assert plan["v"] is None and plan["v2"] == (5,)
    # the plan splits what is left (2-4, 6): front core 2, tool core 3, chat 4 and 6
    assert plan["tool-0"] == (3,) and plan["c3"] == (4, 6)


def test_explicit_cpus_outside_this_host_are_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[workers]]\nname = "c"\nkind = "chat"\nmodel = "m"\ncpus = "0-7"\n')
    with pytest.raises(ConfigError, match="c: cpus '0-7': this host lets us use 0-1"):
        resolve(apply_env(load_config(path), ENV), Host(cpus=cores(2)))
    path.write_text('[[workers]]\nname = "c"\nkind = "chat"\nmodel = "m"\ncpus = "zero"\n')
    with pytest.raises(ConfigError, match="c: cpus 'zero': expected"):
        resolve(apply_env(load_config(path), ENV))
