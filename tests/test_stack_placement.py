"""CPU pinning on a real stack: the supervisor pins each worker to the cores of its plan before
the worker's program starts, and the worker's torch thread pool follows (one thread per core)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil
import pytest

from supervisor.placement import format_cpus, plan_cpus
from tests.stack import Stack, default_config
from workers.config import WorkerConfig

pytestmark = pytest.mark.integration

HOST = tuple(sorted(os.sched_getaffinity(0)))  # the supervisor inherits ours


@pytest.fixture(scope="module")
def stack():
    if len(HOST) < 2:
        pytest.skip("pinning needs at least two cores")
    config = default_config().replace('name = "tool-0"', 'name = "tool-0"\ncpus = "none"')
    s = Stack(config_text=config)
    s.start()
    yield s
    result = s.stop()
    assert result.returncode == 0, result.stderr


def torch_threads(stack: Stack, name: str) -> int:
    text = Path(stack.run_dir, "logs", f"{name}.log").read_text()
    return int(re.findall(r"engine: (?:.*?, )?(\d+) torch threads", text)[-1])


def test_a_chat_worker_is_pinned_to_its_planned_cores_and_sizes_torch_threads_to_them(stack):
    plan = plan_cpus([WorkerConfig(name="chat-0", kind="chat"),
                      WorkerConfig(name="tool-0", kind="tool", cpus="none")], HOST)
    chat_cores = plan["chat-0"]
    assert chat_cores and len(chat_cores) < len(HOST)  # a core is left for the front and broker
    rows = {row["name"]: row for row in stack.status()}
    assert rows["chat-0"]["cpus"] == format_cpus(chat_cores)
    assert tuple(psutil.Process(rows["chat-0"]["pid"]).cpu_affinity()) == chat_cores
    assert torch_threads(stack, "chat-0") == len(chat_cores)
    table = stack.cli("status").stdout
    assert f"cpu[{format_cpus(chat_cores)}]" in table


def test_cpus_none_leaves_a_worker_on_every_core(stack):
    rows = {row["name"]: row for row in stack.status()}
    assert rows["tool-0"]["cpus"] == ""
    assert tuple(psutil.Process(rows["tool-0"]["pid"]).cpu_affinity()) == HOST
    assert torch_threads(stack, "tool-0") == len(HOST)
    for name in ("broker", "wsfront"):  # never pinned: they use whatever core is idle
        assert tuple(psutil.Process(rows[name]["pid"]).cpu_affinity()) == HOST
